# frozen_string_literal: true

require_relative "chaos_helper"

RSpec.describe "chaos: a burst, 20 processes over the limit at once (Sidekiq #{Sidekiq::VERSION})" do
  include E2E
  include Chaos

  let(:processes) { 20 }
  let(:slots) { 2 }
  let(:guard) { Chaos::GUARD.merge("max_concurrent_restarts" => slots) }

  # The bound, from the settings alone: the processes restart `slots` at a time, in ceil(processes / slots)
  # turns. A turn is over when its process exits: TERM at the latest `shutdown_wait` after quiet took effect,
  # KILL at the latest `kill_after` after TERM; a process denied a slot asks again after check_interval, seen at
  # its monitor's next check (another check_interval).
  def bound
    turn = guard.fetch("shutdown_wait") + guard.fetch("kill_after") + (2 * guard.fetch("check_interval"))
    (processes.to_f / slots).ceil * turn
  end

  it "restarts at most max_concurrent_restarts at once and every process within the computed bound" do
    fleet = supervise(processes, guard, concurrency: 1)
    wait_for_fleet(processes)
    first = fleet.processes.dup
    # One 100 MB job each (a blocked fetch takes one job; each runs 3 s): all 20 over 120 MB within a moment.
    pushed_at = Process.clock_gettime(Process::CLOCK_MONOTONIC)
    push("BloatJob", 100, 3, count: processes)
    eventually(timeout: 60, what: "the #{processes} jobs done") { done_count == processes }
    ran = redis_call("LRANGE", "e2e:done_by", 0, -1).map { |entry| entry.split(":").first }
    expect(ran).to match_array(first.map(&:name)) # one job each: every process over the limit

    eventually(timeout: bound + 60, what: "every first-generation process restarted") do
      first.all? { |p| fleet.exited_at(p) }
    end
    last_exit = first.map { |p| fleet.exited_at(p) }.max
    sleep 5 # the replacements took no job: no further restart
    fleet.stop

    took = last_exit - pushed_at
    expect(took).to be < bound
    expect(fleet.max_restarting).to be <= slots
    expect(first.map { |p| p.log.scan("restarting: quiet").size }).to all(eq(1))
    expect(first.map { |p| p.status.exitstatus }).to all(eq(0))
    expect(first.map { |p| p.log.scan("restart slot given back").size }).to all(eq(1))
    expect(fleet.count(/restarting: quiet/)).to eq(processes)
    expect(fleet.logs).to include("restart slot(s) are held by restarting processes")
    expect(done_count).to eq(processes)
    expect(redis_call("LLEN", "queue:default")).to eq(0)
    expect(Sidekiq::RetrySet.new.size + Sidekiq::DeadSet.new.size).to eq(0)
    expect(fleet.killed).to be_empty
    expect(fleet.min_serving).to be >= 1, fleet.empty_report
    RSpec.configuration.reporter.message(
      format("chaos figures: %<n>d processes, %<m>d slots: all restarted %<took>.1fs after the push " \
             "(bound %<bound>.0fs), at most %<most>d restarting at once, min serving %<min>d",
             n: processes, m: slots, took: took, bound: bound, most: fleet.max_restarting, min: fleet.min_serving)
    )
  end
end
