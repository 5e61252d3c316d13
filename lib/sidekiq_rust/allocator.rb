# frozen_string_literal: true

module SidekiqRust
  # The process's malloc, found at run time: jemalloc (linked into Ruby or preloaded) or glibc.
  #
  #   SidekiqRust::Allocator.name     # => "glibc"
  #   SidekiqRust::Allocator.stats    # => {allocator: "glibc", arena: ..., in_use: ..., fragmentation: 2.4, ...}
  #   SidekiqRust::Allocator.purge    # => {rss_before: ..., rss_after: ..., released: ..., seconds: 0.21}
  module Allocator
    module_function

    # "jemalloc", "glibc" or "unknown".
    def name
      info[:name]
    end

    # The allocator's version string ("5.3.0-0-g54eaed1d...", "2.36"), or nil.
    def version
      info[:version]
    end

    # :linked (Ruby built with it), :preloaded (LD_PRELOAD) or :system (the C library's malloc).
    def source
      info[:source]
    end

    # The file that provides malloc (or jemalloc's mallctl).
    def library
      info[:library]
    end

    # {name:, version:, source:, library:}; the allocator cannot change after start, so this is read once.
    def info
      @info ||= Native.allocator_info.freeze
    end

    # Allocator statistics in bytes, with symbol keys.
    # jemalloc: allocated, active, metadata, resident, mapped, retained, tcache (bytes the thread caches hold),
    #           narenas, dirty_decay_ms, muzzy_decay_ms, background_thread, fragmentation (resident / allocated).
    # glibc:    arena, mmapped, in_use, free, releasable, arenas, arena_max, fragmentation (RSS / in_use).
    # Raises NotSupported for any other allocator.
    def stats
      Native.allocator_stats
    end

    # Footprint over live allocations: 1.0 means no waste.
    def fragmentation
      stats[:fragmentation]
    end

    # Gives free memory back to the OS without a restart: jemalloc purges every arena, glibc runs
    # malloc_trim(0). Other Ruby threads keep running meanwhile (the GVL is released).
    # Returns {rss_before:, rss_after:, released:, seconds:}; `released` is never negative.
    def purge
      Native.allocator_purge
    end
  end
end
