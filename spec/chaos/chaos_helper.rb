# frozen_string_literal: true

require "spec_helper"
require "sidekiq/api"

# The chaos suite (`rake spec:chaos`, every matrix entry; not in the default task): real redis-server, real
# supervised `sidekiq` processes (spec/support/supervisor.rb) and a bloating workload, with one fault each.
# After each: every job done (or deliberately quarantined), never 0 serving processes at any 0.2 s sample, no
# SIGKILL (unless the scenario sends it itself).
module Chaos
  # Processes that restart often: 120 MB soft limit, no grace, no reclaim, short waits. No brake: the scenarios
  # hold the soft limit's rule (a restart needs a slot and another serving process) with no exception, where a
  # process its brake holds paused with retained memory restarts though no other serves (it serves nothing
  # itself): with every process of this workload paused, that restart left no process serving for a boot
  # (Sidekiq 7.3, the frozen holder's scenario). The brake's restarts have their own specs.
  GUARD = { "max_rss" => 120, "grace_time" => 0, "reclaim" => false, "brake" => false, "shutdown_wait" => 5,
            "kill_after" => 10, "check_interval" => 0.5 }.freeze
  # Each BloatJob keeps 5 MB for the life of its process: a process passes 120 MB after about 14 of them.
  BLOAT_JOBS = 60

  # Stop waits of 1 s: the slot TTL (shutdown_wait + kill_after + 60 s margin) is 62 s.
  SHORT_WAITS = GUARD.merge("shutdown_wait" => 1, "kill_after" => 1).freeze

  def push_bloat(count = BLOAT_JOBS)
    push("BloatJob", 5, 0.1, count: count)
  end

  # Three supervised processes with `guard`, the bloat pushed: returns [fleet, the first process whose quiet for
  # a restart took effect].
  def fleet_with_quiet_holder(guard)
    fleet = supervise(3, guard)
    wait_for_fleet(3)
    push_bloat
    holder = eventually(timeout: 60, what: "a process quiet for a restart") do
      fleet.processes.find { |p| p.log.include?("quiet took effect") }
    end
    [fleet, holder]
  end

  # Every job done, nothing failed or dead, the fleet never empty, no KILL but those in `killed_by_spec`.
  def expect_fleet_sound(fleet, jobs:, killed_by_spec: [])
    eventually(timeout: 120, what: "all #{jobs} jobs done") { done_count >= jobs }
    fleet.stop
    expect(done_count).to eq(jobs)
    expect(redis_call("LLEN", "queue:default")).to eq(0)
    expect(Sidekiq::RetrySet.new.size).to eq(0)
    expect(Sidekiq::DeadSet.new.size).to eq(0)
    expect(fleet.min_serving).to be >= 1, fleet.empty_report
    expect(fleet.killed.map(&:pid) - killed_by_spec).to be_empty
    expect(fleet.logs).not_to include("Job raised exception")
    report_figures(fleet, jobs)
  end

  # The figures the README's "What it promises" quotes, printed with the run.
  def report_figures(fleet, jobs)
    RSpec.configuration.reporter.message(
      "chaos figures (#{RSpec.current_example.description}): jobs=#{done_count}/#{jobs} " \
      "memory_restarts=#{fleet.count(/restarting: quiet/)} min_serving=#{fleet.min_serving} " \
      "max_restarting=#{fleet.max_restarting} " \
      "samples=#{fleet.samples.size} processes=#{fleet.processes.size}"
    )
  end
end
