# frozen_string_literal: true

# The kernel's OOM killer against the guard, side by side in one run, in real memory cgroups (issue 17): the
# scenarios of spec/cgroup_oom_e2e_spec.rb (spec/support/cgroup_scenario.rb), each `RUNS` times:
#   - one `sidekiq` process in a 300 MB cgroup, and a fleet of two in a 400 MB one, supervised (started again
#     whenever they exit), running jobs that each keep 5 MB, more than the limit holds;
#   - without the guard's restarts (dry_run: the guard only watches) and with them (max_rss "80%" of the
#     cgroup's limit, metric :cgroup; the fleet: "40%" each, metric :rss, 80% of the limit between the two).
# Per scenario: jobs lost (pushed, never completed, not queued, retrying, scheduled nor dead), OOM kills (the
# cgroup's oom_kill counter), processes SIGKILLed, restarts and how many ended with status 0, seconds.
# Needs root and a memory cgroup to make a child in (it says why not, and exits 0, elsewhere).
ENV["BUNDLE_GEMFILE"] ||= File.expand_path("../Gemfile", __dir__)
require "bundler/setup"
require "json"
require "tmpdir"
$LOAD_PATH.unshift(File.expand_path("../lib", __dir__))
require "sidekiq"
require "sidekiq_rust"
%w[redis_server sidekiq_process supervisor e2e real_cgroup cgroup_scenario].each do |file|
  require_relative "../spec/support/#{file}"
end

RUNS = Integer(ENV.fetch("RUNS", "1"))
SCENARIOS = [
  ["1 process, 300 MB, no guard", 1, 300, CgroupScenario::UNGUARDED],
  ["1 process, 300 MB, guard", 1, 300, CgroupScenario::SOLE],
  ["2 processes, 400 MB, no guard", 2, 400, CgroupScenario::UNGUARDED],
  ["2 processes, 400 MB, guard", 2, 400, CgroupScenario::FLEET]
].freeze

unavailable = RealCgroup.unavailable
if unavailable
  puts "bench/cgroup_oom.rb: skipped, no writable memory cgroup here: #{unavailable}"
  exit 0
end

# What the scenario needs of a spec (E2E's helpers), outside RSpec.
class Bench
  include E2E

  def initialize(dir)
    @e2e_dir = dir
    @e2e_processes = []
    @e2e_supervisors = []
  end

  def finish
    @e2e_supervisors.each(&:stop)
    @e2e_processes.each(&:stop)
  end
end

puts "Sidekiq #{Sidekiq::VERSION}, Ruby #{RUBY_VERSION}, cgroup v#{RealCgroup.own.first}, #{RUNS} run(s) each"
puts "| scenario | jobs | lost | OOM kills | SIGKILLed | restarts | exit 0 | seconds |"
puts "|---|---:|---:|---:|---:|---:|---:|---:|"
SCENARIOS.each do |title, size, limit_mb, guard|
  RUNS.times do
    Dir.mktmpdir("sidekiq_rust-bench") do |dir|
      bench = Bench.new(dir)
      bench.redis_server.start unless bench.redis_server.running?
      bench.redis_server.flushall
      scenario = CgroupScenario.new(bench, size: size, limit: limit_mb * SidekiqRust::Units::MB, guard: guard)
      begin
        f = scenario.run.figures
        puts "| #{title} | #{f[:jobs]} | #{f[:lost]} | #{f[:oom_kills]} | #{f[:killed]} | #{f[:restarts]} | " \
             "#{f[:graceful]} | #{f[:seconds]} |"
      ensure
        bench.finish
        scenario.cgroup.destroy
      end
    end
  end
end
E2E.shutdown
