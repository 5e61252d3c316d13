# frozen_string_literal: true

module SidekiqRust
  class CLI
    # The app's configuration as `kubernetes` and `systemd` take it, so that what they print runs the app as it is
    # configured and assumes nothing it does not set:
    # - the guard's settings from the app's SidekiqRust.configure, once the -r files are loaded (e.g.
    #   ./config/environment); nil when no file was given;
    # - the variables of the options table (SIDEKIQ_MAX_RSS, SIDEKIQ_HARD_MAX_RSS: what the generated initializer
    #   reads) set in this environment, for the unit's Environment= lines and the manifest's env. Only those:
    #   other SIDEKIQ_* variables may hold secrets (a Web UI password) that a printed unit must not carry.
    class AppConfiguration
      VARIABLES = SidekiqRust::OPTIONS.filter_map(&:env).freeze

      attr_reader :requires, :configuration, :variables

      # Loads the `requires` files; a file that cannot be loaded, or that configures no guard, is a UsageError.
      def initialize(requires, env)
        @requires = requires
        @configuration = load_app(requires)
        @variables = VARIABLES.each_with_object({}) do |name, found|
          found[name] = env[name] unless env[name].to_s.empty?
        end
      end

      def given?
        !@configuration.nil?
      end

      # Where the settings come from, for the printed comments: "the app's configuration (-r ./config/environment)".
      def source
        "the app's configuration (-r #{@requires.join(', -r ')})"
      end

      private

      def load_app(requires)
        return nil if requires.empty?

        requires.each do |file|
          require File.expand_path(file)
        rescue LoadError => e
          raise UsageError, "-r #{file}: cannot load it (#{e.message})"
        end
        SidekiqRust.configuration ||
          raise(UsageError, "-r #{requires.join(', -r ')}: loaded, but it calls no SidekiqRust.configure: the " \
                            "guard would not start (bin/rails generate sidekiq_rust:install writes the initializer)")
      end
    end
  end
end
