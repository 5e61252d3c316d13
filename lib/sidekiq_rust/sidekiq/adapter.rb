# frozen_string_literal: true

require "socket"

module SidekiqRust
  # The few places where Sidekiq 6.4, 7.x and 8.x differ, in one file.
  module SidekiqAdapter
    module_function

    def major
      Sidekiq::VERSION.to_i
    end

    # Sidekiq's shutdown timeout (-t), in seconds.
    def timeout(config = nil)
      Float(setting(config, :timeout) || 25)
    end

    # Sidekiq's concurrency: -c, and on 7+ the sum over every capsule (each runs that many job threads).
    def concurrency(config = nil)
      return setting(config, :concurrency)&.to_i if major < 7

      config ||= Sidekiq.default_configuration
      config.capsules.empty? ? config[:concurrency]&.to_i : config.total_concurrency
    end

    # The server middleware chains jobs may run through: 7.x runs a capsule's jobs through the capsule's own copy
    # of the configuration's chain, made when the capsule first asks for it (an initializer that sets up a
    # capsule's middleware copies it early); 8.x through the configuration's chain.
    def server_chains(config = nil)
      return [Sidekiq.server_middleware] if major < 7

      config ||= Sidekiq.default_configuration
      [config.server_middleware] + config.capsules.each_value.map(&:server_middleware)
    end

    # Puts BrakeFetch in front of the configured fetcher (before any processor fetches: at :startup), once.
    def install_brake_fetch(config = nil)
      if major < 7
        require "sidekiq/fetch"
        fetch = Sidekiq.options[:fetch] || Sidekiq::BasicFetch.new(Sidekiq.options)
        Sidekiq.options[:fetch] = BrakeFetch.new(fetch) unless fetch.is_a?(BrakeFetch)
      else
        config ||= Sidekiq.default_configuration
        return if config[:fetch_class] == BrakeFetch

        config[BrakeFetch::INNER] = config[:fetch_class]
        config[:fetch_class] = BrakeFetch
      end
    end

    # A value of Sidekiq's own configuration: 7.x keeps it in a Config object, 6.x in Sidekiq.options.
    def setting(config, key)
      major >= 7 ? (config || Sidekiq.default_configuration)[key] : Sidekiq.options[key]
    end

    def logger
      Sidekiq.logger
    end

    # Sidekiq 7+ embedded (Sidekiq.configure_embed): Sidekiq runs inside another program's process (Puma, a
    # console), not under the `sidekiq` command, so this process is not Sidekiq's to signal.
    def embedded?
      major >= 7 && !Sidekiq.server?
    end

    # Yields a connection that answers `call(*command)` (redis-rb 4.x and redis-client alike).
    def redis(&block)
      Sidekiq.redis(&block)
    end

    # The live processes of the fleet, from Sidekiq's heartbeats (which lag by one beat).
    def processes
      require "sidekiq/api"
      Sidekiq::ProcessSet.new.to_a
    end

    # Puts a job (its JSON payload) into Sidekiq's dead set, calling the death handlers with `exception`
    # (DeadSet#kill takes the same arguments in 6.4, 7.x and 8.x).
    def kill_job(payload, exception)
      require "sidekiq/api"
      Sidekiq::DeadSet.new.kill(payload, ex: exception)
    end

    # The name Sidekiq files this host's processes under.
    def hostname
      ENV["DYNO"] || Socket.gethostname
    end

    # A process's name everywhere (restart slots, logs, top, on_restart): Sidekiq's own identity,
    # "hostname:pid:nonce", as Sidekiq::ProcessSet shows it.
    def tag_of(process)
      process["identity"]
    end

    # This process's Sidekiq identity (the same value its heartbeat carries). Sidekiq keeps it in a class variable
    # of Sidekiq::Util (6.x) or Sidekiq::Component (7.x).
    def own_tag
      if major >= 7
        require "sidekiq/component"
        Object.new.extend(Sidekiq::Component).identity
      else
        require "sidekiq/util"
        Object.new.extend(Sidekiq::Util).identity
      end
    end
  end
end
