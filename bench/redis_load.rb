# frozen_string_literal: true

# What a fleet's guards cost Redis, side by side with Sidekiq's own heartbeat (issue 27, items 5 and 6): 50 real
# `sidekiq` processes at concurrency 1 on 5 simulated hosts (DYNO) and one redis-server, first without the guard,
# then guarded at check_interval 5. Prints, by Redis's own counters (INFO commandstats): commands per check and
# per second per process, ours and the heartbeat's; the bytes a process's keys hold after an hour (MEMORY USAGE,
# the readings list at its cap); `sidekiq_rust metrics` (the CLI, a new Ruby) and the Memory tab's server-side
# render (the Rack app, no network) at 50 processes. docs/redis.md has a run's figures. About 5 minutes.
#
#   bundle exec ruby bench/redis_load.rb
#   bundle exec ruby bench/redis_load.rb --processes 10 --window 30
$LOAD_PATH.unshift(File.expand_path("../lib", __dir__))
require "optparse"
require "tmpdir"
require "sidekiq"
require "sidekiq_rust"
require "sidekiq_rust/metrics"
require_relative "../spec/support/redis_server"
require_relative "support/redis_load"
Redis.silence_deprecations = true if defined?(Redis) && Redis.respond_to?(:silence_deprecations=)

options = { processes: 50, hosts: 5, interval: 5, window: 60 }
OptionParser.new do |o|
  o.banner = "usage: bench/redis_load.rb [options]"
  o.on("--processes N", Integer, "sidekiq processes (default 50)") { |v| options[:processes] = v }
  o.on("--hosts N", Integer, "simulated hostnames (default 5)") { |v| options[:hosts] = v }
  o.on("--interval S", Integer, "check_interval of the guarded processes (default 5)") { |v| options[:interval] = v }
  o.on("--window S", Integer, "seconds each fleet is measured (default 60)") { |v| options[:window] = v }
end.parse!

redis = RedisServer.new.start
Sidekiq.configure_client { |config| config.redis = { path: redis.socket } }
Sidekiq.logger.level = Logger::WARN
r = Dir.mktmpdir("sidekiq_rust-redis_load") { |dir| RedisLoad::Fleet.new(redis: redis, dir: dir, **options).run }
redis.cleanup

hb = r[:heartbeat]
ours = r[:ours]
puts "Sidekiq #{r[:sidekiq]}, Ruby #{RUBY_VERSION}: #{r[:processes]} processes (concurrency 1) on " \
     "#{r[:hostnames].size} hosts, check_interval #{r[:interval]} s, Sidekiq's beat every #{hb[:beat_seconds]} s"
puts
puts "| per process                 | sidekiq_rust                  | Sidekiq's heartbeat              |"
puts "|-----------------------------|-------------------------------|----------------------------------|"
puts format("| commands per check / beat   | %-29s | %-32s |", format("%.2f per check", ours[:per_check]),
            format("%.2f per beat", hb[:per_beat]))
puts format("| commands per second         | %-29s | %-32s |", format("%.3f", ours[:per_second]),
            format("%.3f", hb[:per_second]))
bytes = "#{r[:bytes][:total]} (#{r[:bytes][:readings]} readings: an hour)"
puts format("| bytes in Redis              | %-29s | %-32s |", bytes, "#{hb[:sidekiq_keys]} (its process hash)")
puts
puts "bytes: readings list #{r[:bytes][:list]}, process hash + classes #{r[:bytes][:own]}, " \
     "share of the indexes and events #{r[:bytes][:shared]}"
puts "sidekiq_rust metrics (CLI, a new Ruby): #{format('%.3f', r[:metrics][:cli])} s " \
     "(Metrics.text in-process: #{format('%.1f', r[:metrics][:in_process] * 1000)} ms, " \
     "#{r[:metrics][:processes]} processes)"
puts "Memory tab, server side: #{format('%.1f', r[:tab][:seconds] * 1000)} ms (#{r[:tab][:cards]} process cards)"
puts "measured: ours over #{ours[:checks]} checks in #{format('%.0f', ours[:seconds])} s: " \
     "#{ours[:commands].sort.map { |k, v| "#{k}=#{v}" }.join(' ')}"
puts "heartbeat over #{hb[:beats]} beats: #{hb[:commands].sort.map { |k, v| "#{k}=#{v}" }.join(' ')}"
