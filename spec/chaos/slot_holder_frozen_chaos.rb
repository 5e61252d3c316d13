# frozen_string_literal: true

require_relative "chaos_helper"

RSpec.describe "chaos: the slot holder frozen (SIGSTOP) past the slot's TTL, then continued (Sidekiq " \
               "#{Sidekiq::VERSION})" do
  include E2E
  include Chaos

  it "lets the fleet restart once the slot expired; the frozen process finishes its stop when continued" do
    fleet, holder = fleet_with_quiet_holder(Chaos::SHORT_WAITS)
    Process.kill("STOP", holder.pid)
    sleep 65
    restarts_while_frozen = fleet.count(/restarting: quiet/) - 1
    Process.kill("CONT", holder.pid)
    # The supervisor reaps it (SidekiqProcess#status): only read here.
    eventually(timeout: 60, what: "the continued process to finish its stop") { holder.status }
    expect(holder.status.exitstatus).to eq(0)
    expect(restarts_while_frozen).to be >= 1
    expect_fleet_sound(fleet, jobs: Chaos::BLOAT_JOBS)
    RSpec.configuration.reporter.message("chaos figures: #{restarts_while_frozen} restart(s) while the holder was " \
                                         "frozen")
  end
end
