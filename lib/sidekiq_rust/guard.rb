# frozen_string_literal: true

require_relative "guard/log"
require_relative "guard/reclaimer"
require_relative "guard/restart"
require_relative "guard/process_strategy"
require_relative "guard/embedded_strategy"
require_relative "guard/executor"
require_relative "guard/monitor"
require_relative "guard/explanation"
require_relative "guard/admission"

module SidekiqRust
  # The memory guard of one Sidekiq process: the job hooks (the Middleware calls them) and what the guard's parts
  # share. Rust decides (Native::Guard, a pure state machine over the readings); the Executor carries out each
  # action it returns and reports the outcome back (see Guard::Executor for the table); the Monitor reads memory
  # every check_interval; Restart, Reclaimer, Brake and Log do one thing each. A supervisor (systemd
  # Restart=always, Kubernetes) starts a restarted process again.
  class Guard
    # After quiet took effect (Sidekiq's :quiet event, not the signal: a busy process may handle TSTP seconds
    # later), Sidekiq's idle processors may still sit in a blocking fetch (BRPOP, 2 s) for a moment. The stop
    # never comes sooner than this, so that a job Sidekiq pushes back at shutdown cannot be fetched by a
    # processor that is about to be killed (Sidekiq's basic fetch would lose it).
    QUIET_SETTLE = 2.5
    # Without Sidekiq's :quiet event this long after quiet, the guard says so and counts the settle from then
    # (TERM is safe then too: Sidekiq's own shutdown quiets first).
    QUIET_TIMEOUT = 15
    attr_reader :settings, :fleet, :kill_after, :brake

    # Native::Guard.new's Hash: every key of OPTIONS it takes (`native: true`) as resolved in `settings`, and the
    # facts about this process: kill_after resolved, Sidekiq's concurrency (nil: unknown), whether it replaced a
    # memory restart of its host, whether Sidekiq runs embedded and was handed to SidekiqRust.embed. Rust checks
    # the shape (every key, no other) and decides what follows from them (the brake needs the job threads; only
    # a process that replaced a memory restart is checked for a restart loop).
    def self.native_settings(settings, kill_after:, concurrency: nil, replaced_restart: false, embedded: false,
                             embedded_instance: false)
      options = OPTIONS.select(&:native).to_h { |option| [option.key, settings[option.key]] }
      options.merge(max_rss_share: settings.max_rss_share, hard_max_rss_share: settings.hard_max_rss_share,
                    cgroup_limit: settings.cgroup_limit, kill_after: kill_after,
                    concurrency: concurrency.to_i.positive? ? concurrency.to_i : nil,
                    replaced_restart: replaced_restart, embedded: embedded, embedded_instance: embedded_instance,
                    settle: QUIET_SETTLE, quiet_timeout: QUIET_TIMEOUT)
    end

    def initialize(settings, sidekiq_timeout:, concurrency: nil, adapter: SidekiqAdapter)
      @settings = settings
      @adapter = adapter
      @kill_after = Configuration.kill_after(settings.kill_after, sidekiq_timeout)
      @concurrency = concurrency
      @tag = adapter.own_tag
      @log = Log.new(settings, logger: settings.logger || adapter.logger, tag: @tag)
      @fleet = Fleet.new(settings, adapter: adapter, tag: @tag)
      @history = History.new(settings, identity: @tag, adapter: adapter)
      # A restart loop is a process that replaced a memory restart and needs one again soon after boot: only a
      # process started within the loop window of a memory restart on this host is checked for one (and its
      # brake starts slow).
      @replaced_restart = settings.loop_window.positive? && @fleet.memory_restart_recent?
      @native = Native::Guard.new(native_settings)
      @log.native = @native
      @explanation = Explanation.new(@native, log: @log)
      @reclaimer = Reclaimer.new(@native, log: @log, history: @history)
      @restart = Restart.new(self, native: @native, settings: settings, fleet: @fleet, history: @history,
                                   quarantine: Quarantine.new(settings, adapter: adapter), log: @log, adapter: adapter)
      @brake = if @native.brake?
                 Brake.new(@native, settings: settings, log: @log, history: @history, adapter: adapter, tag: @tag,
                                    concurrency: concurrency)
               end
      @admission = if @brake && @native.admission?
                     Admission.new(@native, log: @log, history: @history, reclaimer: @reclaimer)
                   end
      @executor = Executor.new(self, native: @native, restart: @restart, reclaimer: @reclaimer, brake: @brake,
                                     log: @log)
      @monitor = Monitor.new(self, interval: settings.check_interval, log: @log)
      @publish_notice = @log.notice(failure: "could not publish the per-class figures",
                                    recovery: "the per-class figures are published again")
      @pressure_notice = @log.notice(failure: "could not read the memory pressure (PSI): the brake's brake_pressure " \
                                              "counts it as none until it can",
                                     recovery: "the memory pressure (PSI) is read again")
    end

    # Called by the middleware before a job: counts it in (no system call); returns its token.
    def job_started(job_class, jid)
      @native.job_started(job_class, jid)
    end

    # Called by the middleware after a job, even a failed one: counts it out and, when the last reading is
    # older than 20 ms, reads RSS and checks the limits; threads admission held look again. Never raises.
    def job_finished(token)
      action = @native.job_finished(token)
      @brake.wake if @admission
      @executor.dispatch(action) if action
    rescue StandardError => e
      @log.failure("after a job", e)
    end

    # Called by BrakeFetch after each fetch: whether the job starts now (admission off: always). Never raises.
    def admit(work)
      @admission ? @admission.admit(work) : true
    end

    # Whether the middleware keeps each running job's payload where the quarantine finds it.
    def quarantine?
      @settings.quarantine_after.positive?
    end

    # Called by the middleware when a quarantined job's thread left the job (it is in the dead set). Never raises.
    def left_quarantined(job, error)
      @log.warn("quarantined job ended: #{job['wrapped'] || job['class']} (jid #{job['jid']}): #{error.message}")
    end

    # One reading by the monitor (and the memory pressure, for the brake); returns the memory figure.
    def check
      @native.pressure = pressure if @brake && @settings.brake_pressure
      sample = @native.sample(false)
      moved(sample[:moved]) if sample[:moved]
      @log.over_max_rss(sample[:over]) if sample[:over]
      @executor.dispatch(sample[:action]) if sample[:action]
      @brake&.refresh
      admission_check
      @history.record(sample[:memory], phase, brake: @brake&.state, limits: @native.limits)
      sample[:memory]
    end

    # What admission learned is said, and threads it held look again at the new reading.
    def admission_check
      return unless @admission

      @admission.notes
      @brake.wake
    end

    def start_monitor
      @executor.start
      @monitor.start
    end

    def stop_monitor
      @monitor.stop
    end

    # Sidekiq's :quiet event: quiet took effect now (after our quiet or anyone else's). Stops the monitor; a
    # restart under way goes on in its own thread.
    def quieted
      @native.quieted
      @restart.quieted
      stop_monitor
    end

    def phase
      @native.phase.to_sym
    end

    def busy
      @native.busy
    end

    # Per job class: the rows of Explanation#report.
    def report(limit: nil)
      @explanation.report(limit: limit)
    end

    # The jobs running now, longest first: [{class:, jid:, running_s:}].
    def in_flight
      @explanation.in_flight
    end

    # Writes this process's figures to Redis for `sidekiq_rust report` (Report.fleet). Never raises.
    def publish
      Report.publish(@tag, report(limit: Report::MAX_CLASSES), ttl: 3 * @settings.check_interval)
      @publish_notice.succeeded
    rescue StandardError => e
      @publish_notice.failed(e)
    end

    # Sidekiq's :shutdown (TERM): stops the monitor, publishes the figures and, unless the guard's own restart
    # already said so, logs the jobs still running and the top classes.
    def shutting_down
      stop_monitor
      @log.info("shutting down (TERM)", **@explanation.attribution) if phase == :serving
      publish
      @history.stopped
    end

    # A measuring reclaim when due (or at once with `force: true`) while the process serves: GC + purge, the
    # floor read after it, for the per-class retained figure. Returns true if it ran.
    def measure(force: false)
      @reclaimer.measure(force: force)
    end

    # The restart slot outlives a hung or killed process by this much, then expires by itself.
    def slot_ttl
      @settings.shutdown_wait + @kill_after + Configuration::SLOT_TTL_MARGIN
    end

    # The slot is ours: the log, on_restart, the history and the per-class figures say why.
    def announce(event, message)
      @log.warn(message, **event)
      notify(event)
      @history.event(:restart, **event)
      publish
    end

    # What on_restart, the log and the history get about a restart for `reason`.
    def event_for(reason)
      rows = @explanation.report
      {
        event: :restart, reason: reason, identity: @tag, hostname: @adapter.hostname, pid: ::Process.pid,
        metric: @settings.metric, memory: @native.decision_memory.nonzero? || @native.last_memory,
        **@native.limits.slice(:max_rss, :hard_max_rss), busy: @native.busy, dry_run: false,
        **@explanation.attribution(rows), **@explanation.verdict(rows)
      }
    end

    def notify(event)
      @settings.on_restart&.call(event)
    rescue StandardError => e
      @log.failure("in on_restart", e)
    end

    # The soft limit is below the working set: restarting would only rebuild it (the policy holds soft restarts
    # back until the process is loop_window old).
    def warn_restart_loop
      @log.restart_loop(memory: @native.decision_memory, peak: Memory.peak_rss, last_reclaim: @native.last_reclaim,
                        uptime: @native.uptime, concurrency: @concurrency,
                        attribution: @explanation.attribution)
      nil
    end

    private

    # The memory cgroup's limit changed and the limits given as shares of it moved: said, and on the timeline.
    def moved(moved)
      @log.limits_moved(moved)
      @history.event(:limits, limit: moved[:limit], was_limit: moved[:was_limit], **moved[:now])
    end

    # PSI "some" avg10 of this process's cgroup (v2) or the machine; nil where the kernel has none, or when it
    # cannot be read (said once, and once when it can again).
    def pressure
      pressure = Memory.pressure&.fetch(:some_avg10)
      @pressure_notice.succeeded
      pressure
    rescue Error => e
      @pressure_notice.failed(e)
      nil
    end

    # What the native guard is made from (Native::Guard.new's Hash).
    def native_settings
      Guard.native_settings(@settings, kill_after: @kill_after, concurrency: @concurrency,
                                       replaced_restart: @replaced_restart, embedded: @adapter.embedded?,
                                       embedded_instance: !SidekiqRust.embedded.nil?)
    end
  end
end
