# frozen_string_literal: true

module SidekiqRust
  # The memory guard of one Sidekiq process. The Rust state machine (Native::Guard) decides; this class reads
  # memory, carries the decisions out in a thread of its own (never a job's thread), talks to the fleet and logs.
  #
  # Sequence of a restart: take a fleet slot -> quiet (TSTP to this process) -> wait until no job runs or
  # `shutdown_wait` passes -> TERM (Sidekiq requeues what still runs) -> KILL only after `kill_after`.
  # A supervisor (systemd Restart=always, Kubernetes) starts the process again.
  class Guard
    # How often the restart sequence looks at the busy count.
    RESTART_POLL = 0.25
    # After quiet, Sidekiq's idle processors may still sit in a blocking fetch (BRPOP, 2 s) for a moment. TERM
    # is never sent sooner than this, so that a job Sidekiq pushes back at shutdown cannot be fetched by a
    # processor that is about to be killed (Sidekiq's basic fetch would lose it).
    QUIET_SETTLE = 2.5
    # A refusal (sole process, no slot, Redis down) is logged again at most this often, unless it changes.
    DENIAL_LOG_EVERY = 60
    # Measuring reclaims take at most 1/MEASURE_BUDGET of the process's time (the next one waits at least this
    # many times as long as the last one took).
    MEASURE_BUDGET = 20
    # Classes named in a log line and an event, by retained and by growth.
    TOP = 5

    attr_reader :settings, :fleet, :kill_after

    def initialize(settings, sidekiq_timeout:, adapter: SidekiqAdapter)
      @settings = settings
      @adapter = adapter
      @logger = settings.logger || adapter.logger
      @kill_after = settings.kill_after || (sidekiq_timeout + Configuration::KILL_AFTER_MARGIN)
      @tag = adapter.own_tag
      @fleet = Fleet.new(settings, adapter: adapter, tag: @tag)
      @history = History.new(settings, identity: @tag, adapter: adapter)
      @native = Native::Guard.new(
        settings.max_rss, settings.hard_max_rss, ms(settings.grace_time), settings.reclaim,
        ms(settings.reclaim_cooldown), ms(settings.check_interval), ms(settings.shutdown_wait), ms(@kill_after)
      )
      @lock = Mutex.new
      @wakeup = ConditionVariable.new
      @worker = nil
      @monitor = nil
      @monitoring = false
      @last_denial = nil
      @rss_metric = settings.metric == :rss
      @reclaim_lock = Mutex.new
      @next_measure = settings.measure_interval && (monotonic + settings.measure_interval)
      @publish_error = nil
    end

    # Called by the middleware before a job: counts it in (no system call); returns its token.
    def job_started(job_class, jid)
      @native.job_started(job_class, jid)
    end

    # Called by the middleware after a job, even a failed one: counts it out and, when the last reading is
    # older than 20 ms, reads RSS and checks the limits. Never raises.
    def job_finished(token)
      action = @native.job_finished(token, @rss_metric)
      dispatch(action) if action
    rescue StandardError => e
      log_error("after a job", e)
    end

    # One reading by the monitor; returns the memory figure.
    def check
      action, memory = @native.sample(read_metric, false)
      dispatch(action) if action
      @history.record(memory, phase)
      memory
    end

    def start_monitor
      @lock.synchronize do
        return if @monitor&.alive?

        @monitoring = true
        @monitor = Thread.new { monitor_loop }
      end
    end

    def stop_monitor
      @lock.synchronize do
        @monitoring = false
        @wakeup.broadcast
      end
      @monitor&.join(2)
    end

    def phase
      @native.phase.to_sym
    end

    def busy
      @native.busy
    end

    # Per job class: [{class:, jobs:, retained_per_job:, growth_per_job:, allocated_per_job:}] (bytes, nil when
    # unknown), largest retained first. See Report.
    def report(limit: nil)
      rows = Report.rows(@native.report)
      limit ? rows.first(limit) : rows
    end

    # The jobs running now, longest first: [{class:, jid:, running_s:}].
    def in_flight
      @native.in_flight.map { |klass, jid, seconds| { class: klass, jid: jid, running_s: seconds.round(1) } }
    end

    # Writes this process's figures to Redis for `sidekiq_rust report` (Report.fleet). Never raises.
    def publish
      Report.publish(@tag, report(limit: Report::MAX_CLASSES), ttl: 3 * @settings.check_interval)
      @publish_error = nil
    rescue StandardError => e
      log_error("publishing the per-class figures", e) unless @publish_error == e.message
      @publish_error = e.message
    end

    # Sidekiq's :shutdown (TERM): stops the monitor, publishes the figures and, unless the guard's own restart
    # already said so, logs the jobs still running and the top classes.
    def shutting_down
      stop_monitor
      log(:info, "shutting down (TERM)", **attribution) if phase == :serving
      publish
    end

    # A measuring reclaim when due (or at once with `force: true`): GC + purge, the floor read after it, for the
    # per-class retained figure. Returns true if it ran.
    def measure(force: false)
      due = force || (@next_measure && monotonic >= @next_measure)
      return false unless due && phase == :serving

      gc_and_purge
      true
    end

    private

    def ms(seconds)
      (seconds * 1000).round
    end

    def monitor_loop
      Thread.current.name = "sidekiq_rust-monitor"
      loop do
        @lock.synchronize do
          @wakeup.wait(@lock, @settings.check_interval) if @monitoring
          return unless @monitoring
        end
        begin
          check
          measure
          publish
        rescue StandardError => e
          log_error("in the monitor", e)
        end
      end
    end

    # nil means RSS, which the native guard reads itself.
    def read_metric
      case @settings.metric
      when :pss then Memory.pss
      when :cgroup then Memory.cgroup&.fetch(:usage)
      end
    end

    def current_memory
      read_metric || Memory.rss
    end

    def dispatch(action)
      @lock.synchronize do
        return if @worker&.alive?

        @worker = Thread.new { act(action) }
      end
    end

    def act(action)
      Thread.current.name = "sidekiq_rust-guard"
      action = reclaim if action == :reclaim
      restart(action) if %i[restart_hard restart_soft].include?(action)
    rescue StandardError => e
      log_error("while acting on #{action}", e)
    end

    def monotonic
      ::Process.clock_gettime(::Process::CLOCK_MONOTONIC)
    end

    # GC + allocator purge between two RSS readings, so that what it gives back counts for no job (one at a
    # time: the monitor's measuring reclaims and the guard's). Returns the purge result, nil when not supported.
    def gc_and_purge
      @reclaim_lock.synchronize do
        started = monotonic
        @native.reclaim_started
        GC.start
        purge = begin
          Allocator.purge
        rescue NotSupported => e
          log(:info, "reclaim: allocator purge skipped (#{e.message})")
          nil
        end
        @native.reclaim_finished
        finished = monotonic
        interval = @settings.measure_interval
        @next_measure = finished + [interval, (finished - started) * MEASURE_BUDGET].max if interval
        purge
      end
    end

    def reclaim
      before = current_memory
      purge = gc_and_purge
      after = current_memory
      action = @native.reclaimed(after)
      verdict = action ? "still over the limit" : "back under the limit, no restart"
      @history.event(:reclaim, released: [before - after, 0].max, memory: after, still_over: !action.nil?)
      log(:info, "reclaimed #{Settings.mb([before - after, 0].max)} (GC + #{purge ? 'purge' : 'no purge'}): #{verdict}",
          memory: after)
      action
    end

    def restart(action)
      reason = action == :restart_hard ? "hard_limit" : "soft_limit"
      event = event_for(reason)
      if @settings.dry_run
        log_denial("dry run: would restart", event)
        notify(event.merge(dry_run: true))
        @native.slot_denied
        return
      end
      granted, detail = @fleet.acquire(slot_ttl)
      unless granted
        log_denial("over the limit but not restarting: #{detail}", event)
        @native.slot_denied
        return
      end
      at_exit { @fleet.release }
      run_restart(event)
    end

    def run_restart(event)
      @native.slot_granted
      log(:warn, "restarting: quiet (TSTP), then TERM when no job runs (at most #{@settings.shutdown_wait}s)",
          **event)
      notify(event)
      @history.event(:restart, **event)
      publish
      signal("TSTP")
      sleep QUIET_SETTLE
      loop do
        sleep RESTART_POLL
        action, memory = @native.sample(read_metric, true)
        case action
        when :stop
          log(:warn, "restarting: stop (TERM); KILL if still alive after #{@kill_after}s", memory: memory,
                                                                                        in_flight: in_flight)
          # A native timer, which Ruby's own shutdown cannot end, sends the KILL if this thread is gone by then.
          Native.arm_kill_timer(@kill_after)
          signal("TERM")
        when :kill
          log(:error, "restarting: still alive #{@kill_after}s after TERM, sending KILL", memory: memory)
          signal("KILL")
          return
        end
      end
    end

    def slot_ttl
      @settings.shutdown_wait + @kill_after + Configuration::SLOT_TTL_MARGIN
    end

    def signal(name)
      ::Process.kill(name, ::Process.pid)
    end

    def event_for(reason)
      {
        event: :restart, reason: reason, identity: @tag, hostname: @adapter.hostname, pid: ::Process.pid,
        metric: @settings.metric, memory: @native.last_memory.nonzero? || current_memory,
        limit: @settings.max_rss, hard_limit: @settings.hard_max_rss, busy: @native.busy, dry_run: false,
        **attribution
      }
    end

    # The jobs in flight and the top classes by retained and by growth per job.
    def attribution
      rows = report
      { in_flight: in_flight, top_retained: Report.top(rows, :retained_per_job, TOP),
        top_growth: Report.top(rows, :growth_per_job, TOP) }
    end

    def notify(event)
      @settings.on_restart&.call(event)
    rescue StandardError => e
      log_error("in on_restart", e)
    end

    def log_denial(message, event)
      now = ::Process.clock_gettime(::Process::CLOCK_MONOTONIC)
      return if @last_denial && @last_denial[0] == message && now - @last_denial[1] < DENIAL_LOG_EVERY

      @last_denial = [message, now]
      @history.event(:denial, message: message, **event)
      log(:warn, message, **event)
    end

    def log(level, message, memory: nil, reason: nil, in_flight: nil, top_retained: nil, top_growth: nil, **_rest)
      parts = ["sidekiq_rust: #{message}", "identity=#{@tag}"]
      parts << "#{@settings.metric}=#{Settings.mb(memory)}" if memory
      parts << "limit=#{Settings.mb(@settings.max_rss)} hard_limit=#{Settings.mb(@settings.hard_max_rss)}"
      parts << "reason=#{reason}" if reason
      parts << "in_flight=#{format_in_flight(in_flight)}" if in_flight
      parts << "top_retained=#{format_top(top_retained, :retained_per_job)}" if top_retained
      parts << "top_growth=#{format_top(top_growth, :growth_per_job)}" if top_growth
      @logger.public_send(level, parts.join(" "))
    rescue StandardError
      nil # logging must never break the guard
    end

    def format_in_flight(jobs)
      return "none" if jobs.empty?

      jobs.map { |j| "#{j[:class]}(jid #{j[:jid]}, #{j[:running_s]}s)" }.join(", ")
    end

    def format_top(rows, figure)
      return "none" if rows.empty?

      rows.map { |r| "#{r[:class]}(#{Report.bytes(r[figure])}/job in #{r[:jobs]} jobs)" }.join(", ")
    end

    def log_error(where, error)
      @logger.error("sidekiq_rust: error #{where}: #{error.class}: #{error.message} identity=#{@tag}")
    rescue StandardError
      nil
    end
  end
end
