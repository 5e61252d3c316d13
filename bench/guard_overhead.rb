# frozen_string_literal: true

# Per-job cost of the guard's middleware, side by side in one run, on a heap of 250,000 live objects, at a high
# job rate (jobs back to back):
#   - no middleware          (the job alone)
#   - SidekiqRust::Middleware (class, jid, run time and the thread's allocation counter recorded in Rust; an
#                             RSS read only when the last one is 20 ms old; no GC)
#   - the previous approach  (one RSS read, a pread of /proc/self/statm, after every job)
#   - a hand-written killer  (GC.start + an RSS read from /proc/PID/status after every job, the common pattern)
#   - admission's native calls per job (the fetch's Native::Guard#admit of the payload, then job_started and
#     job_finished), beside the same job_started and job_finished on a guard without admission
# Targets: the guard adds <= 0.5 us per job, less than the previous approach, and is >= 100x cheaper than
# GC-per-job; admission adds <= 1 us per job.
$LOAD_PATH.unshift(File.expand_path("../lib", __dir__))
require "sidekiq_rust"
require "json"
require "logger"
require "sidekiq"

LIVE = Array.new(250_000) { |i| "live object #{i}" } # what a Rails app keeps on its heap

# The pattern of the hand-written "process killer" middlewares.
class GcEveryJobKiller
  def call(_worker, _job, _queue)
    yield
  ensure
    GC.start
    File.foreach("/proc/#{Process.pid}/status") { |l| break l.split[1].to_i * 1024 if l.start_with?("VmRSS:") }
  end
end

# The previous ProcessKiller's cost floor: one pread of /proc/self/statm per job (its per-class sums in Rust
# cost a few tens of nanoseconds more).
class ReadPerJobKiller
  def call(_worker, _job, _queue)
    yield
  ensure
    SidekiqRust::Native.rss_self
  end
end

SidekiqRust.configure do |c|
  c.max_rss = 100_000 # never reached: the benchmark measures the check, not a restart
  c.logger = Logger.new(File::NULL)
end
SidekiqRust.start_guard
SidekiqRust.guard.stop_monitor

JOB = { "class" => "HardJob", "jid" => "b1946ac92492d2347c6235b4", "args" => [1], "queue" => "default" }.freeze
WORKER = Object.new

# Two native guards as the guard builds them (brake on, 5 threads), admission on and off.
def native_guard(admission)
  config = SidekiqRust::Configuration.new
  config.max_rss = 100_000
  config.admission = admission
  SidekiqRust::Native::Guard.new(SidekiqRust::Guard.native_settings(config.resolve(cgroup: nil), kill_after: 40.0,
                                                                                                 concurrency: 5))
end
ADMITTING = native_guard(true)
COUNTING = native_guard(false)
PAYLOAD = JSON.generate(JOB)

def per_job_ns(iterations)
  start = Process.clock_gettime(Process::CLOCK_MONOTONIC, :nanosecond)
  iterations.times { yield }
  (Process.clock_gettime(Process::CLOCK_MONOTONIC, :nanosecond) - start).fdiv(iterations)
end

best = Hash.new(Float::INFINITY)
5.times do
  best[:none] = [best[:none], per_job_ns(200_000) { JOB["args"].first + 1 }].min
  best[:guard] = [best[:guard], per_job_ns(200_000) do
    SidekiqRust::Middleware.new.call(WORKER, JOB, "default") { JOB["args"].first + 1 }
  end].min
  best[:read] = [best[:read], per_job_ns(200_000) do
    ReadPerJobKiller.new.call(WORKER, JOB, "default") { JOB["args"].first + 1 }
  end].min
  best[:counted] = [best[:counted], per_job_ns(200_000) do
    COUNTING.job_finished(COUNTING.job_started("HardJob", JOB["jid"]))
  end].min
  best[:admitted] = [best[:admitted], per_job_ns(200_000) do
    ADMITTING.admit(PAYLOAD)
    ADMITTING.job_finished(ADMITTING.job_started("HardJob", JOB["jid"]))
  end].min
  best[:gc] = [best[:gc], per_job_ns(20) do
    GcEveryJobKiller.new.call(WORKER, JOB, "default") { JOB["args"].first + 1 }
  end].min
end

guard_cost = best[:guard] - best[:none]
read_cost = best[:read] - best[:none]
gc_cost = best[:gc] - best[:none]
puts "guard_overhead: Ruby #{RUBY_VERSION}, allocator #{SidekiqRust::Allocator.name}, #{LIVE.size} live strings, " \
     "best of 5 rounds"
puts "| middleware | ns per job | added by the middleware |"
puts "|---|---:|---:|"
puts format("| none | %.0f | - |", best[:none])
puts format("| SidekiqRust::Middleware | %.0f | %.0f ns |", best[:guard], guard_cost)
puts format("| one RSS read per job (the previous ProcessKiller) | %.0f | %.0f ns |", best[:read], read_cost)
puts format("| GC.start + RSS read per job | %.0f | %.0f ns |", best[:gc], gc_cost)
puts format("| native calls per job, admission off | %.0f | - |", best[:counted])
puts format("| native calls per job, admission on (admit + the same) | %.0f | %.0f ns |", best[:admitted],
            best[:admitted] - best[:counted])
puts
puts format("guard cost per job: %.2f us (target <= 0.5 us)", guard_cost / 1000.0)
puts format("previous approach / guard: %.1fx (target > 1)", read_cost / guard_cost)
puts format("GC-per-job / guard: %.0fx cheaper (target >= 100x)", gc_cost / guard_cost)
puts format("admission per job: %.2f us (target <= 1 us)", (best[:admitted] - best[:counted]) / 1000.0)
puts "jobs recorded: #{SidekiqRust.report(limit: 1).first&.fetch(:jobs)}"
