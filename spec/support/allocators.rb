# frozen_string_literal: true

# Real allocators to run child Rubies under.
module Allocators
  DEBIAN_JEMALLOC = Dir["/usr/lib/*/libjemalloc.so.2"].first
  TCMALLOC = Dir["/usr/lib/*/libtcmalloc_minimal.so.4"].first
  WORKLOAD = File.expand_path("../../bench/support/fragmentation_workload.rb", __dir__)

  # Child environments: plain glibc (whatever the suite itself runs under is removed) and jemalloc preloaded.
  GLIBC_ENV = { "LD_PRELOAD" => nil, "MALLOC_ARENA_MAX" => nil }.freeze

  # Debian's libjemalloc2, where the package put it (a self-built Ruby's RbConfig arch, "x86_64-linux", is not
  # Debian's multiarch directory name, "x86_64-linux-gnu").
  def self.debian_jemalloc
    DEBIAN_JEMALLOC || raise("libjemalloc2 is not installed: run bin/setup")
  end

  def self.jemalloc_env
    { "LD_PRELOAD" => debian_jemalloc, "MALLOC_ARENA_MAX" => nil }
  end
end
