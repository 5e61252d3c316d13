# frozen_string_literal: true

module SidekiqRust
  # The memory guard of one Sidekiq process. The Rust state machine (Native::Guard) decides; this class reads
  # memory, carries the decisions out in a thread of its own (never a job's thread), talks to the fleet and logs.
  #
  # Sequence of a restart: take a fleet slot -> quiet (TSTP to this process) -> Sidekiq's :quiet event (quiet took
  # effect) -> at least QUIET_SETTLE, then until no job runs, `shutdown_wait` passes or memory reaches the hard
  # limit -> TERM (Sidekiq requeues what still runs) -> KILL only after `kill_after`.
  # A supervisor (systemd Restart=always, Kubernetes) starts the process again.
  #
  # Embedded Sidekiq (Sidekiq.configure_embed) shares another program's process: the guard never signals it.
  # It quiets and stops Sidekiq through the embed instance handed to SidekiqRust.embed, and the process goes on;
  # without that instance a restart is refused (and logged). Reclaim works the same in both modes.
  class Guard
    # How often the restart sequence looks at the busy count.
    RESTART_POLL = 0.25
    # After quiet took effect (Sidekiq's :quiet event, not the signal: a busy process may handle TSTP seconds
    # later), Sidekiq's idle processors may still sit in a blocking fetch (BRPOP, 2 s) for a moment. TERM is never
    # sent sooner than this, so that a job Sidekiq pushes back at shutdown cannot be fetched by a processor that
    # is about to be killed (Sidekiq's basic fetch would lose it).
    QUIET_SETTLE = 2.5
    # Without Sidekiq's :quiet event this long after TSTP, the guard says so and counts the settle from then
    # (TERM is safe then too: Sidekiq's own shutdown quiets first).
    QUIET_TIMEOUT = 15
    # A refusal (sole process, no slot, Redis down) is logged again at most this often, unless it changes.
    DENIAL_LOG_EVERY = 60
    # Measuring reclaims take at most 1/MEASURE_BUDGET of the process's time (the next one waits at least this
    # many times as long as the last one took).
    MEASURE_BUDGET = 20
    # Classes named in a log line and an event, by retained and by growth.
    TOP = 5

    attr_reader :settings, :fleet, :kill_after

    def initialize(settings, sidekiq_timeout:, concurrency: nil, adapter: SidekiqAdapter)
      @settings = settings
      @adapter = adapter
      @logger = settings.logger || adapter.logger
      @kill_after = Configuration.kill_after(settings.kill_after, sidekiq_timeout)
      @concurrency = concurrency
      @tag = adapter.own_tag
      @fleet = Fleet.new(settings, adapter: adapter, tag: @tag)
      @history = History.new(settings, identity: @tag, adapter: adapter)
      @quarantine = Quarantine.new(settings, adapter: adapter)
      # A restart loop is a process that replaced a memory restart and needs one again soon after boot: only a
      # process started within the loop window of a memory restart on this host is checked for one.
      @loop_checked = settings.loop_window.positive? && @fleet.memory_restart_recent?
      @native = Native::Guard.new(
        settings.max_rss, settings.hard_max_rss, ms(settings.grace_time), settings.reclaim,
        ms(settings.reclaim_cooldown), ms(settings.check_interval), ms(settings.shutdown_wait), ms(@kill_after),
        ms(QUIET_SETTLE), ms(QUIET_TIMEOUT), @loop_checked ? ms(settings.loop_window) : 0
      )
      @quiet_signalled_at = nil
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

    # Whether the middleware keeps each running job's payload where the quarantine finds it.
    def quarantine?
      @quarantine.enabled?
    end

    # Called by the middleware when a quarantined job's thread left the job (it is in the dead set). Never raises.
    def left_quarantined(job, error)
      log(:warn, "quarantined job ended: #{job['wrapped'] || job['class']} (jid #{job['jid']}): #{error.message}")
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

    # Sidekiq's :quiet event: quiet took effect now (after our TSTP or anyone else's). Stops the monitor; a
    # restart under way goes on in its own thread.
    def quieted
      @native.quieted
      if @quiet_signalled_at
        log(:info, format("quiet took effect (Sidekiq's :quiet event) %.2fs after TSTP", monotonic - @quiet_signalled_at))
      end
      stop_monitor
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

    def monotonic
      ::Process.clock_gettime(::Process::CLOCK_MONOTONIC)
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
      case action
      when :restart_hard, :restart_soft then restart(action)
      when :restart_loop then warn_restart_loop
      end
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
      verdict = case action
                when nil then after < @settings.max_rss ? "back under the limit, no restart" : "under the hard limit"
                when :restart_loop then "still over the limit, and little came back"
                else "still over the limit"
                end
      @history.event(:reclaim, released: [before - after, 0].max, memory: after, still_over: !action.nil?)
      log(:info, "reclaimed #{Units.mb([before - after, 0].max)} (GC + #{purge ? 'purge' : 'no purge'}): #{verdict}",
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
      if @adapter.embedded? && SidekiqRust.embedded.nil?
        log_denial("over the limit but not restarting: Sidekiq runs embedded in this process (pid " \
                   "#{::Process.pid}), which the guard never signals; pass the instance of Sidekiq.configure_embed " \
                   "to SidekiqRust.embed to let the guard quiet and stop it", event)
        @native.slot_denied
        return
      end
      # require_other_process governs the soft limit only: the hard limit is there to beat the kernel's OOM
      # killer, which would lose the running jobs, so a sole process restarts too (its supervisor starts it again).
      granted, detail = @fleet.acquire(slot_ttl, require_other: reason == "soft_limit")
      unless granted
        log_denial("over the limit but not restarting: #{detail}", event)
        @native.slot_denied
        return
      end
      if @adapter.embedded?
        stop_embedded(event, SidekiqRust.embedded)
      else
        at_exit { give_back_slot }
        run_restart(event)
      end
    end

    def run_restart(event)
      @fleet.mark_memory_restart(@settings.loop_window)
      announce_restart(event, "restarting: quiet (TSTP), then TERM when no job runs (at most " \
                              "#{@settings.shutdown_wait}s)")
      signal("TSTP")
      action, memory = await_restart_step(*STOP_CAUSES.keys)
      quarantine_in_flight(event, memory)
      log(:warn, "restarting: stop (TERM), #{STOP_CAUSES.fetch(action)}; KILL if still alive after #{@kill_after}s",
          memory: memory, in_flight: in_flight)
      # A native timer, which Ruby's own shutdown cannot end, sends the KILL if this thread is gone by then.
      Native.arm_kill_timer(@kill_after)
      signal("TERM")
      _, memory = await_restart_step(:kill)
      log(:error, "restarting: still alive #{@kill_after}s after TERM, sending KILL", memory: memory)
      signal("KILL")
    end

    # The slot is ours: the policy moves to quieting, and the log, on_restart, the history and the per-class
    # figures say why; quiet is to follow at once.
    def announce_restart(event, message)
      @native.slot_granted
      log(:warn, message, **event)
      notify(event)
      @history.event(:restart, **event)
      publish
      @quiet_signalled_at = monotonic
    end

    # Samples the restart sequence's progress until the policy answers one of `wanted`; returns [action, memory].
    # Says so once if Sidekiq never reports quiet (the policy then counts the settle from that moment).
    def await_restart_step(*wanted)
      loop do
        sleep RESTART_POLL
        action, memory = @native.sample(read_metric, true)
        return [action, memory] if wanted.include?(action)
        next unless action == :quiet_unconfirmed

        log(:warn, "Sidekiq has not reported quiet (its :quiet event) #{QUIET_TIMEOUT}s after TSTP; stopping " \
                   "with TERM at least #{QUIET_SETTLE}s from now (Sidekiq's shutdown quiets first)", memory: memory)
      end
    end

    STOP_CAUSES = {
      stop_idle: "no job runs",
      stop_waited: "shutdown_wait passed, Sidekiq requeues the running jobs",
      stop_hard: "over the hard limit while quiet, Sidekiq requeues the running jobs"
    }.freeze

    # Sidekiq is about to requeue the jobs still in flight: counts this memory restart for each, and sends those
    # in flight at `quarantine_after` memory restarts to the dead set instead (their threads are interrupted, so
    # that Sidekiq has nothing of them to requeue). Logs them and calls on_restart with event: :quarantine.
    # Never raises: without Redis the jobs are requeued as usual.
    def quarantine_in_flight(event, memory)
      return unless @quarantine.enabled?

      jobs = in_flight
      poisoned = jobs.empty? ? [] : @quarantine.record(jobs)
      return if poisoned.empty?

      done = poisoned.select { |job| @quarantine.quarantine(job[:jid], quarantine_reason(job, event, memory)) }
      return if done.empty?

      log(:error, "quarantined #{done.size} job(s) in flight at #{@settings.quarantine_after} memory restarts " \
                  "(quarantine_after): sent to Sidekiq's dead set instead of being requeued again",
          memory: memory, reason: event[:reason], quarantined: done)
      quarantine_event = event.merge(event: :quarantine, memory: memory, quarantined: done)
      notify(quarantine_event)
      @history.event(:quarantine, **quarantine_event)
    rescue StandardError => e
      log_error("quarantining the jobs in flight (Sidekiq requeues them as usual)", e)
    end

    # The error the dead set shows for a quarantined job.
    def quarantine_reason(job, event, memory)
      "#{job[:class]} (jid #{job[:jid]}) exceeded the memory limit in #{job[:restarts]} processes: in flight at " \
        "#{job[:restarts]} memory restarts (quarantine_after = #{@settings.quarantine_after}), the last one " \
        "#{@tag} at #{@settings.metric}=#{Units.mb(memory)} (#{event[:reason]}, limit " \
        "#{Units.mb(@settings.max_rss)}, hard_limit #{Units.mb(@settings.hard_max_rss)}); not requeued " \
        "again. Retry it from the dead set once the job or the limit is fixed"
    end

    # The soft limit is below the working set: restarting would only rebuild it (the policy holds soft restarts
    # back until the process is loop_window old). Says what was seen and what to change.
    def warn_restart_loop
      memory = @native.decision_memory
      before, after = @native.last_reclaim
      reclaim = before ? "reclaim gave back #{Units.mb([before - after, 0].max)} of #{Units.mb(before)}" : "reclaim is off"
      working_set = [memory, Memory.peak_rss].max
      step = 50 * 1_048_576
      advice = Units.mb((working_set * 1.25 / step).ceil * step)
      log(:error, "restart loop: over max_rss #{Units.mb(@settings.max_rss)} #{@native.uptime.round}s after boot " \
                  "(it replaced a process of this host that restarted for memory), " \
                  "and #{reclaim}: the working set (#{Units.mb(memory)} now, peak #{Units.mb(working_set)}" \
                  "#{@concurrency ? " with concurrency #{@concurrency}" : ''}) does not fit the limit, and a restart " \
                  "would only rebuild it. No restart for the soft limit until this process is " \
                  "#{@settings.loop_window.round}s old (loop_window); the hard limit still applies. " \
                  "Raise max_rss to about #{advice}, or lower Sidekiq's concurrency" \
                  "#{@concurrency ? " (now #{@concurrency})" : ''} or run the big jobs in a process of their own",
          memory: memory, reason: "restart_loop", **attribution)
    end

    # The embedded counterpart of run_restart: quiet, wait until no job runs or `shutdown_wait` passes (or the
    # hard limit while quiet), then stop (Sidekiq requeues what still runs); the process itself is left alone and
    # the slot given back.
    def stop_embedded(event, embedded)
      announce_restart(event, "stopping embedded Sidekiq: quiet, then stop when no job runs (at most " \
                              "#{@settings.shutdown_wait}s); this process (pid #{::Process.pid}) goes on")
      embedded.quiet
      action, memory = await_restart_step(*STOP_CAUSES.keys)
      quarantine_in_flight(event, memory)
      log(:warn, "stopping embedded Sidekiq: stop, #{STOP_CAUSES.fetch(action)}", memory: memory, in_flight: in_flight)
      embedded.stop
      log(:warn, "stopped embedded Sidekiq; its memory goes back when the host process restarts",
          memory: current_memory)
    ensure
      @fleet.release
    end

    # At the exit of a restarting process: the slot goes back to the fleet at once (it would expire otherwise).
    # Logged first, so that whoever watches the logs never sees more processes restarting than there are slots.
    def give_back_slot
      log(:info, "restarting: exiting, restart slot given back")
      @fleet.release
    rescue StandardError => e
      log_error("giving back the restart slot (it expires after #{slot_ttl}s)", e)
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
        metric: @settings.metric, memory: @native.decision_memory.nonzero? || current_memory,
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
      now = monotonic
      return if @last_denial && @last_denial[0] == message && now - @last_denial[1] < DENIAL_LOG_EVERY

      @last_denial = [message, now]
      @history.event(:denial, message: message, **event)
      log(:warn, message, **event)
    end

    def log(level, message, memory: nil, reason: nil, in_flight: nil, top_retained: nil, top_growth: nil,
            quarantined: nil, **_rest)
      parts = ["sidekiq_rust: #{message}", "identity=#{@tag}"]
      parts << "#{@settings.metric}=#{Units.mb(memory)}" if memory
      parts << "limit=#{Units.mb(@settings.max_rss)} hard_limit=#{Units.mb(@settings.hard_max_rss)}"
      parts << "reason=#{reason}" if reason
      parts << "in_flight=#{format_in_flight(in_flight)}" if in_flight
      parts << "quarantined=#{format_quarantined(quarantined)}" if quarantined
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

    def format_quarantined(jobs)
      jobs.map { |j| "#{j[:class]}(jid #{j[:jid]}, in flight at #{j[:restarts]} memory restarts)" }.join(", ")
    end

    def format_top(rows, figure)
      return "none" if rows.empty?

      rows.map { |r| "#{r[:class]}(#{Units.bytes(r[figure])}/job in #{r[:jobs]} jobs)" }.join(", ")
    end

    def log_error(where, error)
      @logger.error("sidekiq_rust: error #{where}: #{error.class}: #{error.message} identity=#{@tag}")
    rescue StandardError
      nil
    end
  end
end
