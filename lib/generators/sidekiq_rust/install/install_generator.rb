# frozen_string_literal: true

require "rails/generators"
require "sidekiq_rust/configuration"

module SidekiqRust
  module Generators
    # `bin/rails generate sidekiq_rust:install`: writes config/initializers/sidekiq_rust.rb (every key of
    # SidekiqRust::OPTIONS: the limits read from SIDEKIQ_MAX_RSS and SIDEKIQ_HARD_MAX_RSS, the others commented
    # with their default) and config/sidekiq.yml (what the printed start command reads), and prints the next
    # steps. Only Rails' generator lookup loads this file.
    #
    # Without --force, it overwrites neither file:
    # - an existing initializer means the generator ran already (or the app configured the gem by hand): it
    #   refuses, writes nothing and exits 1;
    # - an existing config/sidekiq.yml is the app's own Sidekiq configuration (its queues, weights and
    #   concurrency), the usual case when Sidekiq ran before the gem came: it is left as it is, said so, and the
    #   generator goes on (the printed command reads it as it is).
    class InstallGenerator < Rails::Generators::Base
      INITIALIZER = "config/initializers/sidekiq_rust.rb"
      SIDEKIQ_CONFIG = "config/sidekiq.yml"

      source_root File.expand_path("templates", __dir__)
      desc "Creates #{INITIALIZER} (the memory guard's settings, each with its default) and #{SIDEKIQ_CONFIG} " \
           "(unless the app has one), and prints the next steps"

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

      # Copied, not rendered: its ERB is Sidekiq's, read at each start.
      def create_sidekiq_config
        if File.exist?(File.join(destination_root, SIDEKIQ_CONFIG)) && !options[:force]
          say_status :exist, "#{SIDEKIQ_CONFIG} (the app's own, left as it is; --force replaces it)", :blue
          return
        end
        copy_file "sidekiq.yml", SIDEKIQ_CONFIG
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
