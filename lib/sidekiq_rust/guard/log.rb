# frozen_string_literal: true

module SidekiqRust
  class Guard
    # The guard's log lines: one format for every line ("sidekiq_rust: MESSAGE identity=... rss=... max_rss=..."),
    # the texts that explain a decision (the restart-loop advice, a quarantined job's reason), and the refusals,
    # each said again at most every DENIAL_EVERY seconds unless it changes. Never raises: logging must never break
    # the guard.
    class Log
      # A refusal (sole process, no slot, Redis down) is logged again at most this often, unless it changes.
      DENIAL_EVERY = 60
      # The restart-loop advice rounds the limit it proposes up to this step.
      ADVICE_STEP = 50 * Units::MB

      # The native guard, once made (Guard sets it): the limits each line names are the ones in force, which
      # move with the memory cgroup's limit where given as shares of it.
      attr_writer :native

      def initialize(settings, logger:, tag:)
        @settings = settings
        @logger = logger
        @tag = tag
        @last_denial = nil
        @native = nil
      end

      def info(message, **fields)
        write(:info, message, **fields)
      end

      def warn(message, **fields)
        write(:warn, message, **fields)
      end

      def error(message, **fields)
        write(:error, message, **fields)
      end

      # A FailureNotice that writes here, with this process's identity: a repeated failure said once, its
      # recovery once.
      def notice(failure:, recovery:)
        FailureNotice.new(@logger, failure: failure, recovery: recovery, tag: @tag)
      end

      def failure(where, error)
        @logger.error("sidekiq_rust: error #{where}: #{error.class}: #{error.message} identity=#{@tag}")
      rescue StandardError
        nil
      end

      # Logs a refused restart unless the same refusal was logged less than DENIAL_EVERY ago; returns whether
      # it logged (the history records what is logged).
      def denial(message, fields)
        now = Clock.now
        return false if @last_denial && @last_denial[0] == message && now - @last_denial[1] < DENIAL_EVERY

        @last_denial = [message, now]
        warn(message, **fields)
        true
      end

      # Memory passed max_rss (the core's notice, once per crossing): what the guard will do about it, and when.
      def over_max_rss(over)
        restart = "a graceful restart"
        restart = "a reclaim (GC + purge), then a graceful restart if still over" if over[:reclaim]
        restart = if !over[:restarts]
                    "no restart (dry run, or an embedded Sidekiq without its instance)"
                  elsif over[:needs_other_process]
                    "#{restart}, while another process serves (require_other_process)"
                  else
                    restart
                  end
        hard = over[:hard_max_rss] ? "at once at hard_max_rss #{Units.mb(over[:hard_max_rss])}" : "no hard_max_rss set"
        grace = over[:grace_left].round
        at = grace.positive? ? "unless it is back under within #{grace}s (grace_time), " : "now: "
        warn("over max_rss: #{at}#{restart}; #{hard}", memory: over[:memory])
      end

      # The soft limit is below the working set: what was seen and what to change.
      def restart_loop(memory:, peak:, last_reclaim:, uptime:, concurrency:, attribution:)
        reclaim = if last_reclaim
                    before = last_reclaim[:before]
                    "reclaim gave back #{Units.mb([before - last_reclaim[:after], 0].max)} of #{Units.mb(before)}"
                  else
                    "reclaim is off"
                  end
        working_set = [memory, peak].max
        advice = Units.mb((working_set * 1.25 / ADVICE_STEP).ceil * ADVICE_STEP)
        error("restart loop: over max_rss #{Units.mb(limits[:max_rss])} #{uptime.round}s after boot " \
              "(it replaced a process of this host that restarted for memory), " \
              "and #{reclaim}: the working set (#{Units.mb(memory)} now, peak #{Units.mb(working_set)}" \
              "#{concurrency ? " with concurrency #{concurrency}" : ''}) does not fit the limit, and a restart " \
              "would only rebuild it. No restart for the soft limit until this process is " \
              "#{@settings.loop_window.round}s old (loop_window); the hard limit still applies. " \
              "Raise max_rss to about #{advice}, or lower Sidekiq's concurrency" \
              "#{concurrency ? " (now #{concurrency})" : ''} or run the big jobs in a process of their own",
              memory: memory, reason: "restart_loop", **attribution)
      end

      # The error the dead set shows for a quarantined job.
      def quarantine_reason(job, event, memory)
        "#{job[:class]} (jid #{job[:jid]}) exceeded the memory limit in #{job[:restarts]} processes: in flight at " \
          "#{job[:restarts]} memory restarts (quarantine_after = #{@settings.quarantine_after}), the last one " \
          "#{@tag} at #{@settings.metric}=#{Units.mb(memory)} (#{event[:reason]}, limit " \
          "#{Units.mb(limits[:max_rss])}, hard_max_rss #{Units.mb(limits[:hard_max_rss])}); not requeued " \
          "again. Retry it from the dead set once the job or the limit is fixed"
      end

      # The limits moved with the memory cgroup's limit (the monitor's reading saw it change).
      def limits_moved(moved)
        was = moved[:was]
        now = moved[:now]
        brake = now[:brake_at] ? ", the brake at #{Units.mb(now[:brake_at])}..#{Units.mb(now[:resume_at])}" : ""
        hard = now[:hard_max_rss] ? Units.mb(now[:hard_max_rss]) : "none"
        warn("the memory cgroup's limit is now #{Units.mb(moved[:limit])} (was #{Units.mb(moved[:was_limit])}): " \
             "max_rss #{Units.mb(now[:max_rss])} (was #{Units.mb(was[:max_rss])}), hard_max_rss #{hard}#{brake}")
      end

      # The limits in force: the native guard's, or the configured ones before it is made.
      def limits
        @native ? @native.limits : @settings.limits
      rescue StandardError
        @settings.limits
      end

      private

      def write(level, message, memory: nil, reason: nil, in_flight: nil, top_retained: nil, quarantined: nil,
                verdict: nil, purge_error: nil, **_rest)
        parts = ["sidekiq_rust: #{message}", "identity=#{@tag}"]
        parts << "#{@settings.metric}=#{Units.mb(memory)}" if memory
        bounds = limits
        parts << "max_rss=#{Units.mb(bounds[:max_rss])} hard_max_rss=#{Units.mb(bounds[:hard_max_rss])}"
        parts << "reason=#{reason}" if reason
        parts << "in_flight=#{in_flight_text(in_flight)}" if in_flight
        parts << "quarantined=#{quarantined_text(quarantined)}" if quarantined
        parts << "top_retained=#{top_text(top_retained)}" if top_retained
        parts << "verdict=\"#{verdict}\"" if verdict
        parts << "purge_error=\"#{purge_error}\"" if purge_error
        @logger.public_send(level, parts.join(" "))
      rescue StandardError
        nil
      end

      def in_flight_text(jobs)
        return "none" if jobs.empty?

        jobs.map { |j| "#{j[:class]}(jid #{j[:jid]}, #{j[:running_s]}s)" }.join(", ")
      end

      def quarantined_text(jobs)
        jobs.map { |j| "#{j[:class]}(jid #{j[:jid]}, in flight at #{j[:restarts]} memory restarts)" }.join(", ")
      end

      def top_text(rows)
        return "none" if rows.empty?

        rows.map { |r| "#{r[:class]}(#{Report.evidence(r)})" }.join(", ")
      end
    end
  end
end
