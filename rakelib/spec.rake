# frozen_string_literal: true

namespace :spec do
  SidekiqRustMatrix::ENTRIES.each do |entry|
    desc "Run the RSpec suite in matrix entry #{entry.name}: #{entry.description}"
    task entry.name => "matrix:compile:#{entry.name}" do
      run_in_entry(entry, "bundle", "exec", "rspec")
    end
  end
end

# How many RSpec jobs (one matrix entry's suite, or its allocator specs under the preload) run at once: one a
# core, as each job may run real Sidekiq processes whose timing the specs watch. SIDEKIQ_RUST_SPEC_JOBS=1 runs
# them one after the other.
SPEC_JOBS_AT_ONCE = Integer(ENV.fetch("SIDEKIQ_RUST_SPEC_JOBS", Etc.nprocessors.to_s))

# The plain suite of every entry (every spec file, as `spec:NAME` runs them) but the examples tagged `solo: true`.
def add_plain_jobs(jobs)
  SidekiqRustMatrix::ENTRIES.each do |entry|
    add_entry_job(jobs, entry, "spec:#{entry.name}", "--tag", "~solo")
  end
end

# The examples tagged `solo: true` (figures that a second busy core spoils: the per-class attribution, a minute a
# run), each job with no other beside it, added last (a job `alone` waits for the running ones to end). They
# measure the allocator, not Sidekiq: they run once under glibc, in the first entry (Ruby 3.1, Sidekiq 6.4), and
# once under the bundled jemalloc (add_preload_solo_jobs), in the last (Ruby 3.4, Sidekiq 8.1); every entry runs
# everything else. `bin/matrix NAME -- bundle exec rspec --tag solo` runs them in any entry.
def add_solo_jobs(jobs)
  entry = SidekiqRustMatrix::ENTRIES.first
  add_entry_job(jobs, entry, "spec:solo:#{entry.name}", "--tag", "solo", alone: true)
end

# The solo examples that are also tagged `allocator: true` (spec_helper derives `solo_allocator`), under the
# bundled jemalloc, alone, in the last entry.
def add_preload_solo_jobs(jobs)
  entry = SidekiqRustMatrix::ENTRIES.last
  add_entry_job(jobs, entry, "spec:solo:preload:#{entry.name}", "--tag", "solo_allocator",
                env: { "LD_PRELOAD" => PRELOAD_JEMALLOC }, alone: true)
end

# In every entry, the specs tagged `allocator: true` (what depends on the allocator) but the solo ones, with the
# bundled jemalloc preloaded into the suite and every process it starts.
def add_preload_jobs(jobs)
  SidekiqRustMatrix::ENTRIES.each do |entry|
    add_entry_job(jobs, entry, "spec:preload:#{entry.name}", "--tag", "allocator", "--tag", "~solo",
                  env: { "LD_PRELOAD" => PRELOAD_JEMALLOC })
  end
end

# The chaos suite of every entry. The burst scenario (20 Sidekiq processes sampled every 0.2 s) runs alone; the
# others start a few processes each and mostly wait (a slot's 62 s TTL, a Redis pause), so they run in
# CHAOS_GROUPS jobs side by side, the two slot-holder scenarios (a minute each) in different groups.
CHAOS_ALONE = %w[spec/chaos/burst_chaos.rb].freeze
CHAOS_GROUPS = [
  %w[spec/chaos/slot_holder_frozen_chaos.rb spec/chaos/redis_paused_chaos.rb spec/chaos/garbage_keys_chaos.rb],
  %w[spec/chaos/slot_holder_killed_chaos.rb spec/chaos/redis_killed_chaos.rb]
].freeze

def add_chaos_jobs(jobs)
  check_chaos_groups
  SidekiqRustMatrix::ENTRIES.each do |entry|
    add_entry_job(jobs, entry, "chaos:burst:#{entry.name}", *CHAOS_ALONE, alone: true)
    CHAOS_GROUPS.each_with_index do |files, i|
      add_entry_job(jobs, entry, "chaos:#{i + 1}:#{entry.name}", *files)
    end
  end
end

# Every scenario file is in CHAOS_ALONE or a group: a new one left out would never run.
def check_chaos_groups
  missing = Dir["spec/chaos/*_chaos.rb"].sort - (CHAOS_ALONE + CHAOS_GROUPS.flatten)
  return if missing.empty?

  abort "rakelib/spec.rake: chaos scenarios in no group (add them to CHAOS_GROUPS): #{missing.join(', ')}"
end

# Each job's log ends with its slowest examples (what to look at when the run grows).
PROFILE = %w[--profile 8].freeze

def add_entry_job(jobs, entry, name, *rspec_args, env: {}, alone: false)
  require_entry_ruby(entry)
  Bundler.with_unbundled_env do
    jobs.add(name, ENV.to_h.merge(entry.env).merge(env), "bundle", "exec", "rspec", *rspec_args, *PROFILE,
             alone: alone)
  end
end

def run_spec_jobs
  jobs = SpecJobs.new(at_once: SPEC_JOBS_AT_ONCE)
  yield jobs
  abort "spec jobs failed (their output above, and in #{SpecJobs::LOG_DIR})" unless jobs.run
end

desc "Run the RSpec suite in every matrix entry (bin/matrix --list), SIDEKIQ_RUST_SPEC_JOBS at a time " \
     "(default: one a core)"
task spec: ALL_ENTRIES_COMPILED do
  run_spec_jobs do |jobs|
    add_plain_jobs(jobs)
    add_solo_jobs(jobs)
  end
end

namespace :spec do
  desc "Run the specs tagged allocator: true in every matrix entry, each Ruby running the bundled jemalloc " \
       "(LD_PRELOAD)"
  task preload: ALL_ENTRIES_COMPILED do
    run_spec_jobs do |jobs|
      add_preload_jobs(jobs)
      add_preload_solo_jobs(jobs)
    end
  end

  desc "spec and spec:preload together, SIDEKIQ_RUST_SPEC_JOBS at a time (part of the default task)"
  task all: ALL_ENTRIES_COMPILED do
    run_spec_jobs do |jobs|
      add_plain_jobs(jobs)
      add_preload_jobs(jobs)
      add_solo_jobs(jobs)
      add_preload_solo_jobs(jobs)
    end
  end

  desc "Run the 50-process end-to-end (spec/fleet50_spec.rb, excluded from the default task: about 3 minutes " \
       "with the machine to itself) in the last matrix entry"
  task fleet50: ALL_ENTRIES_COMPILED do
    run_in_entry(SidekiqRustMatrix::ENTRIES.last, "bundle", "exec", "rspec", "--tag", "fleet50")
  end

  desc "Run the chaos suite (spec/chaos/*_chaos.rb: faults against supervised Sidekiq processes) in every matrix " \
       "entry, one entry after the other: the burst alone, the other scenarios two at a time (part of the default " \
       "task)"
  task chaos: ALL_ENTRIES_COMPILED do
    run_spec_jobs { |jobs| add_chaos_jobs(jobs) }
  end
end
