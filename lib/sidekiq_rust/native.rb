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
    raise LoadError, "the sidekiq_rust native extension is not built (#{e.message}): " \
                     "run `bundle exec rake compile` in a checkout, or reinstall the gem"
  end
end
