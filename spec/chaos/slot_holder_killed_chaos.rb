# frozen_string_literal: true

require_relative "chaos_helper"

RSpec.describe "chaos: the slot holder SIGKILLed mid-restart (Sidekiq #{Sidekiq::VERSION})" do
  include E2E
  include Chaos

  it "lets the slot expire and the fleet goes on restarting" do
    # Slot TTL = shutdown_wait + kill_after + 60 s margin = 62 s.
    guard = Chaos::GUARD.merge("shutdown_wait" => 1, "kill_after" => 1)
    fleet = supervise(3, guard)
    wait_for_fleet(3)
    push_bloat
    holder = eventually(timeout: 60, what: "a process quiet for a restart") do
      fleet.processes.find { |p| p.log.include?("quiet took effect") }
    end
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
