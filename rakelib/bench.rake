# frozen_string_literal: true

# The fleet benchmark runs real Sidekiq fleets for about 14 minutes: a task of its own, not part of `rake bench`.
FLEET_BENCH = File.expand_path("../bench/fleet_compare.rb", __dir__)

desc "Run the benchmarks under bench/ but the fleet one (prints tables for the README)"
task bench: :compile do
  (Dir[File.expand_path("../bench/*.rb", __dir__)].sort - [FLEET_BENCH]).each do |file|
    sh RbConfig.ruby, file
  end
end

namespace :bench do
  desc "Run bench/fleet_compare.rb: eight ways of keeping a Sidekiq fleet's memory in check, about 14 minutes"
  task fleet: :compile do
    sh RbConfig.ruby, FLEET_BENCH
  end

  desc "Run bench/fragmentation.rb: fragmentation against live memory, and what GC.compact, the purge and a " \
       "restart give back, on every matrix Ruby under glibc and the bundled jemalloc (a few minutes)"
  task fragmentation: ALL_ENTRIES_COMPILED do
    sh RbConfig.ruby, File.expand_path("../bench/fragmentation.rb", __dir__)
  end
end
