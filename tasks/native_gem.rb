# frozen_string_literal: true

require "fileutils"
require "rubygems/package"
require "tmpdir"
require_relative "source_install"

module SidekiqRustPackaging
  # The precompiled platform gem (`rake native:gem`): the source gem's files, plus the extension of each Ruby it
  # carries in lib/sidekiq_rust/X.Y/ (lib/sidekiq_rust/native.rb tries that directory first) and the bundled
  # jemalloc in lib/sidekiq_rust/ (one for every Ruby: it is a plain C library). Each .so is the one the source
  # gem's own extconf.rb compiled for that Ruby (SourceInstall). Nothing is compiled when it is installed:
  # no extensions, no rb_sys dependency, and required_ruby_version spans the Rubies it carries.
  class NativeGem
    PLATFORM = "x86_64-linux"
    EXTENSION = "sidekiq_rust.so"
    JEMALLOC = "sidekiq_rust_jemalloc.so"

    # installs: one SourceInstall per Ruby to carry.
    def initialize(installs)
      raise ArgumentError, "a native gem needs at least one Ruby" if installs.empty?

      @installs = installs.sort_by { |install| Gem::Version.new(install.ruby_minor) }
    end

    # The Ruby versions it carries: ["3.1", "3.4"].
    def ruby_minors
      @installs.map(&:ruby_minor)
    end

    # Builds pkg-like `out_dir`/sidekiq_rust-VERSION-x86_64-linux.gem; returns its path.
    def build(out_dir)
      host = Gem::Platform.local
      unless host.cpu == "x86_64" && host.os == "linux"
        raise CommandFailed, "the #{PLATFORM} gem is built on an #{PLATFORM} host, not #{host}"
      end

      FileUtils.mkdir_p(out_dir)
      Dir.mktmpdir("sidekiq_rust-native") do |stage|
        native_files = stage_files(stage)
        spec = native_spec(native_files)
        file = Gem::DefaultUserInteraction.use_ui(Gem::SilentUI.new) { Dir.chdir(stage) { Gem::Package.build(spec) } }
        FileUtils.mv(File.join(stage, file), File.join(out_dir, file))
        File.join(out_dir, file)
      end
    end

    private

    # Copies the source gem's files and the compiled ones into stage; returns the compiled files' paths.
    def stage_files(stage)
      SidekiqRustPackaging.gemspec.files.each do |file|
        FileUtils.mkdir_p(File.join(stage, File.dirname(file)))
        FileUtils.cp(File.join(ROOT, file), File.join(stage, file), preserve: true)
      end
      compiled = @installs.to_h do |install|
        [File.join("lib/sidekiq_rust", install.ruby_minor, EXTENSION), install.extension_path]
      end
      compiled[File.join("lib/sidekiq_rust", JEMALLOC)] = @installs.first.jemalloc_path
      compiled.each do |file, source|
        FileUtils.mkdir_p(File.join(stage, File.dirname(file)))
        FileUtils.cp(source, File.join(stage, file))
      end
      compiled.keys
    end

    def native_spec(native_files)
      spec = SidekiqRustPackaging.gemspec.dup
      spec.platform = Gem::Platform.new(PLATFORM)
      spec.extensions = []
      spec.files += native_files
      spec.dependencies.reject! { |dependency| dependency.name == "rb_sys" }
      newest = Gem::Version.new(ruby_minors.last).segments
      spec.required_ruby_version = [">= #{ruby_minors.first}", "< #{newest[0]}.#{newest[1] + 1}"]
      spec
    end
  end
end
