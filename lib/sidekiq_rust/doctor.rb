# frozen_string_literal: true

require_relative "doctor/check"
require_relative "doctor/allocator_check"
require_relative "doctor/db_pool_check"
require_relative "doctor/limits_check"
require_relative "doctor/container_check"
require_relative "doctor/brake_check"
require_relative "doctor/timeouts_check"
require_relative "doctor/redis_check"
require_relative "doctor/fragmentation_check"
require_relative "doctor/gc_env_check"

module SidekiqRust
  # The checks the blog posts do by hand, each with what it saw and what to do.
  #
  #   SidekiqRust::Doctor.run(concurrency: 10, timeout: 25).each { |c| puts c.line }
  #
  # Statuses: :pass, :warn, :fail, plus :info (reported, not judged) and :skip (does not apply here).
  module Doctor
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
      allocator = fleet ? AllocatorCheck.check(processes: processes, env: env) : AllocatorCheck.this_process(env)
      checks = [allocator, DbPoolCheck.check(concurrency || sidekiq_concurrency), LimitsCheck.check(settings, cgroup),
                ContainerCheck.check(settings, cgroup: cgroup, oom: oom, pressure: pressure),
                BrakeCheck.check(settings, rss: Memory.rss, concurrency: concurrency || sidekiq_concurrency),
                TimeoutsCheck.check(settings.is_a?(Settings) ? settings : nil, timeout, timeout_stop_sec)]
      checks << RedisCheck.check if redis
      checks << FragmentationCheck.check(processes: processes)
      checks << GcEnvCheck.check(env)
      checks
    end

    # The allocator check of this process (AllocatorCheck.check judges the guarded processes).
    def allocator(env)
      AllocatorCheck.this_process(env)
    end

    # The guarded processes' records (History), nil when Redis cannot be read.
    def recorded_processes
      History.processes
    rescue StandardError
      nil
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
