# frozen_string_literal: true

require_relative "sidekiq_rust/version"
require_relative "sidekiq_rust/error"
require_relative "sidekiq_rust/units"
require_relative "sidekiq_rust/clock"
require_relative "sidekiq_rust/failure_notice"
require_relative "sidekiq_rust/native"
require_relative "sidekiq_rust/memory"
require_relative "sidekiq_rust/allocator"
require_relative "sidekiq_rust/configuration"
require_relative "sidekiq_rust/store/keys"
require_relative "sidekiq_rust/sidekiq/adapter"
require_relative "sidekiq_rust/sidekiq/config_file"
require_relative "sidekiq_rust/fleet"
require_relative "sidekiq_rust/quarantine"
require_relative "sidekiq_rust/history"
require_relative "sidekiq_rust/metrics"
require_relative "sidekiq_rust/attribution/report"
require_relative "sidekiq_rust/attribution/fragmentation"
require_relative "sidekiq_rust/attribution/verdict"
require_relative "sidekiq_rust/brake"
require_relative "sidekiq_rust/sidekiq/fetch"
require_relative "sidekiq_rust/guard"
require_relative "sidekiq_rust/sidekiq/middleware"
require_relative "sidekiq_rust/doctor"
require_relative "sidekiq_rust/jemalloc"

# Keeps Sidekiq worker processes' memory under control: exact and cheap memory readings,
# allocator reclaim, and graceful restarts that never lose a job nor stop the last process.
#
# In a Rails initializer:
#
#   SidekiqRust.configure do |c|
#     c.max_rss = "1.5GB"
#   end
module SidekiqRust
  class << self
    # The running guard of this Sidekiq server process, nil before startup and in client-only processes.
    attr_reader :guard

    # The Configuration that every `configure` block added to (nil before the first).
    attr_reader :configuration

    # The embedded Sidekiq instance handed to `embed`, nil otherwise.
    attr_reader :embedded

    # Lets the guard quiet and stop an embedded Sidekiq (Sidekiq 7+) when its process is over the limit; the
    # guard never signals a process Sidekiq shares with another program. Call it before `run`; returns the
    # instance:
    #
    #   SidekiqRust.embed(Sidekiq.configure_embed { |config| config.queues = %w[default] }).run
    def embed(instance)
      unless instance.respond_to?(:quiet) && instance.respond_to?(:stop)
        raise ConfigurationError, "SidekiqRust.embed: expected the instance Sidekiq.configure_embed returns " \
                                  "(it answers quiet and stop), got #{instance.class}"
      end
      @embedded = instance
    end

    # Adds the block's keys to the configuration (blocks add up, like Sidekiq.configure_server: a key a block
    # does not set keeps its value) and checks the form of every value, raising ConfigurationError on a typo.
    # What depends on the environment (a percentage of the cgroup limit, the required max_rss) is resolved when
    # the guard starts in a Sidekiq server, and nowhere else: a Rails console, `rails runner` or
    # `assets:precompile` is never stopped by it. Once per process, registers the Middleware (job counting) and
    # the lifecycle hooks in Sidekiq's server configuration. Returns the Configuration.
    def configure
      require "sidekiq"
      candidate = (@configuration || Configuration.new).dup
      yield candidate if block_given?
      @configuration = candidate.check
      @settings = nil
      register unless @registered
      @registered = true
      @configuration
    end

    # The Settings resolved for this process (bytes, seconds); nil when configure was never called. Raises
    # ConfigurationError when the environment cannot satisfy the configuration (a percentage without a cgroup
    # limit, no max_rss).
    def settings
      return nil unless @configuration

      @settings ||= @configuration.resolve
    end

    # Forgets the configuration (for tests; the registered hooks stay and do nothing without one).
    def reset_configuration
      stop_guard
      @configuration = nil
      @settings = nil
    end

    # This process's per-job-class memory figures, largest retained first: [{class:, jobs:, retained_per_job:,
    # growth_per_job:, allocated_per_job:}] (bytes, nil when unknown). The fleet's: Report.fleet.
    def report(limit: nil)
      guard ? guard.report(limit: limit) : []
    end

    # Starts the guard (Sidekiq's :startup event does this).
    def start_guard(sidekiq_config = nil)
      return @guard if @guard
      return nil unless @configuration

      @guard = Guard.new(settings, sidekiq_timeout: SidekiqAdapter.timeout(sidekiq_config),
                                   concurrency: SidekiqAdapter.concurrency(sidekiq_config))
      SidekiqAdapter.install_brake_fetch(sidekiq_config) if @guard.brake
      @guard.start_monitor
      logger = settings.logger || SidekiqAdapter.logger
      logger.info("sidekiq_rust: guard started identity=#{SidekiqAdapter.own_tag} metric=#{settings.metric} " \
                  "max_rss=#{Units.mb(settings.max_rss)} hard_max_rss=#{Units.mb(settings.hard_max_rss)} " \
                  "allocator=#{Allocator.name} kill_after=#{@guard.kill_after}s dry_run=#{settings.dry_run} " \
                  "brake=#{brake_text(@guard)}")
      log_doctor(logger, sidekiq_config) if settings.doctor_on_boot
      @guard
    end

    # Stops the guard's monitor and forgets the guard (for tests and embedding; Sidekiq's lifecycle does not
    # need it). A restart already under way goes on.
    def stop_guard
      @guard&.stop_monitor
      @guard = nil
    end

    private

    def brake_text(guard)
      return "off" unless guard.brake

      "#{Units.mb(settings.brake_bytes)}..#{Units.mb(settings.resume_bytes)}"
    end

    def log_doctor(logger, sidekiq_config)
      checks = Doctor.run(settings: settings, concurrency: SidekiqAdapter.concurrency(sidekiq_config),
                          timeout: SidekiqAdapter.timeout(sidekiq_config))
      checks.each do |check|
        next unless %i[warn fail].include?(check.status)

        logger.warn("sidekiq_rust doctor: #{check.status.upcase} #{check.name}: #{check.saw}" \
                    "#{check.todo ? " -- #{check.todo}" : ''}")
      end
    rescue StandardError => e
      logger.warn("sidekiq_rust doctor: could not run: #{e.class}: #{e.message}")
    end

    def first_in(chain)
      chain.prepend(Middleware) unless chain.exists?(Middleware)
    end

    def register
      Sidekiq.configure_server do |sidekiq|
        sidekiq.server_middleware { |chain| first_in(chain) }
        sidekiq.on(:startup) do
          # Capsules (Sidekiq 7+) whose chain was copied before this registration get the middleware too.
          SidekiqAdapter.server_chains(sidekiq).each { |chain| first_in(chain) }
          SidekiqRust.start_guard(sidekiq)
        end
        sidekiq.on(:quiet) { SidekiqRust.guard&.quieted }
        sidekiq.on(:shutdown) { SidekiqRust.guard&.shutting_down }
      end
    end
  end
end
