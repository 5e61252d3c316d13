# frozen_string_literal: true

require_relative "chaos_helper"

RSpec.describe "chaos: the slot holder SIGKILLed mid-restart (Sidekiq #{Sidekiq::VERSION})" do
  include E2E
  include Chaos

  it "lets the slot expire and the fleet goes on restarting" do
    fleet, holder = fleet_with_quiet_holder(Chaos::SHORT_WAITS)
    sleep 1 # its 0.1 s jobs are done: the KILL loses none
    killed_at = Process.clock_gettime(Process::CLOCK_MONOTONIC)
    Process.kill("KILL", holder.pid)
    restarts = fleet.count(/restarting: quiet/)
    eventually(timeout: 100, what: "a restart after the holder's slot expired") do
      fleet.count(/restarting: quiet/) > restarts
    end
    waited = Process.clock_gettime(Process::CLOCK_MONOTONIC) - killed_at
    expect(waited).to be < 100
    RSpec.configuration.reporter.message(format("chaos figures: next restart %.1fs after the KILL", waited))
    expect(fleet.logs).to include("restart slot(s) are held by restarting processes")
    expect_fleet_sound(fleet, jobs: Chaos::BLOAT_JOBS, killed_by_spec: [holder.pid])
  end
end
