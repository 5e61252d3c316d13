# frozen_string_literal: true

$LOAD_PATH.unshift(File.expand_path("../lib", __dir__))
require "sidekiq_rust"
require "open3"
require "rbconfig"
require "tmpdir"
require "etc"
require "net/http"
require "fileutils"

Dir[File.join(__dir__, "support", "*.rb")].sort.each { |f| require f }

RSpec.configure do |config|
  config.expect_with(:rspec) { |c| c.syntax = :expect }
  config.disable_monkey_patching!
  config.order = :defined
  config.include ChildRuby
  config.filter_run_excluding(fleet50: true) # spec/fleet50_spec.rb: `bundle exec rspec --tag fleet50`
  # `rake spec:preload` runs the solo examples that depend on the allocator alone under jemalloc:
  # `--tag solo_allocator` selects them (RSpec's tags select one or the other, not both).
  config.define_derived_metadata do |meta|
    meta[:solo_allocator] = true if meta[:solo] && meta[:allocator]
  end
end
