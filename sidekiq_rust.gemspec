# frozen_string_literal: true

require_relative "lib/sidekiq_rust/version"

Gem::Specification.new do |spec|
  spec.name = "sidekiq_rust"
  spec.version = SidekiqRust::VERSION
  spec.authors = ["sidekiq_rust developers"]
  spec.summary = "Keeps Sidekiq processes' memory under control: exact readings, allocator reclaim, safe restarts."
  spec.description = "A Rust core (magnus + rb-sys) that measures Sidekiq process memory cheaply and exactly, " \
                     "gives back memory the allocator hoards, and restarts a bloated process gracefully " \
                     "without losing jobs or stopping the last process of the fleet."
  spec.license = "MIT"
  spec.required_ruby_version = ">= 3.1"

  # What a source install needs to compile and run, and nothing else (no target/, tmp/, spec/, bench/): the
  # precompiled platform gem (`rake native:gem`) adds its .so files to this list.
  spec.files = Dir[
    "lib/**/*.rb", "lib/sidekiq_rust/web/**/*.{erb,yml,css}", "lib/generators/**/templates/*",
    "ext/**/*.{rs,rb,toml}", "Cargo.toml", "Cargo.lock", "exe/*",
    "README.md", "CHANGELOG.md", "LICENSE"
  ]
  spec.bindir = "exe"
  spec.executables = Dir["exe/*"].map { |f| File.basename(f) }
  spec.require_paths = ["lib"]
  spec.extensions = ["ext/sidekiq_rust/extconf.rb", "ext/sidekiq_rust_jemalloc/extconf.rb"]

  spec.add_dependency "rb_sys", "~> 0.9"
  spec.add_dependency "sidekiq", ">= 6.4", "< 9"
end
