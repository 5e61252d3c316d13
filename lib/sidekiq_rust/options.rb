# frozen_string_literal: true

module SidekiqRust
  # One configuration key: the one place it is written. OPTIONS drives everything a key needs:
  # - Configuration's accessor, default and check (`form`, with `minimum` for counts and shares);
  # - the resolved Settings (bytes and seconds);
  # - the native guard's Hash (`native: true`: the resolved value under the same key; Rust checks its shape);
  # - the generator's initializer (`summary` as the comment; `env`: the line reads that ENV variable, else it
  #   is a commented default);
  # - the configuration table of README.md and docs/configuration.md (`default_text` where the default is not a
  #   plain value, `accepted`, `meaning`), written by `rake docs:options` and compared by a spec.
  #   `env_fallback`: Ruby source for the initializer's value when that variable is unset (else the default).
  Option = Struct.new(:key, :default, :form, :minimum, :native, :env, :env_fallback, :default_text, :accepted,
                      :summary, :meaning, keyword_init: true)

  # Every key, in the order the docs and the initializer show them.
  OPTIONS = [
    Option.new(
      key: :max_rss, default: nil, form: :size, native: true, env: "SIDEKIQ_MAX_RSS",
      env_fallback: 'SidekiqRust::Memory.cgroup&.fetch(:limit, nil) ? "80%" : "1GB"',
      default_text: "required (checked at the Sidekiq server's start)",
      accepted: 'Integer or Float (MB), `"800MB"`, `"1.5GB"` (K/M/G/T, binary units), `"80%"` of the cgroup ' \
                "limit (followed as it changes)",
      summary: "The soft limit: above it for grace_time, reclaim, then restart gracefully. An Integer (MB), " \
               '"800MB", "1.5GB", or a percentage of the container\'s (cgroup) memory limit, "80%", which moves ' \
               "with the limit while the process runs (a container resized in place). Without " \
               "SIDEKIQ_MAX_RSS: 80% of the container's limit, or 1GB where the process has no memory limit.",
      meaning: "soft limit"
    ),
    Option.new(
      key: :hard_max_rss, default: :auto, form: :size, native: true, env: "SIDEKIQ_HARD_MAX_RSS",
      default_text: "`:auto`: 1.5 x max_rss, at most 90% of the cgroup limit",
      accepted: 'as `max_rss`, above it; `:auto`; `nil` or `"none"`: none',
      summary: "The hard limit (same forms, above max_rss): restart at once, even a sole process. :auto: 1.5 times " \
               "max_rss, at most 90% of the container's (cgroup) limit; nil or \"none\": no hard limit.",
      meaning: "above it: reclaim at once, then restart if still over, even a sole process (no grace)"
    ),
    Option.new(
      key: :grace_time, default: 60, form: :seconds, native: true,
      accepted: "seconds >= 0 (a number or a numeric String, as for every duration)",
      summary: "Seconds memory may stay above max_rss.",
      meaning: "how long memory may stay above the soft limit"
    ),
    Option.new(
      key: :metric, default: :rss, form: :metric, native: true, accepted: "`:rss`, `:pss`, `:cgroup`",
      summary: "What the limits compare with: :rss, :pss or :cgroup (the container's usage).",
      meaning: "what the limits compare with (`:cgroup`: the cgroup's working set, see `Memory.cgroup`, for one " \
               "process per container; a fleet sharing a cgroup: `:rss` with `max_rss` = its share, see " \
               "docs/containers.md; the per-job check is RSS only, the monitor reads PSS or the cgroup)"
    ),
    Option.new(
      key: :check_interval, default: 5, form: :positive_seconds, native: true, accepted: "seconds > 0",
      summary: "Seconds between the monitor's readings (it catches idle processes).",
      meaning: "the monitor's period; also how soon a refused restart is asked again"
    ),
    Option.new(
      key: :reclaim, default: true, form: :boolean, native: true, accepted: "`true`/`false`",
      summary: "GC + allocator purge before restarting; restart only if still over.",
      meaning: "GC + allocator purge before restarting; restart only if still over"
    ),
    Option.new(
      key: :reclaim_cooldown, default: 300, form: :seconds, native: true, accepted: "seconds >= 0",
      summary: "Seconds before another reclaim may be tried.",
      meaning: "at most one reclaim per this period"
    ),
    Option.new(
      key: :loop_window, default: 600, form: :seconds, native: true, accepted: "seconds >= 0 (0: off)",
      summary: "Seconds after boot in which a soft-limit restart that reclaimed little is a restart loop (0: off).",
      meaning: "a process that started within this many seconds of a memory restart on its host, and needs a " \
               "soft-limit restart this soon after boot with little reclaimed, is in a restart loop: warn, no " \
               "soft restart until the process is this old"
    ),
    Option.new(
      key: :shutdown_wait, default: 60, form: :seconds, native: true, accepted: "seconds >= 0",
      summary: "Seconds to wait for busy jobs after quiet, before TERM.",
      meaning: "after quiet, how long to wait for busy jobs before TERM"
    ),
    Option.new(
      key: :kill_after, default: nil, form: :positive_seconds_or_nil, native: false,
      default_text: "Sidekiq's `timeout` + 15", accepted: "seconds > 0",
      summary: "Seconds after TERM before KILL (only a hung process gets it). nil: Sidekiq's timeout + 15.",
      meaning: "after TERM, KILL only a process still alive this long"
    ),
    Option.new(
      key: :max_concurrent_restarts, default: 1, form: :count, minimum: 1, native: false,
      accepted: 'Integer >= 1 (or `"2"`)',
      summary: "How many processes of the fleet (same Redis) may restart at the same time.",
      meaning: "restart slots for the whole fleet (same Redis), for both limits"
    ),
    Option.new(
      key: :require_other_process, default: true, form: :boolean, native: true, accepted: "`true`/`false`",
      summary: "Soft-limit restarts only while another process serves (the hard limit restarts a sole process too).",
      meaning: "soft-limit restarts only while another process serves (the hard limit restarts a sole process too)"
    ),
    Option.new(
      key: :dry_run, default: false, form: :boolean, native: true, accepted: "`true`/`false`",
      summary: "Log what would happen; never quiet, stop or kill.",
      meaning: "log (and call `on_restart` with `dry_run: true`), never signal"
    ),
    Option.new(
      key: :on_restart, default: nil, form: :callable, native: false, accepted: "callable",
      summary: "Called with a Hash describing each restart (or dry-run decision), e.g. " \
               "->(event) { Rails.logger.warn(event) }.",
      meaning: "receives `{event:, reason:, identity:, hostname:, pid:, metric:, memory:, max_rss:, hard_max_rss:, " \
               "busy:, dry_run:, in_flight:, top_retained:, suspect:, verdict:}`; `in_flight: [{class:, jid:, " \
               "running_s:}]`, `top_retained`: rows as in `SidekiqRust.report`"
    ),
    Option.new(
      key: :logger, default: nil, form: :logger, native: false, default_text: "`Sidekiq.logger`",
      accepted: "Logger-like",
      summary: "Where the guard logs. nil: Sidekiq's logger.",
      meaning: "where the guard logs"
    ),
    Option.new(
      key: :doctor_on_boot, default: false, form: :boolean, native: false, accepted: "`true`/`false`",
      summary: "Run `sidekiq_rust doctor`'s checks when Sidekiq starts and log the WARN and FAIL lines.",
      meaning: "run `sidekiq_rust doctor`'s checks at startup and log the WARN and FAIL lines"
    ),
    Option.new(
      key: :quarantine_after, default: 2, form: :count, minimum: 0, native: true,
      accepted: 'Integer >= 0 (or `"3"`; 0: off)',
      summary: "A job in flight at this many memory restarts goes to the dead set instead of being requeued " \
               "again (0: off).",
      meaning: "a job in flight at this many memory restarts goes to Sidekiq's dead set instead of being requeued " \
               "again (see docs/quarantine.md)"
    ),
    Option.new(
      key: :measure_interval, default: 60, form: :positive_seconds_or_nil, native: true,
      accepted: "seconds > 0, or `nil` (none)",
      summary: "Seconds between the monitor's measuring reclaims for the per-job-class retained memory. nil: none.",
      meaning: "the monitor's measuring reclaims (GC + purge) for the per-class retained figure: this often " \
               "(after one whose floor a job's start made unusable, a tenth of it), and never more than 5% of " \
               "the process's time"
    ),
    Option.new(
      key: :brake, default: true, form: :boolean, native: true, accepted: "`true`/`false`",
      summary: "The memory brake: near max_rss, fetch no new job until memory comes back (docs/brake.md).",
      meaning: "the memory brake (see docs/brake.md): near the limit, fetch no new job until memory comes " \
               "back; needs Sidekiq's concurrency (known in a Sidekiq server)"
    ),
    Option.new(
      key: :admission, default: false, form: :boolean, native: true, accepted: "`true`/`false` (needs `brake`)",
      summary: "Start a fetched job only when its class's working set fits under brake_at (docs/admission.md).",
      meaning: "admission (see docs/admission.md): after each fetch, the job starts only when memory now, what " \
               "the running jobs may still add and its class's working set (declared with `sidekiq_options " \
               "memory:`, or learned) fit under `brake_at`; else it goes back to the front of its queue. Needs " \
               "the brake"
    ),
    Option.new(
      key: :brake_at, default: 0.9, form: :share, minimum: 0.5, native: true,
      accepted: "a share of `max_rss` above 0.5 and at most 1.0",
      summary: "The brake pauses fetching at this share of max_rss (above 0.5, at most 1.0).",
      meaning: "the brake pauses fetching at this share of `max_rss`"
    ),
    Option.new(
      key: :resume_at, default: 0.8, form: :share, minimum: 0.3, native: true,
      accepted: "a share of `max_rss` above 0.3 and below `brake_at`",
      summary: "The brake fetches again below this share of max_rss (above 0.3, below brake_at).",
      meaning: "the brake fetches again below this share of `max_rss`"
    ),
    Option.new(
      key: :brake_pressure, default: 20, form: :percentage_or_nil, native: true,
      accepted: "a percentage above 0 and at most 100, or `nil` (not looked at)",
      summary: "Memory pressure (PSI some avg10, percent) at which the brake pauses too; nil: not looked at.",
      meaning: "memory pressure (PSI `some avg10`: the cgroup's `memory.pressure` on v2, else " \
               "`/proc/pressure/memory`, read by the monitor every `check_interval`) at which the brake pauses " \
               "too, whatever the memory figure"
    )
  ].freeze

  OPTION_KEYS = OPTIONS.map(&:key).freeze
end
