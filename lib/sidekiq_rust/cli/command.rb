# frozen_string_literal: true

require "optparse"

module SidekiqRust
  class CLI
    # What the subcommands share: their streams and environment, the run (options, --help, usage errors, a
    # closed pipe), and the checks of numeric options. A subcommand defines NAME, HELP, `parse(argv)` (a Struct
    # with `help`) and `execute(options)`, which returns the exit status.
    class Command
      def initialize(out: $stdout, err: $stderr, env: ENV)
        @out = out
        @err = err
        @env = env
      end

      def run(argv)
        options = parse(argv)
        if options.help
          @out.puts(self.class::HELP)
          return EXIT_OK
        end

        execute(options)
      rescue UsageError => e
        @err.puts("sidekiq_rust #{self.class::NAME}: #{e.message}")
        @err.puts(self.class::HELP)
        EXIT_USAGE
      rescue ConfigurationError => e # e.g. an unreadable config/sidekiq.yml
        @err.puts("sidekiq_rust #{self.class::NAME}: #{e.message}")
        EXIT_PROBLEMS
      rescue Errno::EPIPE # the reader went away (`sidekiq_rust top | head`)
        EXIT_OK
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

      # Says that Redis cannot be reached and returns the problems exit status; re-raises any other error (and
      # a closed output pipe, which #run answers).
      def redis_failure(error)
        raise error if error.is_a?(Errno::EPIPE) || !redis_error?(error)

        @err.puts("sidekiq_rust #{self.class::NAME}: cannot reach Redis (#{error.class}: #{error.message}): check --redis-url " \
                  "or REDIS_URL, and that the server runs")
        EXIT_PROBLEMS
      end
    end
  end
end
