# frozen_string_literal: true

require "rails/generators"
require "sidekiq_rust/configuration"

module SidekiqRust
  module Generators
    # `bin/rails generate sidekiq_rust:install`: writes config/initializers/sidekiq_rust.rb (every key of
    # SidekiqRust::Configuration, commented, with its default) and prints the next steps. Refuses to overwrite an
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

      # A key's default as Ruby source, for the template (`# c.grace_time = 60`).
      def default(key)
        defaults.public_send(key).inspect
      end

      def defaults
        @defaults ||= SidekiqRust::Configuration.new
      end
    end
  end
end
