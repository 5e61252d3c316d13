# frozen_string_literal: true

# Fragmentation against live memory, side by side in one run: the hash-heavy workload (bench/support/
# fragmentation_workload.rb, HashWorkload: 10 threads build 1,000,000 small Hashes of short Strings and keep 1 in
# 10) under each Ruby of the matrix and each allocator, and what GC.compact, the purge and a restart each give
# back. "restart" is a fresh process that builds only the survivors: what a restarted worker holds once it has
# the same live data. The verdict is the line the guard would log (SidekiqRust::Verdict) with the figures
# SidekiqRust::Fragmentation reads after the work and a GC.
#   ruby bench/fragmentation.rb            (or: rake bench:fragmentation)
require "json"
require "open3"
require_relative "../gemfiles/matrix"

ROOT = File.expand_path("..", __dir__)
CHILD = File.join(ROOT, "bench/support/fragmentation_child.rb")
JEMALLOC = File.join(ROOT, "lib/sidekiq_rust/sidekiq_rust_jemalloc.so")

def child(ruby, env, mode)
  out, err, status = Open3.capture3(env, ruby, CHILD, mode)
  abort "#{ruby} #{mode} (#{env.inspect}) failed: #{err}" unless status.success?
  JSON.parse(out.lines.last, symbolize_names: true)
end

rubies = SidekiqRustMatrix::ENTRIES.map(&:ruby).uniq.select { |ruby| File.executable?(ruby) }
allocators = [["glibc", {}]]
allocators << ["jemalloc (bundled)", { "LD_PRELOAD" => JEMALLOC }] if File.exist?(JEMALLOC)
mb = ->(bytes) { format("%.0f", bytes / 1_048_576.0) }
back = ->(from, to) { format("%s (%d%%)", mb[[from - to, 0].max], ([from - to, 0].max * 100.0 / from).round) }

puts "| Ruby | allocator | RSS after work + GC | live | allocator free | Ruby heap empty | GC.compact gives back | " \
     "purge gives back | restart gives back | verdict |"
puts "|---|---|---:|---:|---:|---:|---:|---:|---:|---|"
rubies.each do |ruby|
  allocators.each do |label, env|
    work = child(ruby, env, "work")
    restart = child(ruby, env, "restart")
    f = work[:figures]
    puts format("| %s | %s | %s | %s | %s | %d%% -> %d%% | %s | %s | %s | %s |", work[:ruby], label, mb[work[:after_gc]],
                mb[f[:live].to_i], f[:allocator_free] ? mb[f[:allocator_free]] : "?",
                (f[:heap_fragmentation].to_f * 100).round, (work[:heap_fragmentation_after_compact].to_f * 100).round,
                back[work[:after_gc], work[:after_compact]], back[work[:after_compact], work[:after_purge]],
                back[work[:after_gc], restart[:after_gc]], work[:verdict])
  end
end
puts "RSS in MB; \"gives back\": from the column before (GC.compact from after GC, the purge from after GC.compact, " \
     "a restart from after GC)."
