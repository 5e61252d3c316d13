# frozen_string_literal: true

# One run of the real-cgroup scenario (spec/cgroup_oom_e2e_spec.rb, bench/cgroup_oom.rb): jobs that each keep
# JOB_MB for the life of their process, as many as the limit holds (with the processes' own memory on top, more),
# pushed to a fleet of `size` supervised `sidekiq` processes inside a RealCgroup of `limit` bytes. When the queue is empty and nothing more completes, it counts:
# - lost: pushed, never completed, and neither queued, retrying, scheduled nor dead (with basic fetch, the jobs
#   in flight in a SIGKILLed process);
# - oom_kills: the cgroup's OOM-kill counter; killed: processes that ended by a signal; restarts: processes
#   started after the first `size`.
class CgroupScenario
  # The guard of the scenarios: max_rss "80%" of the cgroup's limit compared with the cgroup's own usage, a hard
  # limit at 90%, no grace, no reclaim (the jobs keep what they allocate), quick checks.
  GUARD = { "max_rss" => "80%", "hard_max_rss" => "90%", "metric" => "cgroup", "grace_time" => 0, "reclaim" => false,
            "shutdown_wait" => 10, "check_interval" => 0.25, "quarantine_after" => 0 }.freeze
  # Without the guard's restarts: it only watches (and reports the OOM kill).
  UNGUARDED = GUARD.merge("dry_run" => true).freeze
  # One process: it is its fleet's only one, and restarts for the soft limit too.
  SOLE = GUARD.merge("require_other_process" => false).freeze
  # A fleet of two in one cgroup: 80% of the limit between them, each guard comparing its own process (with metric
  # :cgroup both would see the same sum: whichever wins the restart slot restarts, and over the hard limit both
  # stop at once), so that the one that grew restarts while the other serves; and a restart slot per process of
  # the cgroup: a hard-limit restart waits for a slot too, and while the first process's restart holds the only
  # one the second grows on, into the OOM killer (seen with one slot on a loaded machine).
  FLEET = GUARD.merge("max_rss" => "40%", "hard_max_rss" => "45%", "metric" => "rss",
                      "max_concurrent_restarts" => 2).freeze
  JOB_MB = 5
  JOB_SECONDS = 0.5
  CONCURRENCY = 3
  # Nothing completed for this long after the queue emptied: every job still in flight is lost.
  SETTLE = 4

  attr_reader :cgroup, :supervisor

  def initialize(spec, size:, limit:, guard:)
    @spec = spec
    @size = size
    @guard = guard
    @cgroup = RealCgroup.new(limit: limit)
    @jobs = limit / (JOB_MB * SidekiqRust::Units::MB)
    @started = nil
  end

  def run
    @spec.push("LeakJob", JOB_MB, JOB_SECONDS, count: @jobs)
    cgroup = @cgroup
    spec = @spec
    @supervisor = @spec.supervise_with(@size) do |name|
      SidekiqProcess.new(name, redis: spec.redis_server, dir: spec.e2e_dir, guard: @guard,
                               concurrency: CONCURRENCY, prefix: cgroup.wrapper)
    end
    @started = monotonic
    @spec.eventually(timeout: 150, interval: 0.5, what: "the queue to empty") { queue_size.zero? }
    settle
    @seconds = monotonic - @started
    @supervisor.stop
    self
  end

  def processes
    @supervisor.processes
  end

  def killed
    processes.select { |p| p.status&.signaled? }
  end

  def exited
    processes.select(&:status)
  end

  def restarts
    processes.size - @size
  end

  def oom_kills
    @cgroup.oom_kills
  end

  def limit_hits
    @cgroup.limit_hits
  end

  def done
    @spec.done_count
  end

  def lost
    @jobs - done - queue_size - %w[retry schedule dead].sum { |set| @spec.redis_call("ZCARD", set).to_i }
  end

  def logs
    processes.map(&:log).join
  end

  # One line of figures, for the README and the benchmark.
  def figures
    { jobs: @jobs, done: done, lost: lost, oom_kills: oom_kills, killed: killed.size, restarts: restarts,
      graceful: exited.count { |p| p.status.exitstatus&.zero? }, limit_hits: limit_hits,
      seconds: @seconds&.round(1) }
  end

  def report(title)
    warn format("cgroup scenario %-24s %s", "#{title}:", figures.map { |k, v| "#{k}=#{v}" }.join(" "))
  end

  private

  def queue_size
    @spec.redis_call("LLEN", "queue:default").to_i
  end

  def settle
    last = done
    quiet_since = monotonic
    while monotonic - quiet_since < SETTLE
      sleep 0.25
      now = done
      if now != last
        last = now
        quiet_since = monotonic
      end
    end
  end

  def monotonic
    Process.clock_gettime(Process::CLOCK_MONOTONIC)
  end
end
