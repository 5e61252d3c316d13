# frozen_string_literal: true

require_relative "options"

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
    # hard_max_rss :auto (the default): this many times max_rss, and at most this share of the cgroup's limit
    # (none when that is not above max_rss).
    AUTO_HARD = 1.5
    AUTO_HARD_CGROUP = 0.9
    HARD_FORM = "#{SIZE_FORM}, above max_rss; :auto (1.5 x max_rss, at most 90% of the cgroup limit); or nil / " \
                '"none" (no hard limit)'.freeze

    # The guard's kill_after: the one `given` (settings or a command-line option), else Sidekiq's timeout + 15.
    def self.kill_after(given, sidekiq_timeout)
      given || (sidekiq_timeout + KILL_AFTER_MARGIN)
    end

    # One accessor a key of OPTIONS (its meaning is there, and in docs/configuration.md).
    attr_accessor(*OPTION_KEYS)

    def initialize
      OPTIONS.each { |option| instance_variable_set("@#{option.key}", option.default) }
    end

    # Checks the form of every value, without looking at the environment; returns self.
    def check
      metric_name
      soft = size_form(:max_rss, max_rss)
      hard = hard_form
      compare_limits(soft, hard) if soft&.first == :bytes && hard.is_a?(Array) && hard.first == :bytes
      settings_without_limits
      self
    end

    # Validates every key against this process's environment and returns frozen Settings in bytes and seconds.
    # `cgroup` is the memory cgroup ({usage:, limit:} or nil), needed for "80%" limits and metric :cgroup.
    def resolve(cgroup: Memory.cgroup)
      metric = resolve_metric(cgroup)
      soft = size(:max_rss, max_rss, cgroup, required: true)
      soft_share = cgroup_share(:max_rss, max_rss)
      hard, hard_share = resolve_hard(soft, soft_share, cgroup)
      compare_limits([:bytes, soft], hard && [:bytes, hard])
      shares = { max_rss_share: soft_share, hard_max_rss_share: hard_share }
      cgroup_limit = shares.values.any? ? cgroup[:limit] : nil
      Settings.new(max_rss: soft, hard_max_rss: hard, metric: metric, cgroup_limit: cgroup_limit, **shares,
                   **settings_without_limits).freeze
    end

    private

    # hard_max_rss's form: :auto, nil (none), or size_form's [:bytes, n] / [:percent, p].
    def hard_form
      case hard_max_rss
      when :auto, "auto" then :auto
      when nil, false, :none, "none" then nil
      when Integer, Float, String then size_form(:hard_max_rss, hard_max_rss, form: HARD_FORM)
      else fail_key(:hard_max_rss, hard_max_rss, HARD_FORM)
      end
    end

    # [bytes, share of the cgroup's limit or nil] of the hard limit; [nil, nil] for none.
    def resolve_hard(soft, soft_share, cgroup)
      case hard_form
      when nil then [nil, nil]
      when :auto then auto_hard(soft, soft_share, cgroup && cgroup[:limit])
      else [size(:hard_max_rss, hard_max_rss, cgroup, required: false), cgroup_share(:hard_max_rss, hard_max_rss)]
      end
    end

    # hard_max_rss :auto: AUTO_HARD x max_rss, at most AUTO_HARD_CGROUP of the cgroup's limit where there is one
    # (a share of it then, which follows the limit); none where that leaves nothing above max_rss.
    def auto_hard(soft, soft_share, limit)
      return [(soft * AUTO_HARD).to_i, nil] unless limit

      if soft_share
        share = [soft_share * AUTO_HARD, AUTO_HARD_CGROUP].min
        return share > soft_share ? [(limit * share).to_i, share] : [nil, nil]
      end
      wanted = (soft * AUTO_HARD).to_i
      cap = (limit * AUTO_HARD_CGROUP).to_i
      return [wanted, nil] if wanted <= cap
      return [nil, nil] unless cap > soft

      [cap, AUTO_HARD_CGROUP]
    end

    def compare_limits(soft, hard)
      return unless soft && hard && hard.last <= soft.last

      fail_key(:hard_max_rss, hard_max_rss, "a limit above max_rss (#{Units.mb(soft.last)})")
    end

    # Every key but the limits and the metric, by its form in OPTIONS: they depend on nothing but their own
    # value (and resume_at on brake_at).
    def settings_without_limits
      values = OPTIONS.reject { |option| %i[size metric].include?(option.form) }.to_h do |option|
        [option.key, checked(option, public_send(option.key))]
      end
      resume_below_brake(values)
      admission_needs_brake(values)
      values
    end

    def admission_needs_brake(values)
      return unless values[:admission] && !values[:brake]

      fail_key(:admission, admission, "false while brake is false (admission holds jobs at the brake's gate: " \
                                       "set brake = true, or admission = false)")
    end

    # The value of `option` in its form (seconds as Floats, counts as Integers, ...); raises naming the key.
    def checked(option, value)
      key = option.key
      case option.form
      when :seconds then seconds(key, value, allow_zero: true)
      when :positive_seconds then seconds(key, value, allow_zero: false)
      when :positive_seconds_or_nil then value.nil? ? nil : seconds(key, value, allow_zero: false)
      when :boolean then boolean(key, value)
      when :count then integer(key, value, minimum: option.minimum)
      when :callable then callable(key, value)
      when :logger then resolve_logger
      when :share then share(key, value, option.minimum)
      when :percentage_or_nil then value.nil? ? nil : percentage(key, value)
      else raise ArgumentError, "sidekiq_rust: option #{key} has an unknown form #{option.form.inspect}"
      end
    end

    # resume_at must be below brake_at (each is a share of max_rss).
    def resume_below_brake(values)
      at, resume = values.values_at(:brake_at, :resume_at)
      return if resume < at

      fail_key(:resume_at, resume_at, "a share of max_rss below brake_at (#{at}), like #{(at - 0.1).round(2)}")
    end

    def percentage(key, value)
      n = number(value)
      form = "a percentage of memory pressure above 0 and at most 100 (PSI some avg10), or nil (not looked at)"
      fail_key(key, value, form) unless n && n.finite? && n.positive? && n <= 100
      n.to_f
    end

    # A share of max_rss above `above`: brake_at at most 1.0, resume_at below brake_at (checked before it).
    def share(key, value, above)
      n = number(value)
      form = if key == :resume_at
               "a share of max_rss above #{above} and below brake_at (#{number(brake_at).to_f}), like 0.8"
             else
               "a share of max_rss above #{above} and at most 1.0, like 0.9"
             end
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

    # The share of the cgroup's limit a size given as a percentage is (0.8 for "80%"), nil for any other size: the
    # guard moves such a limit with the cgroup's limit while the process runs.
    def cgroup_share(key, value)
      kind, amount = size_form(key, value)
      kind == :percent ? amount / 100.0 : nil
    end

    # [:bytes, n] or [:percent, p] for a well-formed size, nil for nil; raises for anything else.
    def size_form(key, value, form: SIZE_FORM)
      size = case value
             when nil then return nil
             when Integer, Float then [:bytes, (value * UNITS[""]).to_i] if value.finite?
             when String then parse_size(key, value)
             end
      fail_key(key, value, form) unless size && size.last.positive?
      size
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

  # The validated configuration: bytes and seconds; and where max_rss or hard_max_rss was given as a percentage,
  # that share of the cgroup's limit and the limit it was resolved against (the guard follows the limit).
  Settings = Struct.new(*OPTION_KEYS, :max_rss_share, :hard_max_rss_share, :cgroup_limit, keyword_init: true) do
    # The brake's thresholds in bytes.
    def brake_bytes
      (max_rss * brake_at).floor
    end

    def resume_bytes
      (max_rss * resume_at).floor
    end

    # The limits as configured, in the shape of Native::Guard#limits' ({max_rss:, hard_max_rss:}): what the log
    # and the history name before the native guard is made, or where it cannot answer.
    def limits
      { max_rss: max_rss, hard_max_rss: hard_max_rss }
    end
  end
end
