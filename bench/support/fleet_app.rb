# frozen_string_literal: true

# The Sidekiq application of bench/fleet_compare.rb: three job classes (a bloating one, a working-set-heavy one
# and a light one) and the strategy the process runs under, from the environment:
#   FLEET_GUARD   JSON of sidekiq_rust settings (max_rss, hard_max_rss, grace_time, brake, admission); absent: no
#                 guard
#   FLEET_KILLER  a limit in MB: the hand-written killer (bench/support/rss_killer.rb); absent: none
# Every job that finishes is recorded in Redis by FleetRecorder (jid, enqueue-to-finish latency, finish time).
require "json"
require "sidekiq"
Redis.silence_deprecations = true if defined?(Redis) && Redis.respond_to?(:silence_deprecations=)

redis = { path: ENV.fetch("REDIS_SOCKET") }
Sidekiq.configure_server { |config| config.redis = redis }
Sidekiq.configure_client { |config| config.redis = redis }

# Records each job that finished: its jid in a set (a job run twice, requeued after it finished, counts once,
# and once in fleet:twice), and "finish_time latency" in a list. Innermost in the chain: the finish time is the
# job's own end.
class FleetRecorder
  def call(_worker, job, _queue)
    yield
    finished = Time.now.to_f
    enqueued = job.fetch("enqueued_at", finished).to_f
    enqueued /= 1000.0 if enqueued > 100_000_000_000 # Sidekiq 8 writes milliseconds
    Sidekiq.redis do |conn|
      conn.call("INCR", "fleet:twice") if conn.call("SADD", "fleet:done", job.fetch("jid")).to_i.zero?
      conn.call("RPUSH", "fleet:finished", format("%<f>.3f %<l>.3f", f: finished, l: finished - enqueued))
    end
  end
end

if ENV["FLEET_GUARD"]
  $LOAD_PATH.unshift(File.expand_path("../../lib", __dir__))
  require "sidekiq_rust"
  guard = JSON.parse(ENV.fetch("FLEET_GUARD"))
  SidekiqRust.configure do |c|
    c.max_rss = guard.fetch("max_rss")
    c.hard_max_rss = guard.fetch("hard_max_rss")
    c.grace_time = guard.fetch("grace_time")
    c.brake = guard.fetch("brake")
    c.admission = guard.fetch("admission", false)
  end
end

if ENV["FLEET_KILLER"]
  require_relative "rss_killer"
  Sidekiq.configure_server do |config|
    config.server_middleware { |chain| chain.add(RssKiller, Integer(ENV.fetch("FLEET_KILLER"))) }
  end
end

Sidekiq.configure_server do |config|
  config.server_middleware { |chain| chain.add(FleetRecorder) }
  config.on(:startup) do
    allocator = defined?(SidekiqRust::Allocator) ? SidekiqRust::Allocator.name : "(no guard loaded)"
    Sidekiq.logger.info("fleet: strategy #{ENV.fetch('FLEET_STRATEGY', '?')}, allocator #{allocator}")
  end
end

FLEET_RETAINED = [] # rubocop:disable Style/MutableConstant

# Keeps `mb` MiB for the life of the process (a cache that only grows, a leak), then works a little.
class FleetBloatingJob
  include Sidekiq::Worker

  def perform(mb, seconds)
    FLEET_RETAINED << ("b" * ((mb * 1024 * 1024) - 1))
    sleep seconds
  end
end

# Holds `mb` MiB while it runs (a report building its rows, an import) and keeps none of it.
class FleetWorkingSetJob
  include Sidekiq::Worker

  def perform(mb, seconds)
    rows = Array.new(mb) { "w" * ((1024 * 1024) - 1) }
    sleep seconds
    # Ruby's GC scans thread stacks conservatively: emptied, a stale reference to the Array keeps nothing.
    rows.clear
  end
end

# A short job that needs little memory (a mail, a webhook).
class FleetLightJob
  include Sidekiq::Worker

  def perform(seconds)
    sleep seconds
  end
end
