# frozen_string_literal: true

module SidekiqRust
  # The memory guard of one Sidekiq process. The Rust state machine (Native::Guard) decides; this class reads
  # memory, carries the decisions out in a thread of its own (never a job's thread), talks to the fleet and logs.
  #
  # Sequence of a restart: take a fleet slot -> quiet (TSTP to this process) -> wait until no job runs or
  # `shutdown_wait` passes -> TERM (Sidekiq requeues what still runs) -> KILL only after `kill_after`.
  # A supervisor (systemd Restart=always, Kubernetes) starts the process again.
  #
  # Embedded Sidekiq (Sidekiq.configure_embed) shares another program's process: the guard never signals it.
  # It quiets and stops Sidekiq through the embed instance handed to SidekiqRust.embed, and the process goes on;
  # without that instance a restart is refused (and logged). Reclaim works the same in both modes.
  class Guard
    # How often the restart sequence looks at the busy count.
    RESTART_POLL = 0.25
    # After quiet, Sidekiq's idle processors may still sit in a blocking fetch (BRPOP, 2 s) for a moment. TERM
    # is never sent sooner than this, so that a job Sidekiq pushes back at shutdown cannot be fetched by a
    # processor that is about to be killed (Sidekiq's basic fetch would lose it).
    QUIET_SETTLE = 2.5
    # A refusal (sole process, no slot, Redis down) is logged again at most this often, unless it changes.
    DENIAL_LOG_EVERY = 60

    attr_reader :settings, :fleet, :kill_after

    def initialize(settings, sidekiq_timeout:, adapter: SidekiqAdapter)
      @settings = settings
      @adapter = adapter
      @logger = settings.logger || adapter.logger
      @kill_after = settings.kill_after || (sidekiq_timeout + Configuration::KILL_AFTER_MARGIN)
      @tag = adapter.own_tag
      @fleet = Fleet.new(settings, adapter: adapter, tag: @tag)
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
    end

    # Called by the middleware before a job: counts it in, returns the memory baseline (no system call).
    def job_started
      @native.job_started
    end

    # Called by the middleware after a job, even a failed one: one RSS read, the job class's growth recorded,
    # the limits checked. Never raises.
    def job_finished(job_class, start)
      action = @native.job_finished(job_class, start, @settings.metric == :rss)
      dispatch(action) if action
    rescue StandardError => e
      log_error("after a #{job_class} job", e)
    end

    # One reading by the monitor; returns the memory figure.
    def check
      action, memory = @native.sample(read_metric, false)
      dispatch(action) if action
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

    # The job classes that grew memory the most: [{class:, count:, total_growth:, max_growth:}], bytes.
    def report(limit = 5)
      @native.report(limit).map do |klass, count, total, max|
        { class: klass, count: count, total_growth: total, max_growth: max }
      end
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

    def reclaim
      before = current_memory
      GC.start
      purge = begin
        Allocator.purge
      rescue NotSupported => e
        log(:info, "reclaim: allocator purge skipped (#{e.message})")
        nil
      end
      after = current_memory
      action = @native.reclaimed(after)
      verdict = action ? "still over the limit" : "back under the limit, no restart"
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
      if @adapter.embedded? && SidekiqRust.embedded.nil?
        log_denial("over the limit but not restarting: Sidekiq runs embedded in this process (pid " \
                   "#{::Process.pid}), which the guard never signals; pass the instance of Sidekiq.configure_embed " \
                   "to SidekiqRust.embed to let the guard quiet and stop it", event)
        @native.slot_denied
        return
      end
      granted, detail = @fleet.acquire(slot_ttl)
      unless granted
        log_denial("over the limit but not restarting: #{detail}", event)
        @native.slot_denied
        return
      end
      if @adapter.embedded?
        stop_embedded(event, SidekiqRust.embedded)
      else
        at_exit { @fleet.release }
        run_restart(event)
      end
    end

    def run_restart(event)
      @native.slot_granted
      log(:warn, "restarting: quiet (TSTP), then TERM when no job runs (at most #{@settings.shutdown_wait}s)",
          **event)
      notify(event)
      signal("TSTP")
      sleep QUIET_SETTLE
      loop do
        sleep RESTART_POLL
        action, memory = @native.sample(read_metric, true)
        case action
        when :stop
          log(:warn, "restarting: stop (TERM); KILL if still alive after #{@kill_after}s", memory: memory)
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

    # The embedded counterpart of run_restart: quiet, wait until no job runs or `shutdown_wait` passes, then stop
    # (Sidekiq requeues what still runs); the process itself is left alone and the slot given back.
    def stop_embedded(event, embedded)
      @native.slot_granted
      log(:warn, "stopping embedded Sidekiq: quiet, then stop when no job runs (at most " \
                 "#{@settings.shutdown_wait}s); this process (pid #{::Process.pid}) goes on", **event)
      notify(event)
      embedded.quiet
      sleep QUIET_SETTLE
      loop do
        sleep RESTART_POLL
        action, memory = @native.sample(read_metric, true)
        next unless action == :stop

        log(:warn, "stopping embedded Sidekiq: stop", memory: memory)
        embedded.stop
        log(:warn, "stopped embedded Sidekiq; its memory goes back when the host process restarts",
            memory: current_memory)
        return
      end
    ensure
      @fleet.release
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
        limit: @settings.max_rss, hard_limit: @settings.hard_max_rss, busy: @native.busy,
        top_jobs: report(5), dry_run: false
      }
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
      log(:warn, message, **event)
    end

    def log(level, message, memory: nil, reason: nil, top_jobs: nil, **_rest)
      parts = ["sidekiq_rust: #{message}", "identity=#{@tag}"]
      parts << "#{@settings.metric}=#{Settings.mb(memory)}" if memory
      parts << "limit=#{Settings.mb(@settings.max_rss)} hard_limit=#{Settings.mb(@settings.hard_max_rss)}"
      parts << "reason=#{reason}" if reason
      parts << "top_jobs=#{format_jobs(top_jobs)}" if top_jobs
      @logger.public_send(level, parts.join(" "))
    rescue StandardError
      nil # logging must never break the guard
    end

    def format_jobs(jobs)
      return "none" if jobs.empty?

      jobs.map do |j|
        "#{j[:class]}(#{signed_mb(j[:total_growth])} in #{j[:count]} jobs, max #{signed_mb(j[:max_growth])})"
      end.join(", ")
    end

    def signed_mb(bytes)
      bytes.negative? ? "-#{Settings.mb(-bytes)}" : "+#{Settings.mb(bytes)}"
    end

    def log_error(where, error)
      @logger.error("sidekiq_rust: error #{where}: #{error.class}: #{error.message} identity=#{@tag}")
    rescue StandardError
      nil
    end
  end
end
