# frozen_string_literal: true

# One column of bench/reclaim.rb, run in a fresh process under the allocator its environment selects.
# Prints one JSON line.
$LOAD_PATH.unshift(File.expand_path("../../lib", __dir__))
require "sidekiq_rust"
require "json"
require "objspace"
require_relative "fragmentation_workload"

per_thread = Integer(ARGV.fetch(0, "60000"))
GC.start
base_rss = SidekiqRust::Memory.rss
started = Process.clock_gettime(Process::CLOCK_MONOTONIC)
kept = FragmentationWorkload.run(per_thread: per_thread)
work_seconds = Process.clock_gettime(Process::CLOCK_MONOTONIC) - started
3.times { GC.start }
after_gc = SidekiqRust::Memory.rss
ruby_heap = ObjectSpace.memsize_of_all
purge = SidekiqRust::Allocator.purge
puts JSON.generate(
  allocator: SidekiqRust::Allocator.name, source: SidekiqRust::Allocator.source,
  base_rss: base_rss, after_gc: after_gc, after_purge: purge[:rss_after], purge_seconds: purge[:seconds],
  live_bytes: FragmentationWorkload.live_bytes(kept), ruby_heap: ruby_heap, work_seconds: work_seconds,
  allocations: per_thread * 10
)
