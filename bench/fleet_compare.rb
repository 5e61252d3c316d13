# frozen_string_literal: true

# The headline benchmark: one workload, a fleet of 3 supervised `sidekiq` processes at concurrency 5 (restarted
# when they exit, as systemd would), under each way of keeping memory in check, side by side in one run:
#   (a)  no guard (glibc)
#   (b)  the hand-written killer (bench/support/rss_killer.rb): GC.start after each job while over the limit,
#        then quiet + stop
#   (c)  a restart of each process every --cron-every seconds (the cron approach; TERM from this script,
#        the processes staggered evenly over the period)
#   (d)  sidekiq_rust without the brake
#   (e)  sidekiq_rust with the brake, glibc; (ej) the same under the bundled jemalloc (LD_PRELOAD)
#   (f)  sidekiq_rust with the brake and admission, nothing declared, glibc; (fj) the same under the bundled jemalloc
# The workload, interleaved in a fixed seeded order and pushed at a steady pace over --seconds: a bloating job
# (keeps 1 MB for the process's life), a working-set-heavy job (holds 100 MB for 1 s, then frees it) and a
# light job (0.1 s). Prints a Markdown table for the README and writes the chart docs/fleet_compare.svg.
# Targets (README "Benchmark: bench/fleet_compare.rb"): with the brake, peak RSS <= max_rss, restarts at most a
# fifth of (d), throughput >= 0.95x of (a), no job lost.
#
#   bundle exec ruby bench/fleet_compare.rb                     # all eight, about 14 minutes
#   bundle exec ruby bench/fleet_compare.rb --only a,e --seconds 40 --jobs 1200
$LOAD_PATH.unshift(File.expand_path("../lib", __dir__))
require "optparse"
require "json"
require "tmpdir"
require "sidekiq_rust"
require_relative "../spec/support/redis_server"
require_relative "support/fleet_run"
require_relative "support/fleet_chart"
require_relative "support/fleet_table"
Redis.silence_deprecations = true if defined?(Redis) && Redis.respond_to?(:silence_deprecations=)

options = { seconds: 80, jobs: 2400, only: nil, max_rss: 350, cron_every: 30, seed: 16, cap: nil,
            chart: File.expand_path("../docs/fleet_compare.svg", __dir__) }
OptionParser.new do |o|
  o.banner = "usage: bench/fleet_compare.rb [options]"
  o.on("--seconds N", Float, "push the jobs evenly over N seconds (default 80)") { |v| options[:seconds] = v }
  o.on("--jobs N", Integer, "jobs pushed in every strategy's run (default 2400)") { |v| options[:jobs] = v }
  o.on("--only LIST", "strategies to run, e.g. a,e (e: both e and ej; f: both f and fj)") { |v| options[:only] = v.split(",") }
  o.on("--max-rss MB", Integer, "max_rss per process (default 350)") { |v| options[:max_rss] = v }
  o.on("--cron-every N", Float, "(c): seconds between restarts of a process (default 30)") do |v|
    options[:cron_every] = v
  end
  o.on("--seed N", Integer, "the workload's order (default 16)") { |v| options[:seed] = v }
  o.on("--cap N", Float, "give up on a run N seconds after its first push (default: --seconds + 60)") do |v|
    options[:cap] = v
  end
  o.on("--save PATH", "also write the runs' results and samples there (Marshal), for --replay") do |v|
    options[:save] = v
  end
  o.on("--replay PATH", "print the table and write the chart of a saved run, running nothing") do |v|
    options[:replay] = v
  end
  o.on("--chart PATH", "where the SVG goes (default docs/fleet_compare.svg; 'none' for no chart)") do |v|
    options[:chart] = v
  end
end.parse!

PROCESSES = 3
CONCURRENCY = 5
Strategy = Struct.new(:key, :label, :env, :cron, keyword_init: true)
results = nil
if options[:replay]
  chart = options[:chart]
  results, loads, options = Marshal.load(File.binread(options[:replay])) # rubocop:disable Security/MarshalLoad
  options[:chart] = chart
end
max_rss = options[:max_rss]
guard = { "max_rss" => max_rss, "hard_max_rss" => (max_rss * 1.3).round, "grace_time" => 20 }

strategies = [
  Strategy.new(key: "a", label: "(a) no guard (glibc)", env: {}),
  Strategy.new(key: "b", label: "(b) hand-written killer", env: { "FLEET_KILLER" => max_rss.to_s }),
  Strategy.new(key: "c", label: format("(c) restart every %gs", options[:cron_every]), env: {},
               cron: options[:cron_every]),
  Strategy.new(key: "d", label: "(d) sidekiq_rust, no brake",
               env: { "FLEET_GUARD" => JSON.generate(guard.merge("brake" => false)) }),
  Strategy.new(key: "e", label: "(e) sidekiq_rust + brake (glibc)",
               env: { "FLEET_GUARD" => JSON.generate(guard.merge("brake" => true)) }),
  Strategy.new(key: "ej", label: "(e) sidekiq_rust + brake (jemalloc)",
               env: { "FLEET_GUARD" => JSON.generate(guard.merge("brake" => true)) }),
  Strategy.new(key: "f", label: "(f) sidekiq_rust + admission (glibc)",
               env: { "FLEET_GUARD" => JSON.generate(guard.merge("brake" => true, "admission" => true)) }),
  Strategy.new(key: "fj", label: "(f) sidekiq_rust + admission (jemalloc)",
               env: { "FLEET_GUARD" => JSON.generate(guard.merge("brake" => true, "admission" => true)) })
]
jemalloc = strategies.select { |s| s.key.end_with?("j") }
begin
  jemalloc.each { |s| s.env["LD_PRELOAD"] = SidekiqRust.jemalloc_path }
rescue SidekiqRust::Error => e
  warn "(ej) and (fj) under jemalloc left out: #{e.message}"
  strategies -= jemalloc
end
strategies.each { |s| s.env["FLEET_STRATEGY"] = s.key }
if options[:only]
  strategies.select! { |s| options[:only].any? { |k| k == s.key || (%w[e f].include?(k) && s.key == "#{k}j") } }
end
abort "no strategy selected (keys: a, b, c, d, e, ej, f, fj)" if strategies.empty?

# The workload: 12% working-set-heavy, 8% bloating, 80% light, in a seeded order.
rng = Random.new(options[:seed])
workload = Array.new(options[:jobs]) do
  r = rng.rand
  if r < 0.12 then ["FleetWorkingSetJob", [100, 1.0]]
  elsif r < 0.20 then ["FleetBloatingJob", [1, 0.2]]
  else ["FleetLightJob", [0.1]]
  end
end

# Every selected strategy's run, one after the other, against one private redis-server (flushed between runs).
def run_all(strategies, workload, options, loads)
  redis = RedisServer.new.start
  Sidekiq.configure_client { |config| config.redis = { path: redis.socket } }
  Sidekiq.logger.level = Logger::WARN
  Dir.mktmpdir("fleet_compare") do |dir|
    strategies.map do |strategy|
      load_before = File.read("/proc/loadavg").split.first
      warn "fleet_compare: #{strategy.label} ..."
      result = FleetRun.new(strategy, redis: redis, dir: dir, workload: workload, seconds: options[:seconds],
                                      cap: options[:cap] || (options[:seconds] + 60), processes: PROCESSES,
                                      concurrency: CONCURRENCY).run
      loads[strategy.key] = [load_before, File.read("/proc/loadavg").split.first]
      warn format("fleet_compare: %<l>s done in %<s>.0fs, %<r>d restarts", l: strategy.label, s: result.elapsed,
                                                                           r: result.restarts)
      result
    ensure
      keep_logs(dir)
    end
  end
ensure
  redis.cleanup
end

# FLEET_KEEP_LOGS=DIR: every process's log is copied there (the runs' own directory is removed).
def keep_logs(dir)
  return unless ENV["FLEET_KEEP_LOGS"]

  FileUtils.mkdir_p(ENV["FLEET_KEEP_LOGS"])
  Dir[File.join(dir, "*.log")].each { |log| FileUtils.cp(log, ENV["FLEET_KEEP_LOGS"]) }
end

unless results
  loads = {}
  results = run_all(strategies, workload, options, loads)
  File.binwrite(options[:save], Marshal.dump([results, loads, options])) if options[:save]
end

counts = workload.map(&:first).tally
puts "fleet_compare: Ruby #{RUBY_VERSION}, Sidekiq #{Sidekiq::VERSION}, #{PROCESSES} processes x concurrency " \
     "#{CONCURRENCY}, #{options[:jobs]} jobs pushed over #{options[:seconds].round}s " \
     "(#{counts['FleetWorkingSetJob']} x 100 MB for 1 s, #{counts['FleetBloatingJob']} x 1 MB kept, " \
     "#{counts['FleetLightJob']} light), max_rss #{max_rss} MB, hard_max_rss #{guard['hard_max_rss']} MB, " \
     "grace_time #{guard['grace_time']} s; load average (1 min) before/after each run: " +
     loads.map { |k, (before, after)| "#{k} #{before}/#{after}" }.join(", ")
puts FleetTable.new(results, max_rss: max_rss).markdown
unless options[:chart] == "none"
  File.write(options[:chart], FleetChart.new(results, max_rss: max_rss, hard_max_rss: guard["hard_max_rss"]).svg)
  puts "chart: #{options[:chart]}"
end
