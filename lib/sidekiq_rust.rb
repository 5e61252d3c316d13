# frozen_string_literal: true

require_relative "sidekiq_rust/version"
require_relative "sidekiq_rust/error"
require_relative "sidekiq_rust/native"
require_relative "sidekiq_rust/memory"
require_relative "sidekiq_rust/allocator"
require_relative "sidekiq_rust/configuration"
require_relative "sidekiq_rust/sidekiq_adapter"
require_relative "sidekiq_rust/fleet"
require_relative "sidekiq_rust/guard"
require_relative "sidekiq_rust/process_killer"
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

    # The validated Settings of the last `configure`.
    attr_reader :settings

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

    # Validates the configuration (raising ConfigurationError at boot) and, once per process, registers the
    # ProcessKiller middleware and the lifecycle hooks in Sidekiq's server configuration.
    def configure
      require "sidekiq"
      config = Configuration.new
      yield config if block_given?
      @settings = config.resolve
      register unless @registered
      @registered = true
      @settings
    end

    # The job classes that grew memory the most in this process: [{class:, count:, total_growth:, max_growth:}].
    def report(limit = 5)
      guard ? guard.report(limit) : []
    end

    # Starts the guard (Sidekiq's :startup event does this).
    def start_guard(sidekiq_config = nil)
      return @guard if @guard

      @guard = Guard.new(settings, sidekiq_timeout: SidekiqAdapter.timeout(sidekiq_config))
      @guard.start_monitor
      logger = settings.logger || SidekiqAdapter.logger
      logger.info("sidekiq_rust: guard started identity=#{SidekiqAdapter.own_tag} metric=#{settings.metric} " \
                  "limit=#{Settings.mb(settings.max_rss)} hard_limit=#{Settings.mb(settings.hard_max_rss)} " \
                  "allocator=#{Allocator.name} kill_after=#{@guard.kill_after}s dry_run=#{settings.dry_run}")
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
      chain.prepend(ProcessKiller) unless chain.exists?(ProcessKiller)
    end

    def register
      Sidekiq.configure_server do |sidekiq|
        sidekiq.server_middleware { |chain| first_in(chain) }
        sidekiq.on(:startup) do
          # Capsules (Sidekiq 7+) whose chain was copied before this registration get the middleware too.
          SidekiqAdapter.server_chains(sidekiq).each { |chain| first_in(chain) }
          SidekiqRust.start_guard(sidekiq)
        end
        sidekiq.on(:quiet) { SidekiqRust.guard&.stop_monitor }
        sidekiq.on(:shutdown) { SidekiqRust.guard&.stop_monitor }
      end
    end
  end
end
