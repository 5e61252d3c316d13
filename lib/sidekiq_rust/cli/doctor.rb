# frozen_string_literal: true

require "json"
require "optparse"

module SidekiqRust
  class CLI
    # `sidekiq_rust doctor [options]`: runs SidekiqRust::Doctor and prints PASS / WARN / FAIL lines (or JSON).
    # Loaded by lib/sidekiq_rust/cli.rb, which defines the exit statuses and UsageError used here.
    class Doctor < Command
      NAME = "doctor"
      SUMMARY = "check the allocator, DB pool, limits, timeouts, Redis and GC settings"

      HELP = <<~TEXT
        Usage: sidekiq_rust doctor [options]

        Checks what usually goes wrong with Sidekiq memory and shutdowns, and says what to do:
          allocator  the app's live guarded processes (what each recorded in Redis): on jemalloc? Without one
                     live (or with --no-redis), this process: jemalloc, or glibc with MALLOC_ARENA_MAX?
          db pool    ActiveRecord's pool >= Sidekiq's concurrency (when ActiveRecord is loaded: use --require)
          limits     the guard's max_rss / hard_max_rss below the container's memory limit
          container  the memory cgroup: its limit, room for the hard limit under it, whether an OOM kill takes one
                     process or the whole group, OOM kills so far, memory pressure (PSI)
          brake      where the memory brake pauses and resumes, and whether a booted process is already above
                     resume_at (the brake would then let go at once)
          timeouts   Sidekiq's -t vs the guard's kill_after and systemd's TimeoutStopSec
          redis      reachable, round-trip time, maxmemory-policy noeviction
          gc env     the RUBY_GC_* / MALLOC_* variables in effect (reported, not judged)

        At a Rails root (./config/environment.rb exists) it loads the app first, as `sidekiq` does, and it reads
        Sidekiq's configuration file the way `sidekiq` does (config/sidekiq.yml or -C FILE, ERB, the section of
        the environment: -e, APP_ENV, RAILS_ENV, RACK_ENV or development).

        Options:
          -r, --require FILE        load FILE first, e.g. -r ./config/environment (repeatable; replaces the
                                    Rails app loaded by default)
              --no-app              do not load ./config/environment.rb
          -C, --config FILE         Sidekiq's configuration file (default: config/sidekiq.yml when present)
          -e, --environment ENV     the environment whose section of the file applies
          -c, --concurrency N       Sidekiq's concurrency (default: the file, then Sidekiq's configuration)
          -t, --timeout N           Sidekiq's shutdown timeout in seconds (default: the file, then Sidekiq's)
              --timeout-stop-sec N  the systemd unit's TimeoutStopSec, to check it too
              --redis-url URL       the Redis to check (default: Sidekiq's configuration / REDIS_URL)
              --no-redis            leave Redis out
              --json                print JSON
          -h, --help                show this help

        Exit status: 0 no FAIL (WARN is advice), 1 at least one FAIL, 2 usage error.
      TEXT

      Options = Struct.new(:help, :requires, :app, :config_file, :environment, :concurrency, :timeout,
                           :timeout_stop_sec, :redis_url, :redis, :json, keyword_init: true)

      # What `sidekiq` loads at a Rails root.
      RAILS_ENVIRONMENT = "config/environment.rb"

      def execute(options)
        file_check = read_sidekiq_config(options)
        load_app(options)
        configure_redis(options.redis_url) if options.redis
        checks = SidekiqRust::Doctor.run(concurrency: options.concurrency, timeout: options.timeout,
                                         timeout_stop_sec: options.timeout_stop_sec, redis: options.redis,
                                         fleet: true, env: @env)
        checks.unshift(file_check)
        print_checks(checks, options.json)
        checks.any?(&:problem?) ? EXIT_PROBLEMS : EXIT_OK
      end

      def parse(argv)
        options = Options.new(help: false, requires: [], app: true, redis: true, json: false)
        parser = OptionParser.new
        parser.on("-h", "--help") { options.help = true }
        parser.on("-r", "--require FILE") { |f| options.requires << f }
        parser.on("--[no-]app") { |a| options.app = a }
        parser.on("-C", "--config FILE") { |f| options.config_file = f }
        parser.on("-e", "--environment ENV") { |e| options.environment = e }
        parser.on("-c", "--concurrency N", Integer) { |n| options.concurrency = positive(n, "--concurrency") }
        parser.on("-t", "--timeout N", Float) { |n| options.timeout = positive(n, "--timeout") }
        parser.on("--timeout-stop-sec N", Float) { |n| options.timeout_stop_sec = positive(n, "--timeout-stop-sec") }
        parser.on("--redis-url URL") { |u| options.redis_url = u }
        parser.on("--[no-]redis") { |r| options.redis = r }
        parser.on("--json") { options.json = true }
        parse_all(parser, argv)
        options
      end

      private

      # Fills concurrency and timeout from Sidekiq's configuration file where the command line did not give them;
      # returns the check line saying what was read.
      def read_sidekiq_config(options)
        environment = options.environment || SidekiqConfigFile.environment(@env)
        path = options.config_file || SidekiqConfigFile.find
        unless path
          return SidekiqRust::Doctor::Check.new(name: "sidekiq", status: :info,
                                                saw: "no config/sidekiq.yml here; Sidekiq's defaults apply")
        end
        raise UsageError, "--config #{path}: no such file" unless File.exist?(path)

        file = SidekiqConfigFile.read(path, environment: environment)
        options.concurrency ||= file[:concurrency] && Integer(file[:concurrency])
        options.timeout ||= file[:timeout] && Float(file[:timeout])
        SidekiqRust::Doctor::Check.new(
          name: "sidekiq", status: :info,
          saw: "#{path} (#{environment}): concurrency #{file[:concurrency] || 'not set'}, " \
               "timeout #{file[:timeout] || 'not set'}"
        )
      rescue ConfigurationError, ArgumentError, TypeError => e
        SidekiqRust::Doctor::Check.new(name: "sidekiq", status: :fail, saw: e.message,
                                       todo: "sidekiq itself would fail to start with this file")
      end

      # Loads the -r files, or the Rails app at a Rails root, with Sidekiq's environment set as `sidekiq` sets it.
      def load_app(options)
        requires = options.requires
        requires = ["./#{RAILS_ENVIRONMENT}"] if requires.empty? && options.app && File.exist?(RAILS_ENVIRONMENT)
        return if requires.empty?

        environment = options.environment || SidekiqConfigFile.environment(@env)
        ENV["RAILS_ENV"] = ENV["RACK_ENV"] = environment
        requires.each { |file| require File.expand_path(file) }
      end

      def configure_redis(url)
        require "sidekiq"
        Redis.silence_deprecations = true if defined?(Redis) && Redis.respond_to?(:silence_deprecations=)
        Sidekiq.logger.level = Logger::WARN # its "connecting to Redis" line would mix with the report
        Sidekiq.configure_client { |c| c.redis = { url: url } } if url
      end

      def print_checks(checks, json)
        if json
          @out.puts(JSON.pretty_generate(checks: checks.map(&:to_h), problems: checks.count(&:problem?)))
        else
          checks.each { |check| @out.puts(check.line) }
          fails = checks.count(&:problem?)
          warns = checks.count { |c| c.status == :warn }
          @out.puts("\n#{fails} problem(s), #{warns} warning(s)")
        end
      end
    end
  end
end
