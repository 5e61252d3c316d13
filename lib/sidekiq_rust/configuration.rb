# frozen_string_literal: true

module SidekiqRust
  # What `SidekiqRust.configure { |c| ... }` sets. Two steps, each raising ConfigurationError naming the key, the
  # value and the accepted form:
  # - #check: the form of every value (a typo, "300 megs"), wherever configure runs (Rails console, rake);
  # - #resolve: what depends on the environment (a percentage of the cgroup limit, metric :cgroup, the required
  #   max_rss), only when the guard starts in a Sidekiq server, so that `rails runner`, `assets:precompile` and
  #   Docker builds are never broken by it.
  class Configuration
    SIZE_FORM = 'an Integer (MB), a String with a unit like "800MB" or "1.5GB", ' \
                'or a percentage of the cgroup memory limit like "80%"'
    METRICS = %i[rss pss cgroup].freeze
    UNITS = { "" => 1024**2, "B" => 1, "K" => 1024, "M" => 1024**2, "G" => 1024**3, "T" => 1024**4 }.freeze
    # The restart slot outlives a hung or killed process by this much, then expires by itself.
    SLOT_TTL_MARGIN = 60
    # Over the limit after the process's own Sidekiq timeout, KILL waits this much longer by default.
    KILL_AFTER_MARGIN = 15

    # The guard's kill_after: the one `given` (settings or a command-line option), else Sidekiq's timeout + 15.
    def self.kill_after(given, sidekiq_timeout)
      given || (sidekiq_timeout + KILL_AFTER_MARGIN)
    end

    # Soft limit: above it for `grace_time`, reclaim (if on), then restart.
    attr_accessor :max_rss
    # Hard limit: above it, restart at once (no grace, no reclaim). nil: none.
    attr_accessor :hard_max_rss
    # Seconds memory may stay above the soft limit.
    attr_accessor :grace_time
    # What the limits are compared with: :rss, :pss or :cgroup (the cgroup's usage).
    attr_accessor :metric
    # Seconds between the monitor's readings (it catches idle processes).
    attr_accessor :check_interval
    # Try GC + Allocator.purge before restarting; restart only if still over.
    attr_accessor :reclaim
    # Seconds before another reclaim may be tried.
    attr_accessor :reclaim_cooldown
    # Seconds after boot during which a soft-limit restart with little reclaimed is a restart loop (0: off).
    attr_accessor :loop_window
    # Seconds to wait for busy jobs after quiet, before TERM.
    attr_accessor :shutdown_wait
    # Seconds after TERM before KILL (only a hung process gets it). nil: Sidekiq's timeout + 15.
    attr_accessor :kill_after
    # How many processes of the fleet may restart at the same time.
    attr_accessor :max_concurrent_restarts
    # Restart only when another live process is serving.
    attr_accessor :require_other_process
    # Log what would happen; never quiet, stop or kill.
    attr_accessor :dry_run
    # Called with a Hash describing each restart (or dry-run decision).
    attr_accessor :on_restart
    # Where the guard logs; nil: Sidekiq.logger.
    attr_accessor :logger
    # Run SidekiqRust::Doctor at Sidekiq's startup and log its WARN and FAIL lines.
    attr_accessor :doctor_on_boot
    # Seconds between the monitor's measuring reclaims (GC + purge) that give the per-class retained figure;
    # never more than 5% of the process's time. nil: none (only the guard's own reclaims measure).
    attr_accessor :measure_interval
    # A job in flight at this many memory restarts goes to Sidekiq's dead set instead of being requeued again
    # (a poison pill); 0: off.
    attr_accessor :quarantine_after
    # The memory brake: above brake_at (a share of max_rss) the process fetches no new job until memory is below
    # resume_at (a share of max_rss below brake_at), then lets the job threads fetch again a few at a time.
    attr_accessor :brake
    attr_accessor :brake_at
    attr_accessor :resume_at
    # Memory pressure (PSI "some" avg10, percent) at which the brake pauses too, whatever the memory figure; nil:
    # pressure is not looked at.
    attr_accessor :brake_pressure

    def initialize
      @max_rss = nil
      @hard_max_rss = nil
      @grace_time = 60
      @metric = :rss
      @check_interval = 5
      @reclaim = true
      @reclaim_cooldown = 300
      @loop_window = 600
      @shutdown_wait = 60
      @kill_after = nil
      @max_concurrent_restarts = 1
      @require_other_process = true
      @dry_run = false
      @on_restart = nil
      @logger = nil
      @doctor_on_boot = false
      @measure_interval = 60
      @quarantine_after = 2
      @brake = true
      @brake_at = 0.9
      @resume_at = 0.8
      @brake_pressure = 20
    end

    # Checks the form of every value, without looking at the environment; returns self.
    def check
      metric_name
      soft = size_form(:max_rss, max_rss)
      hard = size_form(:hard_max_rss, hard_max_rss)
      compare_limits(soft, hard) if soft&.first == :bytes && hard&.first == :bytes
      settings_without_limits
      self
    end

    # Validates every key against this process's environment and returns frozen Settings in bytes and seconds.
    # `cgroup` is the memory cgroup ({usage:, limit:} or nil), needed for "80%" limits and metric :cgroup.
    def resolve(cgroup: Memory.cgroup)
      metric = resolve_metric(cgroup)
      soft = size(:max_rss, max_rss, cgroup, required: true)
      hard = size(:hard_max_rss, hard_max_rss, cgroup, required: false)
      compare_limits([:bytes, soft], hard && [:bytes, hard])
      Settings.new(max_rss: soft, hard_max_rss: hard, metric: metric, **settings_without_limits).freeze
    end

    private

    def compare_limits(soft, hard)
      return unless soft && hard && hard.last <= soft.last

      fail_key(:hard_max_rss, hard_max_rss, "a limit above max_rss (#{Units.mb(soft.last)})")
    end

    # Every key but the limits and the metric: they depend on nothing but their own value.
    def settings_without_limits
      {
        grace_time: seconds(:grace_time, grace_time, allow_zero: true),
        check_interval: seconds(:check_interval, check_interval, allow_zero: false),
        reclaim: boolean(:reclaim, reclaim),
        reclaim_cooldown: seconds(:reclaim_cooldown, reclaim_cooldown, allow_zero: true),
        shutdown_wait: seconds(:shutdown_wait, shutdown_wait, allow_zero: true),
        kill_after: kill_after.nil? ? nil : seconds(:kill_after, kill_after, allow_zero: false),
        max_concurrent_restarts: integer(:max_concurrent_restarts, max_concurrent_restarts, minimum: 1),
        require_other_process: boolean(:require_other_process, require_other_process),
        dry_run: boolean(:dry_run, dry_run),
        on_restart: callable(:on_restart, on_restart),
        logger: resolve_logger,
        doctor_on_boot: boolean(:doctor_on_boot, doctor_on_boot),
        measure_interval: measure_interval.nil? ? nil : seconds(:measure_interval, measure_interval, allow_zero: false),
        loop_window: seconds(:loop_window, loop_window, allow_zero: true),
        quarantine_after: integer(:quarantine_after, quarantine_after, minimum: 0),
        brake: boolean(:brake, brake),
        brake_pressure: brake_pressure.nil? ? nil : percentage(:brake_pressure, brake_pressure),
        **brake_shares
      }
    end

    # brake_at and resume_at: shares of max_rss, resume_at below brake_at.
    def brake_shares
      at = share(:brake_at, brake_at, "a share of max_rss above 0.5 and at most 1.0, like 0.9", 0.5)
      resume = share(:resume_at, resume_at, "a share of max_rss above 0.3 and below brake_at (#{at}), like 0.8", 0.3)
      fail_key(:resume_at, resume_at, "a share of max_rss below brake_at (#{at}), like #{(at - 0.1).round(2)}") if
        resume >= at
      { brake_at: at, resume_at: resume }
    end

    def percentage(key, value)
      n = number(value)
      form = "a percentage of memory pressure above 0 and at most 100 (PSI some avg10), or nil (not looked at)"
      fail_key(key, value, form) unless n && n.finite? && n.positive? && n <= 100
      n.to_f
    end

    def share(key, value, form, above)
      n = number(value)
      fail_key(key, value, form) unless n && n.finite? && n > above && n <= 1
      n.to_f
    end

    def fail_key(key, value, form)
      raise ConfigurationError, "sidekiq_rust: #{key} is #{value.inspect}; expected #{form}"
    end

    def size(key, value, cgroup, required:)
      return nil if value.nil? && !required
      fail_key(key, value, "#{SIZE_FORM} (it is required; it is checked when the Sidekiq server starts)") if
        value.nil?

      kind, amount = size_form(key, value)
      return amount if kind == :bytes

      limit = cgroup && cgroup[:limit]
      unless limit
        fail_key(key, value, "#{SIZE_FORM}; a percentage needs a memory cgroup with a limit, and this process " \
                             "has none (set an absolute size where there is no container limit)")
      end
      (limit * amount / 100).to_i
    end

    # [:bytes, n] or [:percent, p] for a well-formed size, nil for nil; raises for anything else.
    def size_form(key, value)
      form = case value
             when nil then return nil
             when Integer, Float then [:bytes, (value * UNITS[""]).to_i] if value.finite?
             when String then parse_size(key, value)
             end
      fail_key(key, value, SIZE_FORM) unless form && form.last.positive?
      form
    end

    def parse_size(key, text)
      if (m = text.strip.match(/\A(\d+(?:\.\d+)?)\s*%\z/))
        percent = Float(m[1])
        fail_key(key, text, "a percentage above 0 and at most 100") unless percent.positive? && percent <= 100
        return [:percent, percent]
      end
      m = text.strip.match(/\A(\d+(?:\.\d+)?)\s*([KMGT]?)(?:i?B)?\z/i)
      return nil unless m

      [:bytes, (Float(m[1]) * UNITS.fetch(m[2].upcase)).to_i]
    end

    # A number, or a String holding one ("5", "1.5": what ENV gives).
    def number(value)
      return value if value.is_a?(Numeric) && value.real?
      return Float(value) if value.is_a?(String) && value.strip.match?(/\A\d+(\.\d+)?\z/)

      nil
    end

    def seconds(key, value, allow_zero:)
      n = number(value)
      ok = n && n.finite? && (allow_zero ? n >= 0 : n.positive?)
      fail_key(key, value, allow_zero ? "a number of seconds >= 0" : "a number of seconds > 0") unless ok
      n.to_f
    end

    def boolean(key, value)
      case value
      when true, "true" then true
      when false, "false" then false
      else fail_key(key, value, "true or false")
      end
    end

    # A whole number >= minimum (0: off, where 0 is accepted).
    def integer(key, value, minimum:)
      n = number(value)
      form = minimum.zero? ? "an Integer >= 0 (0: off)" : "an Integer >= #{minimum}"
      fail_key(key, value, form) unless n && n.finite? && n == n.round && n >= minimum
      n.round
    end

    def callable(key, value)
      fail_key(key, value, "nil or an object that responds to call (a Proc or lambda taking a Hash)") unless
        value.nil? || value.respond_to?(:call)
      value
    end

    def metric_name
      name = metric.is_a?(String) ? metric.to_sym : metric
      fail_key(:metric, metric, "one of #{METRICS.map(&:inspect).join(', ')}") unless METRICS.include?(name)
      name
    end

    def resolve_metric(cgroup)
      name = metric_name
      if name == :cgroup && cgroup.nil?
        fail_key(:metric, metric, ":rss or :pss; :cgroup needs a memory cgroup and this process is in none")
      end
      name
    end

    def resolve_logger
      return nil if logger.nil?
      return logger if %i[info warn error].all? { |m| logger.respond_to?(m) }

      fail_key(:logger, logger, "nil (Sidekiq's logger) or a Logger-like object (info, warn, error)")
    end
  end

  # The validated configuration: bytes and seconds.
  Settings = Struct.new(
    :max_rss, :hard_max_rss, :metric, :grace_time, :check_interval, :reclaim, :reclaim_cooldown, :shutdown_wait,
    :kill_after, :max_concurrent_restarts, :require_other_process, :dry_run, :on_restart, :logger, :doctor_on_boot,
    :measure_interval, :loop_window, :quarantine_after, :brake, :brake_at, :resume_at, :brake_pressure,
    keyword_init: true
  ) do
    # The brake's thresholds in bytes.
    def brake_bytes
      (max_rss * brake_at).floor
    end

    def resume_bytes
      (max_rss * resume_at).floor
    end
  end
end
