# frozen_string_literal: true

require "rails/generators"
require "sidekiq_rust/configuration"

module SidekiqRust
  module Generators
    # `bin/rails generate sidekiq_rust:install`: writes config/initializers/sidekiq_rust.rb (every key of
    # SidekiqRust::OPTIONS: the limits read from SIDEKIQ_MAX_RSS and SIDEKIQ_HARD_MAX_RSS, the others commented
    # with their default) and prints the next steps. Refuses to overwrite an
    # existing initializer unless given --force. Only Rails' generator lookup loads this file.
    class InstallGenerator < Rails::Generators::Base
      INITIALIZER = "config/initializers/sidekiq_rust.rb"

      source_root File.expand_path("templates", __dir__)
      desc "Creates #{INITIALIZER} (the memory guard's settings, each with its default) and prints the next steps"

      # A refusal (the initializer exists) exits 1, as a failed command should.
      def self.exit_on_failure?
        true
      end

      def create_initializer
        if File.exist?(File.join(destination_root, INITIALIZER)) && !options[:force]
          raise Thor::Error, "sidekiq_rust: #{INITIALIZER} already exists and was left as it is; " \
                             "run `bin/rails generate sidekiq_rust:install --force` to overwrite it"
        end
        template "initializer.rb.tt", INITIALIZER
      end

      def show_next_steps
        say File.read(File.expand_path("templates/next_steps.txt", __dir__))
      end

      private

      # The initializer's line for an option of SidekiqRust::OPTIONS: read from its ENV variable, or its default
      # commented out (`# c.grace_time = 60`).
      def assignment(option)
        return "# c.#{option.key} = #{option.default.inspect}" unless option.env
        return "c.#{option.key} = ENV[#{option.env.inspect}]" if option.default.nil? && !option.env_fallback

        "c.#{option.key} = ENV.fetch(#{option.env.inspect}) { #{option.env_fallback || option.default.inspect} }"
      end

      # An option's summary as comment lines of at most 116 characters.
      def comment_lines(text)
        text.scan(/\S.{0,112}(?=\s|\z)/)
      end
    end
  end
end
