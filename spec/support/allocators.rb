# frozen_string_literal: true

# Real allocators to run child Rubies under.
module Allocators
  DEBIAN_JEMALLOC = Dir["/usr/lib/*/libjemalloc.so.2"].first
  TCMALLOC = Dir["/usr/lib/*/libtcmalloc_minimal.so.4"].first
  WORKLOAD = File.expand_path("../../bench/support/fragmentation_workload.rb", __dir__)

  # Child environments: plain glibc (whatever the suite itself runs under is removed) and jemalloc preloaded.
  GLIBC_ENV = { "LD_PRELOAD" => nil, "MALLOC_ARENA_MAX" => nil }.freeze

  def self.jemalloc_env
    raise "libjemalloc2 is not installed: run bin/setup" unless DEBIAN_JEMALLOC

    { "LD_PRELOAD" => DEBIAN_JEMALLOC, "MALLOC_ARENA_MAX" => nil }
  end
end
