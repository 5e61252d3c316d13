# frozen_string_literal: true

require_relative "doctor/allocator"
require_relative "doctor/container"
require_relative "doctor/brake"
require_relative "doctor/fragmentation"

module SidekiqRust
  # The checks the blog posts do by hand, each with what it saw and what to do.
  #
  #   SidekiqRust::Doctor.run(concurrency: 10, timeout: 25).each { |c| puts c.line }
  #
  # Statuses: :pass, :warn, :fail, plus :info (reported, not judged) and :skip (does not apply here).
  module Doctor
    Check = Struct.new(:name, :status, :saw, :todo, keyword_init: true) do
      def line
        text = format("%-4<status>s %-13<name>s %<saw>s", status: status.to_s.upcase, name: name, saw: saw)
        todo ? "#{text}\n                   #{todo}" : text
      end

      def problem?
        status == :fail
      end
    end

    GC_ENV_PREFIXES = %w[RUBY_GC_ RUBY_YJIT MALLOC_ LD_PRELOAD GLIBC_TUNABLES].freeze

    module_function

    # Runs every check. Arguments not given are read from the running Sidekiq (if any) and SidekiqRust:
    #   settings:          the guard's Settings (default: SidekiqRust.settings, nil when not configured, the
    #                      ConfigurationError when this environment cannot resolve them)
    #   concurrency:       Sidekiq's concurrency (for the ActiveRecord pool check)
    #   timeout:           Sidekiq's shutdown timeout, -t (default: Sidekiq's own setting)
    #   timeout_stop_sec:  the systemd unit's TimeoutStopSec, when there is one
    #   redis:             false to leave Redis out (e.g. at boot, when Sidekiq checks it itself)
    #   fleet:             true to judge the allocator of the app's live guarded processes (History, in Redis)
    #                      rather than this process's (the command line's doctor; a booting Sidekiq judges itself)
    #   cgroup, oom, pressure: Memory.cgroup, Memory.cgroup_oom and Memory.pressure, for tests
    def run(settings: configured_settings, concurrency: nil, timeout: nil, timeout_stop_sec: nil, redis: true,
            fleet: false, cgroup: Memory.cgroup, oom: Memory.cgroup_oom, pressure: Memory.pressure, env: ENV)
      timeout ||= sidekiq_timeout
      processes = redis ? recorded_processes : nil
      allocator = fleet ? Allocator.check(processes: processes, env: env) : Allocator.this_process(env)
      checks = [allocator, activerecord_pool(concurrency || sidekiq_concurrency), limits(settings, cgroup),
                Container.check(settings, cgroup: cgroup, oom: oom, pressure: pressure),
                Brake.check(settings, rss: Memory.rss, concurrency: concurrency || sidekiq_concurrency),
                timeouts(settings.is_a?(Settings) ? settings : nil, timeout, timeout_stop_sec)]
      checks << redis_check if redis
      checks << Fragmentation.check(processes: processes)
      checks << gc_environment(env)
      checks
    end

    # The allocator check of this process (Allocator.check judges the guarded processes).
    def allocator(env)
      Allocator.this_process(env)
    end

    def activerecord_pool(concurrency)
      unless defined?(::ActiveRecord::Base)
        return Check.new(name: "db pool", status: :skip,
                         saw: "ActiveRecord is not loaded (run with --require ./config/environment)")
      end

      pool = ::ActiveRecord::Base.connection_pool.size
      if concurrency.nil?
        return Check.new(name: "db pool", status: :warn, saw: "ActiveRecord pool #{pool}, Sidekiq concurrency unknown",
                         todo: "give --concurrency N (Sidekiq's -c) to compare them")
      end
      if pool >= concurrency
        Check.new(name: "db pool", status: :pass, saw: "ActiveRecord pool #{pool} >= Sidekiq concurrency #{concurrency}")
      else
        Check.new(name: "db pool", status: :fail,
                  saw: "ActiveRecord pool #{pool} < Sidekiq concurrency #{concurrency}",
                  todo: "jobs will wait for connections and fail with \"could not obtain a connection from the pool " \
                        "within 5.000 seconds\": set pool to at least #{concurrency} in config/database.yml, plus " \
                        "one for every thread your jobs start themselves (they need connections too)")
      end
    rescue StandardError => e
      Check.new(name: "db pool", status: :warn, saw: "could not read the ActiveRecord pool: #{e.message}")
    end

    def limits(settings, cgroup)
      unless settings
        return Check.new(name: "limits", status: :warn, saw: "the guard is not configured",
                         todo: "add SidekiqRust.configure { |c| c.max_rss = \"1.5GB\" } to an initializer")
      end
      if settings.is_a?(ConfigurationError)
        return Check.new(name: "limits", status: :fail, saw: "the guard would not start here: #{settings.message}",
                         todo: "Sidekiq would fail at boot on this machine with this environment")
      end

      limit = cgroup && cgroup[:limit]
      soft = Units.mb(settings.max_rss)
      hard = Units.mb(settings.hard_max_rss)
      return Check.new(name: "limits", status: :pass, saw: "max_rss #{soft}, hard #{hard}; no cgroup limit") unless limit

      over = { "max_rss" => settings.max_rss, "hard_max_rss" => settings.hard_max_rss }
             .select { |_, bytes| bytes && bytes >= limit }.keys
      if over.empty?
        Check.new(name: "limits", status: :pass,
                  saw: "max_rss #{soft}, hard #{hard} below the cgroup limit #{Units.mb(limit)}")
      else
        Check.new(name: "limits", status: :fail,
                  saw: "#{over.join(' and ')} not below the cgroup limit #{Units.mb(limit)} " \
                       "(max_rss #{soft}, hard #{hard})",
                  todo: "the kernel OOM-kills the container before the guard can restart gracefully: " \
                        "set the limits below #{Units.mb(limit)}, e.g. max_rss \"75%\", hard_max_rss \"90%\"")
      end
    end

    def timeouts(settings, timeout, timeout_stop_sec)
      problems = []
      saw = ["Sidekiq timeout #{timeout}s"]
      if settings
        kill_after = Configuration.kill_after(settings.kill_after, timeout)
        saw << "guard kill_after #{kill_after}s"
        if kill_after <= timeout
          problems << "kill_after (#{kill_after}s) must exceed Sidekiq's timeout (#{timeout}s), or the guard " \
                      "KILLs before Sidekiq has pushed unfinished jobs back"
        end
      end
      if timeout_stop_sec
        saw << "systemd TimeoutStopSec #{timeout_stop_sec}s"
        if timeout_stop_sec <= timeout + 5
          problems << "TimeoutStopSec (#{timeout_stop_sec}s) must exceed Sidekiq's timeout (#{timeout}s) by a few " \
                      "seconds, or systemd KILLs Sidekiq before it requeues unfinished jobs " \
                      "(`sidekiq_rust systemd` writes a consistent unit)"
        end
      end
      status = problems.empty? ? :pass : :fail
      Check.new(name: "timeouts", status: status, saw: saw.join(", "), todo: problems.empty? ? nil : problems.join("; "))
    end

    def redis_check
      rtts = []
      policy = nil
      SidekiqAdapter.redis do |conn|
        5.times do
          started = Process.clock_gettime(Process::CLOCK_MONOTONIC)
          conn.call("PING")
          rtts << (Process.clock_gettime(Process::CLOCK_MONOTONIC) - started)
        end
        policy = begin
          reply = conn.call("CONFIG", "GET", "maxmemory-policy")
          # RESP3 (redis-client) answers a Hash, RESP2 (redis-rb 4) a flat [name, value] Array.
          reply.is_a?(Hash) ? reply["maxmemory-policy"] : Array(reply)[1]
        rescue StandardError
          nil
        end
      end
      rtt = format("%.2fms", rtts.min * 1000)
      case policy
      when "noeviction"
        Check.new(name: "redis", status: :pass, saw: "reachable, round trip #{rtt}, maxmemory-policy noeviction")
      when nil
        Check.new(name: "redis", status: :warn, saw: "reachable, round trip #{rtt}, maxmemory-policy unreadable",
                  todo: "CONFIG GET is disabled here: make sure the policy is noeviction")
      else
        Check.new(name: "redis", status: :fail, saw: "reachable, round trip #{rtt}, maxmemory-policy #{policy}",
                  todo: "Redis may evict Sidekiq's jobs under memory pressure: set maxmemory-policy noeviction")
      end
    rescue StandardError => e
      Check.new(name: "redis", status: :fail, saw: "unreachable: #{e.class}: #{e.message}",
                todo: "check REDIS_URL / Sidekiq's redis configuration and that the server runs")
    end

    # The guarded processes' records (History), nil when Redis cannot be read.
    def recorded_processes
      History.processes
    rescue StandardError
      nil
    end

    def gc_environment(env)
      vars = env.keys.select { |k| GC_ENV_PREFIXES.any? { |p| k.start_with?(p) } }.sort
      saw = vars.empty? ? "no GC or malloc variables set" : vars.map { |k| "#{k}=#{env[k]}" }.join(" ")
      Check.new(name: "gc env", status: :info, saw: saw)
    end

    # SidekiqRust.settings, or the ConfigurationError saying why this environment cannot resolve them.
    def configured_settings
      SidekiqRust.settings
    rescue ConfigurationError => e
      e
    end

    def sidekiq_timeout
      defined?(::Sidekiq) ? SidekiqAdapter.timeout : 25.0
    end

    def sidekiq_concurrency
      return nil unless defined?(::Sidekiq)

      SidekiqAdapter.concurrency
    end
  end
end
