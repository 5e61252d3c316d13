# frozen_string_literal: true

require_relative "chaos_helper"

RSpec.describe "chaos: Redis slow (CLIENT PAUSE holds every command) (Sidekiq #{Sidekiq::VERSION})" do
  include E2E
  include Chaos

  # Redis 7 refuses DEBUG SLEEP unless enable-debug-command is set; CLIENT PAUSE holds every client's commands
  # the same way, without blocking the one that sent it.
  PAUSE_S = 6

  it "never holds a job up on Redis: a job that does not use Redis ends while Redis is paused" do
    fleet = supervise(2, Chaos::GUARD.merge("max_rss" => 8000, "check_interval" => 0.2))
    wait_for_fleet(2)
    marker = File.join(@e2e_dir, "marker")
    push("SleepJob", 1, marker)
    runner = eventually(timeout: 30, what: "the job started") do
      fleet.processes.find { |p| p.log.include?("e2e: SleepJob started") }
    end
    redis_server.command("CLIENT", "PAUSE", (PAUSE_S * 1000).to_s, "ALL")
    eventually(timeout: 30, what: "Sidekiq's done line of the job") { runner.log.match?(/class=SleepJob\b.*\bdone\b/) }
    started = Process.clock_gettime(Process::CLOCK_MONOTONIC)
    redis_server.command("PING") # a raw socket without a read timeout: returns when the pause ends
    still_paused_for = Process.clock_gettime(Process::CLOCK_MONOTONIC) - started
    # The job (the middleware's before and after included) ended while Redis still held every command.
    expect(still_paused_for).to be > 1
    sleep 2 # the monitors' writes that waited for Redis go through
    fleet.stop
    expect(File.read(marker)).to eq("done")
    expect(fleet.min_serving).to be >= 1, fleet.empty_report
    expect(fleet.killed).to be_empty
    expect(fleet.logs).not_to include("Job raised exception")
    RSpec.configuration.reporter.message(format("chaos figures: job done %.1fs before a %ds pause of Redis ended",
                                                still_paused_for, PAUSE_S))
  end
end
