# frozen_string_literal: true

# The allocator-bloat workload shared by bench/reclaim.rb and spec/allocator_spec.rb: several threads
# allocate strings of mixed sizes and keep 1 in `keep_every`, the rest becoming garbage. The survivors pin
# pages all over the heap, which is how a Sidekiq process's RSS grows while its live data stays small.
module FragmentationWorkload
  SIZES = [40, 120, 500, 1_500, 4_000, 9_000, 20_000].freeze

  module_function

  # Returns the kept strings (keep them referenced to measure the live size).
  def run(threads: 10, per_thread: 60_000, keep_every: 100, seed: 42)
    churn(threads: threads, per_thread: per_thread, keep_every: keep_every, batch_size: 500, seed: seed) do |random, _|
      "x" * SIZES[random.rand(SIZES.size)]
    end
  end

  # `threads` threads each make `per_thread` objects (the block, given the thread's Random and the index), keep
  # 1 in `keep_every` and drop the others `batch_size` at a time; returns the kept ones.
  def churn(threads:, per_thread:, keep_every:, batch_size:, seed:)
    workers = Array.new(threads) do |t|
      Thread.new do
        random = Random.new(seed + t)
        kept = []
        batch = []
        per_thread.times do |i|
          object = yield(random, i)
          if (i % keep_every).zero?
            kept << object
          else
            batch << object
            batch.clear if batch.size >= batch_size
          end
        end
        kept
      end
    end
    workers.flat_map(&:value)
  end

  def live_bytes(kept)
    kept.sum(&:bytesize)
  end
end

# The hash-heavy workload (bench/fragmentation.rb): threads build small Hashes of short Strings, as a Rails job
# building records does, and keep 1 in `keep_every`; the survivors pin pages of Ruby's heap and of the allocator.
module HashWorkload
  module_function

  # Returns the kept Hashes.
  def run(threads: 10, per_thread: 100_000, keep_every: 10, batch_size: 20_000, seed: 7)
    FragmentationWorkload.churn(threads: threads, per_thread: per_thread, keep_every: keep_every,
                                batch_size: batch_size, seed: seed) { |random, i| record(random, i) }
  end

  # 4 to 15 fields of short Strings.
  def record(random, index)
    (4 + random.rand(12)).times.to_h { |k| ["field_#{k}", "value #{index} #{k}" * (1 + random.rand(4))] }
  end

  # The same survivors built alone (what a restarted process holds once it has them again).
  def survivors_only(threads: 10, per_thread: 100_000, keep_every: 10, seed: 7)
    Array.new(threads) do |t|
      random = Random.new(seed + t)
      kept = []
      per_thread.times do |i|
        record = record(random, i)
        kept << record if (i % keep_every).zero?
      end
      kept
    end.flatten(1)
  end
end
