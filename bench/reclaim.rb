# frozen_string_literal: true

# Allocator bloat and what SidekiqRust::Allocator.purge gives back, side by side in one run.
# Each column runs bench/support/fragmentation_workload.rb (10 threads, mixed-size strings, 1 in 100 kept)
# in a fresh Ruby under one allocator, then GC, then purge.
# Targets: glibc after purge <= jemalloc without purge; jemalloc after purge within 1.3x of
# (RSS at start + Ruby heap), the Ruby heap being ObjectSpace.memsize_of_all (which counts the kept strings' bytes).
$LOAD_PATH.unshift(File.expand_path("../lib", __dir__))
require "sidekiq_rust"
require "json"
require "open3"
require "rbconfig"

PER_THREAD = Integer(ENV.fetch("RECLAIM_PER_THREAD", "60000"))
DEBIAN_JEMALLOC = Dir["/usr/lib/*/libjemalloc.so.2"].first

columns = [
  ["glibc", {}],
  ["glibc MALLOC_ARENA_MAX=2", { "MALLOC_ARENA_MAX" => "2" }]
]
columns << ["jemalloc (Debian, LD_PRELOAD)", { "LD_PRELOAD" => DEBIAN_JEMALLOC }] if DEBIAN_JEMALLOC
if SidekiqRust.respond_to?(:jemalloc_path)
  begin
    columns << ["jemalloc (bundled, LD_PRELOAD)", { "LD_PRELOAD" => SidekiqRust.jemalloc_path }]
  rescue SidekiqRust::Error => e
    warn "bundled jemalloc left out: #{e.message}"
  end
end

child = File.expand_path("support/reclaim_child.rb", __dir__)
results = columns.map do |label, env|
  out, err, status = Open3.capture3(env, RbConfig.ruby, child, PER_THREAD.to_s)
  abort "#{label} failed: #{err}" unless status.success?
  [label, JSON.parse(out.lines.last, symbolize_names: true)]
end

mb = ->(bytes) { format("%.0f", bytes / 1_048_576.0) }
puts "reclaim: #{PER_THREAD * 10} strings over 10 threads, 1 in 100 kept; MB unless noted"
puts "| allocator | RSS after work+GC | RSS after purge | released | purge ms | live strings | Ruby heap | floor* | after purge / floor | workload s |"
puts "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
results.each do |label, r|
  floor = r[:base_rss] + r[:ruby_heap]
  puts format("| %s | %s | %s | %s | %.0f | %s | %s | %s | %.2fx | %.2f |", label, mb[r[:after_gc]], mb[r[:after_purge]],
              mb[r[:after_gc] - r[:after_purge]], r[:purge_seconds] * 1000, mb[r[:live_bytes]], mb[r[:ruby_heap]], mb[floor],
              r[:after_purge].fdiv(floor), r[:work_seconds])
end
puts "* floor = RSS at start + Ruby heap (ObjectSpace.memsize_of_all, kept strings included)"

glibc = results.assoc("glibc")&.last
jemalloc = results.assoc("jemalloc (Debian, LD_PRELOAD)")&.last
if glibc && jemalloc
  puts format("glibc after purge / jemalloc without purge: %.2f (target <= 1)", glibc[:after_purge].fdiv(jemalloc[:after_gc]))
  floor = jemalloc[:base_rss] + jemalloc[:ruby_heap]
  puts format("jemalloc after purge / floor: %.2f (target <= 1.3)", jemalloc[:after_purge].fdiv(floor))
end
bundled = results.assoc("jemalloc (bundled, LD_PRELOAD)")&.last
if bundled && jemalloc
  puts format("bundled / Debian jemalloc: RSS after work+GC %.2f, after purge %.2f, workload time %.2f (target within 10%%)",
              bundled[:after_gc].fdiv(jemalloc[:after_gc]), bundled[:after_purge].fdiv(jemalloc[:after_purge]),
              bundled[:work_seconds].fdiv(jemalloc[:work_seconds]))
end
