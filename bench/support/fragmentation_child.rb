# frozen_string_literal: true

# One row of bench/fragmentation.rb, in a fresh process under the Ruby and allocator it was started with:
# `work` runs HashWorkload and then GC, GC.compact and the purge in turn; `restart` builds only the survivors (what
# a restarted process holds once it has the same live data). Prints one JSON line.
$LOAD_PATH.unshift(File.expand_path("../../lib", __dir__))
require "sidekiq_rust"
require "json"
require_relative "fragmentation_workload"

def settle
  3.times { GC.start }
  SidekiqRust::Memory.rss
end

mode = ARGV.fetch(0)
base = settle
started = Process.clock_gettime(Process::CLOCK_MONOTONIC)
kept = mode == "restart" ? HashWorkload.survivors_only : HashWorkload.run
seconds = Process.clock_gettime(Process::CLOCK_MONOTONIC) - started
after_gc = settle
figures = SidekiqRust::Fragmentation.read
result = { ruby: RUBY_VERSION, allocator: SidekiqRust::Allocator.name, base: base, after_gc: after_gc,
           kept: kept.size, seconds: seconds.round(1), figures: figures }
if mode == "work"
  GC.compact
  result[:after_compact] = settle
  result[:heap_fragmentation_after_compact] = SidekiqRust::Fragmentation.ruby_heap[:heap_fragmentation]
  purge = SidekiqRust::Allocator.purge
  result[:after_purge] = purge[:rss_after]
  result[:verdict] = SidekiqRust::Verdict.line(rows: [], fragmentation: figures,
                                               last_reclaim: { before: after_gc, after: purge[:rss_after] })
end
puts JSON.generate(result)
