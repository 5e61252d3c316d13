# frozen_string_literal: true

require "digest"
require "fileutils"
require "tmpdir"
require_relative "gem_home"

module SidekiqRustPackaging
  GEMSPEC_PATH = File.join(ROOT, "sidekiq_rust.gemspec")

  def self.gemspec
    @gemspec ||= Gem::Specification.load(GEMSPEC_PATH)
  end

  # `gem build` of the checkout's gemspec (the source gem, as `rake build` makes it) into dir; returns its path.
  def self.build_source_gem(dir, ruby: RbConfig.ruby)
    path = File.join(dir, "#{gemspec.full_name}.gem")
    run(CLEAN_ENV, ruby, File.join(File.dirname(ruby), "gem"), "build", GEMSPEC_PATH, "--output", path, chdir: ROOT)
    path
  end

  # A digest of what the source gem holds: the gemspec, its file list and their contents, but for the Markdown
  # documents (README, CHANGELOG), which change nothing of what is compiled or run.
  def self.source_digest
    digest = Digest::SHA256.new
    digest << gemspec.files.sort.join("\0")
    (["sidekiq_rust.gemspec"] + gemspec.files).sort.each do |file|
      next if file.end_with?(".md")

      digest << file << "\0" << File.binread(File.join(ROOT, file)) << "\0"
    end
    digest.hexdigest[0, 16]
  end

  # The source gem built and installed with `gem install --local` into an empty GEM_HOME of one Ruby, which
  # compiles the extension and the bundled jemalloc through the gem's extconf.rb files (release profile). Kept in
  # a cache directory keyed by the source digest and the Ruby's version: the install specs of every matrix entry
  # and `rake native:gem` compile once per Ruby and source. Cargo's target directory is a scratch directory
  # outside the gem, removed after the install: it could not serve the next source anyway (RubyGems runs
  # `make clean`, and rb_sys's Makefile cleans cargo's profile directory with it).
  class SourceInstall
    # A checkout's cache: SIDEKIQ_RUST_PACKAGING_CACHE, or a directory of the system's tmp named after the checkout.
    def self.default_cache_root
      ENV.fetch("SIDEKIQ_RUST_PACKAGING_CACHE") do
        File.join(Dir.tmpdir, "sidekiq_rust-packaging-#{Digest::SHA256.hexdigest(ROOT)[0, 8]}")
      end
    end

    attr_reader :ruby

    def initialize(ruby, cache_root: self.class.default_cache_root)
      @ruby = ruby
      @cache_root = cache_root
      @digest = SidekiqRustPackaging.source_digest
    end

    # "3.1.2"
    def ruby_version
      @ruby_version ||= SidekiqRustPackaging.run(CLEAN_ENV, ruby, "-e", "print RUBY_VERSION")
    end

    # "3.1": the precompiled gem's directory for this Ruby.
    def ruby_minor
      ruby_version[/\A\d+\.\d+/]
    end

    def dir
      File.join(@cache_root, @digest, "ruby-#{ruby_version}")
    end

    # The GemHome with the source gem installed; installs it first unless the cache holds it.
    def gem_home
      File.open(lock_path, File::CREAT | File::RDWR) do |lock|
        lock.flock(File::LOCK_EX)
        install unless File.exist?(File.join(dir, "seconds"))
      end
      GemHome.new(ruby, File.join(dir, "gem_home"))
    end

    # Seconds the build and install took when the cache was filled.
    def seconds
      gem_home
      Float(File.read(File.join(dir, "seconds")))
    end

    # The .gem file that was installed.
    def gem_file
      gem_home
      File.join(dir, "#{SidekiqRustPackaging.gemspec.full_name}.gem")
    end

    # The installed gem's compiled files.
    def extension_path
      File.join(gem_home.gem_dir("sidekiq_rust"), "lib", "sidekiq_rust", "sidekiq_rust.so")
    end

    def jemalloc_path
      File.join(gem_home.gem_dir("sidekiq_rust"), "lib", "sidekiq_rust", "sidekiq_rust_jemalloc.so")
    end

    private

    def lock_path
      FileUtils.mkdir_p(File.dirname(dir))
      "#{dir}.lock"
    end

    # Builds into a scratch directory renamed into place at the end, so an interrupted build is never taken for
    # a finished one. Other sources' directories of this cache are removed (one source a checkout at a time).
    def install
      started = Process.clock_gettime(Process::CLOCK_MONOTONIC)
      scratch = "#{dir}.partial"
      FileUtils.rm_rf(scratch)
      FileUtils.mkdir_p(scratch)
      gem_file = SidekiqRustPackaging.build_source_gem(scratch, ruby: ruby)
      home = GemHome.new(ruby, File.join(scratch, "gem_home"))
      target = File.join(scratch, "target")
      log = home.install(gem_file, env: { "RB_SYS_CARGO_TARGET_DIR" => target })
      FileUtils.rm_rf(target)
      File.write(File.join(scratch, "install.log"), log)
      elapsed = Process.clock_gettime(Process::CLOCK_MONOTONIC) - started
      File.write(File.join(scratch, "seconds"), format("%.1f", elapsed))
      FileUtils.rm_rf(dir)
      File.rename(scratch, dir)
      remove_other_sources
    end

    # Only directories named as a digest: the cache root may be a directory that holds other things.
    def remove_other_sources
      Dir[File.join(@cache_root, "*")].each do |entry|
        next if entry == File.dirname(dir) || !File.basename(entry).match?(/\A\h{16}\z/)

        FileUtils.rm_rf(entry)
      end
    end
  end
end
