# frozen_string_literal: true

require "optparse"

module SidekiqRust
  class CLI
    # What the option-parsing subcommands (doctor, top, systemd) share: their streams and environment, and the
    # checks of numeric options.
    class Command
      def initialize(out: $stdout, err: $stderr, env: ENV)
        @out = out
        @err = err
        @env = env
      end

      private

      # Runs `parser` over all of `argv`: an unknown option, a bad value or a stray argument is a UsageError.
      def parse_all(parser, argv)
        rest = parser.parse(argv)
        raise UsageError, "unexpected argument #{rest.first.inspect}" unless rest.empty?
      rescue OptionParser::ParseError => e
        raise UsageError, e.message
      end

      def positive(value, flag)
        raise UsageError, "#{flag} takes a number above 0, got #{value}" unless value.positive?

        value
      end

      # Loads Sidekiq's client side, quietly, and points it at `url` (nil: Sidekiq's configuration / REDIS_URL).
      def connect(url)
        require "sidekiq"
        require "sidekiq/api"
        Redis.silence_deprecations = true if defined?(Redis) && Redis.respond_to?(:silence_deprecations=)
        Sidekiq.logger.level = Logger::WARN # its "connecting to Redis" line would mix with the output
        Sidekiq.configure_client { |c| c.redis = { url: url } } if url
      end

      # A failure to reach Redis (redis-rb and redis-client errors, sockets).
      def redis_error?(error)
        names = error.class.ancestors.map(&:name).compact
        names.any? { |n| n.start_with?("Redis") } || error.is_a?(SystemCallError) || error.is_a?(IOError)
      end

      # Says that Redis cannot be reached and returns the problems exit status; re-raises any other error.
      def redis_failure(name, error)
        raise error unless redis_error?(error)

        @err.puts("sidekiq_rust #{name}: cannot reach Redis (#{error.class}: #{error.message}): check --redis-url " \
                  "or REDIS_URL, and that the server runs")
        EXIT_PROBLEMS
      end

      # Prints a usage error and the command's help; returns the usage exit status.
      def usage_error(name, error, help)
        @err.puts("sidekiq_rust #{name}: #{error.message}")
        @err.puts(help)
        EXIT_USAGE
      end
    end
  end
end
