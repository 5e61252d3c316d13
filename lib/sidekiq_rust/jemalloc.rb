# frozen_string_literal: true

module SidekiqRust
  # The file name of the bundled, preloadable jemalloc (ext/sidekiq_rust_jemalloc), built beside the extension.
  JEMALLOC_LIBRARY = "sidekiq_rust_jemalloc.so"

  # The absolute path of the bundled jemalloc, to put in LD_PRELOAD (`sidekiq_rust exec` does it). Raises
  # NotSupported when it was not built.
  def self.jemalloc_path
    candidates = jemalloc_candidates
    found = candidates.find { |path| File.file?(path) }
    return found if found

    raise NotSupported, "the bundled jemalloc (#{JEMALLOC_LIBRARY}) is not built: looked for " \
                        "#{candidates.join(', ')}; run `bundle exec rake compile` in a checkout, or reinstall " \
                        "the sidekiq_rust gem (building it needs a Rust toolchain and a C compiler)"
  end

  # Where jemalloc_path looks, in order: a precompiled gem's Ruby-version directory, lib/sidekiq_rust/ (source
  # install, `rake compile`), and the installed gem's extension directory.
  def self.jemalloc_candidates
    ruby_version = RUBY_VERSION[/\A\d+\.\d+/]
    candidates = [File.join(__dir__, ruby_version, JEMALLOC_LIBRARY), File.join(__dir__, JEMALLOC_LIBRARY)]
    spec = defined?(Gem) ? Gem.loaded_specs["sidekiq_rust"] : nil
    candidates << File.join(spec.extension_dir, "sidekiq_rust", JEMALLOC_LIBRARY) if spec
    candidates
  end
  private_class_method :jemalloc_candidates
end
