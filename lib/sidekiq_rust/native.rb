# frozen_string_literal: true

# Loads the compiled extension: a precompiled gem keeps one per Ruby version in lib/sidekiq_rust/X.Y/,
# a source install (and `rake compile`) puts it in lib/sidekiq_rust/.
begin
  ruby_version = RUBY_VERSION[/\A\d+\.\d+/]
  require_relative "#{ruby_version}/sidekiq_rust"
rescue LoadError
  begin
    require "sidekiq_rust/sidekiq_rust"
  rescue LoadError => e
    precompiled = Dir[File.join(__dir__, "[0-9]*.[0-9]*", "sidekiq_rust.so")].map { |f| File.basename(File.dirname(f)) }
    unless precompiled.empty?
      raise LoadError, "this precompiled sidekiq_rust gem carries the extension for Ruby " \
                       "#{precompiled.sort.join(', ')}, not #{ruby_version} (#{e.message}): install the source gem, " \
                       "which compiles it (Bundler: " \
                       "`gem \"sidekiq_rust\", force_ruby_platform: true`; it needs a Rust toolchain, libclang, a C " \
                       "compiler and make)"
    end
    raise LoadError, "the sidekiq_rust native extension is not built (#{e.message}): " \
                     "run `bundle exec rake compile` in a checkout, or reinstall the gem"
  end
end
