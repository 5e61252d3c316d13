# frozen_string_literal: true

# What the memory history costs Redis per guarded process, side by side with what Sidekiq itself keeps per
# process (its heartbeat), in one run against a real redis-server:
#   - Sidekiq's own keys for one real `sidekiq` process: the heartbeat hash (IDENTITY) and the workers hash,
#   - SidekiqRust::History for one process after a full hour of readings, at check_interval 5 s (the default)
#     and 1 s: the readings list, the process hash, its entry in the index,
#   - one event in the fleet's stream,
#   - the time of one #record (one pipelined round trip of 4 commands, 8 at a refresh) and of one #event.
# Bytes from MEMORY USAGE (SAMPLES 0: every element counted).
ENV["BUNDLE_GEMFILE"] ||= File.expand_path("../Gemfile", __dir__)
require "bundler/setup"
require "json"
require "logger"
require "tmpdir"
$LOAD_PATH.unshift(File.expand_path("../lib", __dir__))
require "sidekiq"
require "sidekiq_rust"
require_relative "../spec/support/redis_server"
require_relative "../spec/support/sidekiq_process"
Redis.silence_deprecations = true if defined?(Redis) && Redis.respond_to?(:silence_deprecations=)

def usage(key)
  Sidekiq.redis { |c| c.call("MEMORY", "USAGE", key, "SAMPLES", "0") }.to_i
end

def settings(interval)
  SidekiqRust::Configuration.new.tap do |c|
    c.max_rss = 1024
    c.hard_max_rss = 2048
    c.check_interval = interval
    c.logger = Logger.new(File::NULL)
  end.resolve
end

def median_us(samples)
  samples.sort[samples.size / 2] * 1e6
end

redis = RedisServer.new.start
Sidekiq.configure_client { |c| c.redis = { path: redis.socket } }
Sidekiq.logger.level = Logger::WARN
dir = Dir.mktmpdir("sidekiq_rust-bench")
begin
  sidekiq = SidekiqProcess.new("bench", redis: redis, dir: dir, guard: { "max_rss" => 8000 }).start
  sleep 6 # one heartbeat with its RSS
  require "sidekiq/api"
  identity = Sidekiq::ProcessSet.new.first["identity"]
  heartbeat = usage(identity) + usage("#{identity}:work")
  sidekiq.stop

  rows = []
  [5, 1].each do |interval|
    history = SidekiqRust::History.new(settings(interval), identity: "bench-#{interval}:1")
    now = Time.now.to_f - 3600
    points = (3600 / interval) + 1
    timings = Array.new(points) do |i|
      started = Process.clock_gettime(Process::CLOCK_MONOTONIC)
      history.record(800 * 1_048_576 + (i * 4096), :serving, now: now + (i * interval))
      Process.clock_gettime(Process::CLOCK_MONOTONIC) - started
    end
    readings = usage("sidekiq_rust:history:bench-#{interval}:1")
    process = usage("sidekiq_rust:process:bench-#{interval}:1")
    rows << [interval, Sidekiq.redis { |c| c.call("LLEN", "sidekiq_rust:history:bench-#{interval}:1") }, readings,
             process, median_us(timings)]
  end
  index = usage("sidekiq_rust:processes") / 2 # two processes in it

  events_before = usage("sidekiq_rust:events")
  history = SidekiqRust::History.new(settings(5), identity: "bench-ev:1")
  event = { event: :restart, reason: "max_rss", identity: "bench-ev:1", hostname: "bench", pid: 1, metric: :rss,
            memory: 1_100_000_000, max_rss: 1_073_741_824, hard_max_rss: 2_147_483_648, busy: 3,
            in_flight: Array.new(3) { |i| { class: "SomeJob#{i}", jid: "0123456789abcdef0123456#{i}", running_s: 12.5 } },
            top_retained: Array.new(5) { |i| { class: "SomeJob#{i}", jobs: 100, retained_per_job: 1_000_000 } },
            top_growth: Array.new(5) { |i| { class: "SomeJob#{i}", jobs: 100, growth_per_job: 10_000_000 } },
            dry_run: false }
  event_times = Array.new(1000) do
    started = Process.clock_gettime(Process::CLOCK_MONOTONIC)
    history.event(:restart, **event)
    Process.clock_gettime(Process::CLOCK_MONOTONIC) - started
  end
  per_event = (usage("sidekiq_rust:events") - events_before) / 1000.0

  puts "Sidekiq #{Sidekiq::VERSION}, redis-server #{Sidekiq.redis { |c| c.call('INFO', 'server') }[/redis_version:(\S+)/, 1]}"
  puts
  puts "| per process | bytes | vs Sidekiq's heartbeat keys |"
  puts "|---|---:|---:|"
  puts "| Sidekiq's heartbeat hash + workers hash (a real process) | #{heartbeat} | 1.00x |"
  rows.each do |interval, count, readings, process, _|
    total = readings + process + index
    puts "| History, an hour at check_interval #{interval} s (#{count} readings + process hash + index entry) | " \
         "#{total} | #{format('%.1fx', total.fdiv(heartbeat))} |"
  end
  puts "| one restart event in the stream (5 top jobs) | #{per_event.round} | - |"
  puts
  rows.each do |interval, _, readings, process, us|
    puts "check_interval #{interval} s: readings list #{readings} B, process hash #{process} B, index entry #{index} B; " \
         "#record median #{us.round} us (one pipeline of 8 commands)"
  end
  puts "#event median #{median_us(event_times).round} us (one pipeline of 4 commands)"
ensure
  FileUtils.rm_rf(dir)
  redis.cleanup
end
