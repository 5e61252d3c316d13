# frozen_string_literal: true

# The Sidekiq application of the end-to-end specs: jobs that grow, hang or make garbage, and the guard
# configured from SIDEKIQ_RUST_CONFIG (JSON), as a Rails initializer would.
require "json"
require "sidekiq"
Redis.silence_deprecations = true if defined?(Redis) && Redis.respond_to?(:silence_deprecations=)
$LOAD_PATH.unshift(File.expand_path("../../lib", __dir__))
require "sidekiq_rust"
require_relative "../../bench/support/fragmentation_workload"

redis = { path: ENV.fetch("REDIS_SOCKET") }
Sidekiq.configure_server { |config| config.redis = redis }
Sidekiq.configure_client { |config| config.redis = redis }

# E2E_CAPSULE=N (Sidekiq 7+): a second capsule "solo" of N threads on queue "solo", set up the way an earlier
# initializer (config/initializers/sidekiq.rb) would, its middleware chain copied before sidekiq_rust registers.
if ENV["E2E_CAPSULE"]
  Sidekiq.configure_server do |config|
    config.capsule("solo") do |capsule|
      capsule.concurrency = Integer(ENV["E2E_CAPSULE"])
      capsule.queues = %w[solo]
      capsule.server_middleware # copies the chain now, as `capsule.server_middleware { |chain| ... }` does
    end
  end
end

guard = JSON.parse(ENV.fetch("SIDEKIQ_RUST_CONFIG", "{}"))
events = ENV.fetch("E2E_EVENTS", nil)
2.times do # configured twice on purpose: it must register once
  SidekiqRust.configure do |c|
    c.max_rss = guard.fetch("max_rss")
    c.hard_max_rss = guard["hard_max_rss"]
    c.grace_time = guard.fetch("grace_time", 0)
    c.check_interval = guard.fetch("check_interval", 0.5)
    c.reclaim = guard.fetch("reclaim", false)
    c.shutdown_wait = guard.fetch("shutdown_wait", 10)
    c.kill_after = guard["kill_after"]
    c.max_concurrent_restarts = guard.fetch("max_concurrent_restarts", 1)
    c.require_other_process = guard.fetch("require_other_process", true)
    c.dry_run = guard.fetch("dry_run", false)
    c.metric = guard.fetch("metric", "rss").to_sym
    c.doctor_on_boot = guard.fetch("doctor_on_boot", false)
    c.measure_interval = guard.fetch("measure_interval", 60)
    c.loop_window = guard.fetch("loop_window", 0) # these processes are over their limits right after boot
    c.quarantine_after = guard.fetch("quarantine_after", 2)
    c.brake = guard.fetch("brake", true)
    c.admission = guard.fetch("admission", false)
    c.brake_at = guard.fetch("brake_at", 0.9)
    c.resume_at = guard.fetch("resume_at", 0.8)
    c.on_restart = ->(event) { File.write(events, "#{JSON.generate(event)}\n", mode: "a") } if events
  end
end

Sidekiq.configure_server do |config|
  config.on(:startup) do
    killers = config.server_middleware.entries.count { |e| e.klass == SidekiqRust::Middleware }
    Sidekiq.logger.info("e2e: Middleware registered #{killers} time(s)")
    chains = SidekiqRust::SidekiqAdapter.server_chains(config)
    with_killer = chains.count { |chain| chain.exists?(SidekiqRust::Middleware) }
    Sidekiq.logger.info("e2e: Middleware in #{with_killer} of #{chains.size} chain(s), " \
                        "concurrency #{SidekiqRust::SidekiqAdapter.concurrency(config)}")
  end
end

# Wall-clock moments a spec compares (E2E_TIMES: a file of "what seconds" lines).
def e2e_time(what)
  path = ENV.fetch("E2E_TIMES", nil)
  File.write(path, format("%<what>s %<t>.3f\n", what: what, t: Time.now.to_f), mode: "a") if path
end

# A Sidekiq whose main thread is busy: it handles TSTP E2E_QUIET_DELAY seconds late, or never ("never").
# Sidekiq handles the signals it gets one after the other in its main thread, from SIGNAL_HANDLERS.
if ENV["E2E_QUIET_DELAY"]
  handle_tstp = Sidekiq::CLI::SIGNAL_HANDLERS.fetch("TSTP")
  Sidekiq::CLI::SIGNAL_HANDLERS["TSTP"] = lambda do |cli|
    next Sidekiq.logger.info("e2e: TSTP ignored") if ENV["E2E_QUIET_DELAY"] == "never"

    sleep Float(ENV["E2E_QUIET_DELAY"])
    handle_tstp.call(cli)
  end
end
if ENV["E2E_TIMES"]
  handle_term = Sidekiq::CLI::SIGNAL_HANDLERS.fetch("TERM")
  Sidekiq::CLI::SIGNAL_HANDLERS["TERM"] = lambda do |cli|
    e2e_time("term")
    handle_term.call(cli)
  end
  Sidekiq.configure_server { |config| config.on(:quiet) { e2e_time("quiet") } }
end

RETAINED = [] # rubocop:disable Style/MutableConstant

def e2e_done(tag)
  Sidekiq.redis do |conn|
    conn.call("INCR", "e2e:done")
    conn.call("RPUSH", "e2e:done_by", "#{ENV.fetch('E2E_NAME')}:#{tag}")
  end
end

# Keeps `mb` megabytes for the life of the process.
class BloatJob
  include Sidekiq::Worker

  def perform(mb, seconds = 0)
    RETAINED << ("b" * (mb * 1024 * 1024))
    sleep seconds
    e2e_done("bloat")
  end
end

class SleepJob
  include Sidekiq::Worker

  def perform(seconds, marker = nil)
    Sidekiq.logger.info("e2e: SleepJob started")
    sleep seconds
    File.write(marker, "done") if marker
    e2e_done("sleep") unless marker
  end
end

# Grows by `step_mb` every 0.1 s up to `total_mb`, keeps it, then sleeps: memory that grows while quiet.
class GrowJob
  include Sidekiq::Worker

  def perform(total_mb, step_mb, seconds)
    Sidekiq.logger.info("e2e: GrowJob started")
    kept = []
    (total_mb / step_mb).times do
      kept << ("g" * (step_mb * 1024 * 1024))
      sleep 0.1
    end
    Sidekiq.logger.info("e2e: GrowJob grown")
    sleep seconds
    e2e_done("grow")
  end
end

# Keeps `mb` for the life of the process and leaves garbage that only a reclaim gives back.
class BloatGarbageJob
  include Sidekiq::Worker

  def perform(mb, per_thread)
    RETAINED << ("b" * (mb * 1024 * 1024))
    GC.disable
    FragmentationWorkload.run(threads: 4, per_thread: per_thread).size
    e2e_done("bloat_garbage")
  ensure
    GC.enable
  end
end

# Ignores every interrupt (Sidekiq's shutdown raise included): only KILL ends the process.
class HangJob
  include Sidekiq::Worker

  def perform
    Sidekiq.logger.info("e2e: HangJob started")
    Thread.handle_interrupt(Object => :never) { sleep 600 }
  end
end

# Makes a few hundred MB of fragmented garbage and keeps none of it. The GC is off while it runs, so the
# garbage is all there when the job ends, whatever the allocator (a jemalloc with a background thread would
# otherwise give much of it back by itself): only the guard's reclaim (GC + purge) can free it.
class GarbageJob
  include Sidekiq::Worker

  def perform(per_thread)
    GC.disable
    FragmentationWorkload.run(threads: 4, per_thread: per_thread).size
    e2e_done("garbage")
  ensure
    GC.enable
  end
end

# Keeps exactly `mb` MiB per job: one String whose buffer (with its terminating byte) is `mb` MiB, a size that
# every allocator hands out as it is (jemalloc's size classes hold it without rounding up).
class LeakJob
  include Sidekiq::Worker

  def perform(mb, seconds)
    RETAINED << ("l" * ((mb * 1024 * 1024) - 1))
    sleep seconds
    e2e_done("leak")
  end
end

# The three classes of the "which job grew the memory" workload (issue 19): each sleeps `seconds`; the leaker
# keeps `count` strings of 1 MiB a job, the churner builds `count` short strings and drops them, the ping does
# nothing else.
class StringLeakJob
  include Sidekiq::Worker

  def perform(count, seconds)
    count.times { RETAINED << ("k" * ((1024 * 1024) - 1)) }
    sleep seconds
    e2e_done("string_leak")
  end
end

class StringChurnJob
  include Sidekiq::Worker

  def perform(count, seconds)
    strings = Array.new(count) { |i| "s#{i}" }
    strings.clear
    sleep seconds
    e2e_done("string_churn")
  end
end

# The churner as an application writes it: the short strings stay referenced while the job sleeps (held, a working
# set of Ruby objects and their Array's buffer), garbage once it ends.
class StringHoldJob
  include Sidekiq::Worker

  def perform(count, seconds)
    strings = Array.new(count) { |i| "s#{i}" }
    sleep seconds
    e2e_done("string_hold#{strings.size}")
  end
end

class PingJob
  include Sidekiq::Worker

  def perform(seconds)
    sleep seconds
    e2e_done("ping")
  end
end

# Holds `mb` MiB while it runs (its working set) and keeps none of it.
class ChurnJob
  include Sidekiq::Worker

  def perform(mb, seconds)
    junk = Array.new(mb) { "c" * ((1024 * 1024) - 1) }
    sleep seconds
    e2e_done("churn#{junk.size}")
    # Ruby's GC scans thread stacks conservatively: a stale reference to the Array there would keep it all;
    # emptied, it keeps none of the strings.
    junk.clear
  end
end

# Holds `mb` megabytes for `seconds` (a working set, given back at the end), counting how many of its jobs run
# at once in this process (the most: the sorted set e2e:at_once, one member a process) and each jid done.
class WorkingSetJob
  include Sidekiq::Worker

  def perform(mb, seconds)
    me = ENV.fetch("E2E_NAME")
    Sidekiq.redis do |conn|
      running = conn.call("INCR", "e2e:running:#{me}")
      conn.call("ZADD", "e2e:at_once", "GT", running, me)
    end
    junk = Array.new(mb) { "w" * ((1024 * 1024) - 1) }
    sleep seconds
    junk.clear # see ChurnJob
    Sidekiq.redis do |conn|
      conn.call("DECR", "e2e:running:#{me}")
      conn.call("RPUSH", "e2e:jids", jid)
    end
    e2e_done("working_set#{mb}")
  end
end

# A WorkingSetJob that declares its memory (sidekiq_options memory:).
class DeclaredJob < WorkingSetJob
  sidekiq_options memory: "140MB"
end

class LightJob
  include Sidekiq::Worker

  def perform(seconds)
    sleep seconds
    e2e_done("light")
  end
end
