# frozen_string_literal: true

module SidekiqRust
  # Fragmentation against leaks, for one process: how much of its memory is live, how much Ruby's heap and the
  # allocator hold free. Cheap enough for a restart, `top`, the doctor, the Memory tab and the metrics (GC.stat
  # and the allocator's statistics; no GC is run).
  #
  #   SidekiqRust::Fragmentation.read
  #   # => {rss: 512_000_000, live: 110_000_000, allocator: "glibc", allocator_free: 380_000_000,
  #   #     ruby_heap: 48_000_000, heap_fragmentation: 0.42, heap_slots: 1_200_000, heap_live_slots: 700_000}
  #
  # - heap_fragmentation: GitLab's definition, 1 - live slots / the slots of the pages that hold live objects
  #   (Ruby's eden pages): the share of Ruby's heap that is empty slots on pages it cannot give back.
  # - live: the allocator's bytes in use (jemalloc stats.allocated, glibc mallinfo2 in use + mmapped): what Ruby's
  #   objects malloc'd (string and array buffers, hash tables) and C extensions' memory, at most RSS (a block
  #   handed out but never written to is not resident, and glibc counts an mmapped block whole); nil under
  #   another allocator. Ruby's heap pages are not in it: Ruby maps them itself.
  # - ruby_heap: the bytes of Ruby's heap pages (GC.stat heap_allocated_pages times the page size).
  # - allocator_free: what the allocator holds and the process does not use: jemalloc resident - allocated
  #   (dirty and muzzy pages, partly used pages), glibc RSS - in use - Ruby's heap pages (free chunks in its
  #   arenas, and the rest of the process's own mappings); nil unknown.
  module Fragmentation
    # How often a guarded process records these figures with its readings (History).
    EVERY = 30

    module_function

    def read
      rss = Memory.rss
      figures = { rss: rss }.merge(ruby_heap).merge(allocator)
      figures[:live] = [figures[:live], rss].min if figures[:live]
      # glibc tells no resident figure of its own: RSS less what is in use and less Ruby's heap pages (Ruby maps
      # those itself).
      if figures[:live] && figures[:allocator] == "glibc"
        figures[:allocator_free] = [rss - figures[:live] - figures[:ruby_heap], 0].max
      end
      figures
    end

    # {heap_fragmentation:, heap_slots:, heap_live_slots:, ruby_heap:} from GC.stat (and GC.stat_heap on Ruby
    # 3.2+, whose pages hold slots of several sizes).
    def ruby_heap
      live = GC.stat(:heap_live_slots)
      slots = eden_slots
      { heap_fragmentation: slots.positive? ? (1 - live.fdiv(slots)).clamp(0.0, 1.0).round(3) : nil,
        heap_slots: slots, heap_live_slots: live,
        ruby_heap: GC.stat(:heap_allocated_pages) * GC::INTERNAL_CONSTANTS.fetch(:HEAP_PAGE_SIZE) }
    end

    def eden_slots
      if GC.respond_to?(:stat_heap)
        GC.stat_heap.each_value.sum { |heap| heap[:heap_eden_slots].to_i }
      else
        GC.stat(:heap_eden_pages) * GC::INTERNAL_CONSTANTS.fetch(:HEAP_PAGE_OBJ_LIMIT)
      end
    end

    def allocator
      stats = Allocator.stats
      case stats[:allocator]
      when "jemalloc"
        { allocator: "jemalloc", live: stats[:allocated],
          allocator_free: stats[:resident] && stats[:allocated] && [stats[:resident] - stats[:allocated], 0].max }
      else
        { allocator: stats[:allocator], live: stats[:in_use] }
      end
    rescue Error
      { allocator: Allocator.name, live: nil, allocator_free: nil }
    end
  
    # The figures a process records in its history hash ("live", "allocator_free", "heap_fragmentation",
    # "ruby_heap"; "" where unknown), read at most every EVERY seconds, and "live_at", the time they were read
    # (the hash's "at" is its last reading's: `top` tells a LIVE figure older than the RSS beside it). Never
    # raises: a failed read keeps the last figures, and says so through `notice` (a FailureNotice, nil: not said).
    class Sampler
      def initialize(every: EVERY, notice: nil)
        @every = every
        @notice = notice
        @at = nil
        @fields = {}
      end

      def fields(now)
        return @fields if @at && now - @at < @every

        @at = now
        figures = Fragmentation.read
        @fields = { "live" => figures[:live].to_s, "allocator_free" => figures[:allocator_free].to_s,
                    "heap_fragmentation" => figures[:heap_fragmentation].to_s, "ruby_heap" => figures[:ruby_heap].to_s,
                    "live_at" => now.round(3).to_s }
        @notice&.succeeded
        @fields
      rescue StandardError => e
        @notice&.failed(e)
        @fields
      end
    end
  end
end
