# frozen_string_literal: true

require_relative "chaos_helper"

RSpec.describe "chaos: the slot holder frozen (SIGSTOP) past the slot's TTL, then continued (Sidekiq " \
               "#{Sidekiq::VERSION})" do
  include E2E
  include Chaos

  it "lets the fleet restart once the slot expired; the frozen process finishes its stop when continued" do
    # Slot TTL = shutdown_wait + kill_after + 60 s margin = 62 s.
    guard = Chaos::GUARD.merge("shutdown_wait" => 1, "kill_after" => 1)
    fleet = supervise(3, guard)
    wait_for_fleet(3)
    push_bloat
    holder = eventually(timeout: 60, what: "a process quiet for a restart") do
      fleet.processes.find { |p| p.log.include?("quiet took effect") }
    end
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
