# frozen_string_literal: true

module SidekiqRust
  # The one line the guard logs (and gives on_restart) at a restart: a leak in a class, fragmentation, or live
  # memory that no class explains, from the per-class rows (Report), Fragmentation.read and the last reclaim.
  #
  #   Verdict.line(rows: guard.report, fragmentation: Fragmentation.read, last_reclaim: {before:, after:})
  #   # => "leak in LeakJob: 3.0MB/job ±0.1MB, 300 jobs, 58 windows (900MB retained in all)"
  #   # => "fragmentation: the allocator holds 310MB free (61% of RSS), Ruby's heap is 38% empty slots; the
  #   #     last purge gave back 12%: try the bundled jemalloc (sidekiq_rust exec -- sidekiq)"
  module Verdict
    # A class explains the memory when what it retained in all is at least this share of the live memory (the
    # allocator's bytes in use and Ruby's heap).
    LEAK_SHARE = 0.2
    # Fragmentation: the allocator's free bytes and Ruby's empty slots are at least this share of RSS.
    FREE_SHARE = 0.25
    JEMALLOC_HINT = "try the bundled jemalloc (sidekiq_rust exec -- sidekiq)"
    DECAY_HINT = "try MALLOC_CONF=dirty_decay_ms:1000,muzzy_decay_ms:0 (pages go back sooner)"

    module_function

    def line(rows:, fragmentation:, last_reclaim: nil)
      leak(rows, fragmentation) || fragmented(fragmentation, last_reclaim) || live(rows, fragmentation)
    end

    def leak(rows, fragmentation)
      suspect = Report.strongest(rows)
      return nil unless suspect

      total = suspect[:retained_per_job] * suspect[:jobs]
      base = fragmentation[:live] ? fragmentation[:live] + fragmentation[:ruby_heap].to_i : fragmentation[:rss]
      return nil if base.to_i.positive? && total < LEAK_SHARE * base

      "leak in #{suspect[:class]}: #{Report.evidence(suspect)} (#{Units.mb(total)} retained in all)"
    end

    # The allocator's free bytes and the empty slots of Ruby's heap (its pages' bytes times the share empty),
    # against RSS.
    def fragmented(figures, last_reclaim)
      rss = figures[:rss].to_i
      free = figures[:allocator_free].to_i
      heap = figures[:heap_fragmentation]
      empty = (figures[:ruby_heap].to_i * heap.to_f).round
      return nil unless rss.positive? && (free + empty).fdiv(rss) >= FREE_SHARE

      parts = []
      if figures[:allocator_free]
        parts << "the allocator holds #{Units.mb(free)} free (#{percent(free.fdiv(rss))} of RSS)"
      end
      parts << "Ruby's heap is #{percent(heap)} empty slots (#{Units.mb(empty)})" if heap
      "fragmentation: #{parts.join(', ')}#{purged(last_reclaim)}: #{hint(figures, empty > free)}"
    end

    def live(rows, figures)
      live = if figures[:live]
               "#{Units.mb(figures[:live])} in use and #{Units.mb(figures[:ruby_heap].to_i)} of Ruby's heap"
             else
               "#{Units.mb(figures[:rss].to_i)} RSS"
             end
      known = rows.count { |r| r[:retained_per_job] }
      classes = known.zero? ? "no class has a retained figure yet" : "no class's retained explains it"
      "live memory: #{live}, #{classes}: the working set needs more than the limit, or a leak spread over classes"
    end

    # `last_reclaim`: {before:, after:} (Native::Guard#last_reclaim), or nil.
    def purged(last_reclaim)
      before = last_reclaim ? last_reclaim[:before].to_i : 0
      return "" unless before.positive?

      "; the last reclaim gave back #{percent([before - last_reclaim[:after], 0].max.fdiv(before))}"
    end

    def hint(figures, heap_holds_more)
      return "GC.compact (Ruby's heap, not the allocator, holds it)" if heap_holds_more
      return DECAY_HINT if figures[:allocator] == "jemalloc"

      JEMALLOC_HINT
    end

    def percent(share)
      "#{(share * 100).round}%"
    end
  end
end
