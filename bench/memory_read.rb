# frozen_string_literal: true

# How fast is SidekiqRust::Memory.rss? Side by side in one run:
#   - SidekiqRust::Memory.rss            (pread of /proc/self/statm on a kept descriptor)
#   - get_process_mem's approach on Linux (Ruby reads /proc/PID/status line by line, parses VmRSS)
#   - `ps -o rss= -p PID`                 (what many hand-written killers shell out to)
#   - the native floor                    (a Rust program doing the same pread loop, no Ruby at all)
# Targets: >= 12x faster than the status parse, <= 1.3x the native floor.
$LOAD_PATH.unshift(File.expand_path("../lib", __dir__))
require "sidekiq_rust"
require "fileutils"
require "rbconfig"

ROUNDS = 5 # alternate the contenders in rounds, keep each one's best: the machine is noisy

def ns_per_call(iterations)
  start = Process.clock_gettime(Process::CLOCK_MONOTONIC, :nanosecond)
  iterations.times { yield }
  (Process.clock_gettime(Process::CLOCK_MONOTONIC, :nanosecond) - start).fdiv(iterations)
end

def status_parse_rss(pid)
  File.foreach("/proc/#{pid}/status") do |line|
    return line.split[1].to_i * 1024 if line.start_with?("VmRSS:")
  end
  nil
end

def native_floor_ns(iterations)
  out_dir = File.expand_path("../tmp/bench", __dir__)
  FileUtils.mkdir_p(out_dir)
  binary = File.join(out_dir, "statm_floor")
  source = File.expand_path("native/statm_floor.rs", __dir__)
  unless File.exist?(binary) && File.mtime(binary) >= File.mtime(source)
    system("rustc", "-O", "--edition=2021", source, "-o", binary, exception: true)
  end
  Float(`#{binary} #{iterations}`.split.first)
end

pid = Process.pid
best = Hash.new(Float::INFINITY)
SidekiqRust::Memory.rss # open the descriptor
ROUNDS.times do
  best[:sidekiq_rust] = [best[:sidekiq_rust], ns_per_call(200_000) { SidekiqRust::Memory.rss }].min
  best[:native] = [best[:native], native_floor_ns(200_000)].min
  best[:status] = [best[:status], ns_per_call(20_000) { status_parse_rss(pid) }].min
  best[:ps] = [best[:ps], ns_per_call(20) { `ps -o rss= -p #{pid}` }].min
end

ours = best[:sidekiq_rust]
rows = [
  ["SidekiqRust::Memory.rss", best[:sidekiq_rust]],
  ["native floor (Rust pread loop)", best[:native]],
  ["/proc/PID/status parse (get_process_mem)", best[:status]],
  ["ps -o rss= -p PID", best[:ps]]
]
puts "memory_read: Ruby #{RUBY_VERSION}, best of #{ROUNDS} rounds"
puts "| reader | ns/call | vs SidekiqRust::Memory.rss |"
puts "|---|---:|---:|"
rows.each { |name, ns| puts format("| %s | %.0f | %.2fx |", name, ns, ns / ours) }
puts
puts format("speed-up over the status parse: %.1fx (target >= 12x)", best[:status] / ours)
puts format("cost over the native floor:     %.2fx (target <= 1.3x)", ours / best[:native])
