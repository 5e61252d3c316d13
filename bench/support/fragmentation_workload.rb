# frozen_string_literal: true

# The allocator-bloat workload shared by bench/reclaim.rb and spec/allocator_spec.rb: several threads
# allocate strings of mixed sizes and keep 1 in `keep_every`, the rest becoming garbage. The survivors pin
# pages all over the heap, which is how a Sidekiq process's RSS grows while its live data stays small.
module FragmentationWorkload
  SIZES = [40, 120, 500, 1_500, 4_000, 9_000, 20_000].freeze

  module_function

  # Returns the kept strings (keep them referenced to measure the live size).
  def run(threads: 10, per_thread: 60_000, keep_every: 100, seed: 42)
    workers = Array.new(threads) do |t|
      Thread.new do
        random = Random.new(seed + t)
        kept = []
        batch = []
        per_thread.times do |i|
          s = "x" * SIZES[random.rand(SIZES.size)]
          if (i % keep_every).zero?
            kept << s
          else
            batch << s
            batch.clear if batch.size >= 500
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
