# frozen_string_literal: true

module SidekiqRust
  class Guard
    # Carries out the restart actions the policy returns, and reports their outcomes back to it: restart_*
    # (ask the fleet for a slot: SlotGranted or SlotDenied with its reason), quiet, quiet_unconfirmed, quarantine
    # (then Quarantined), stop_*, kill. How a process quiets and stops is the strategy's: ProcessStrategy signals
    # this process, EmbeddedStrategy calls the embedded Sidekiq instance.
    # Each method returns the policy's next action (nil: none).
    class Restart
      STOP_CAUSES = {
        stop_idle: "no job runs",
        stop_waited: "shutdown_wait passed, Sidekiq requeues the running jobs",
        stop_hard: "over the hard limit while quiet, Sidekiq requeues the running jobs"
      }.freeze

      def initialize(guard, native:, settings:, fleet:, history:, quarantine:, log:, adapter:)
        @guard = guard
        @native = native
        @settings = settings
        @fleet = fleet
        @history = history
        @quarantine = quarantine
        @log = log
        @adapter = adapter
        @strategy = nil
        @event = nil
        @quiet_signalled_at = nil
      end

      # Why a restart for retained memory (:restart_retained) is asked for, said before it starts.
      RETAINED = "memory retained: the brake paused fetching, the running jobs finished and a reclaim ran, and " \
                 "memory is still at brake_at; only a restart gives it back. A paused process serves no job, so " \
                 "it restarts even as the fleet's only process (its queued jobs wait in Redis)"

      # :restart_soft / :restart_hard / :restart_retained: the fleet's slot, or the refusal's reason.
      # What the request needs is the core's (Native::Guard#restart_request): a refusal with no slot asked for
      # (a dry run, an embedded Sidekiq without its instance), or a slot and what it needs of the other
      # processes (`peers:`, Fleet#acquire).
      def request(_action)
        request = @native.restart_request
        @event = @guard.event_for(request[:reason].to_s)
        denial, message = refusal(request)
        return refused(denial, message) if denial

        @strategy = strategy
        @log.info(RETAINED, memory: @event[:memory]) if request[:reason] == :retained
        @strategy.begin(@event)
        @native.slot_granted
      end

      def quiet
        @quiet_signalled_at = Clock.now
        @strategy.quiet
        nil
      end

      # Sidekiq's :quiet event came (after our quiet or anyone else's).
      def quieted
        return unless @quiet_signalled_at

        @log.info(format("quiet took effect (Sidekiq's :quiet event) %.2fs after %s",
                         Clock.now - @quiet_signalled_at, @strategy.quiet_name))
      end

      def quiet_unconfirmed
        @log.warn("Sidekiq has not reported quiet (its :quiet event) #{QUIET_TIMEOUT}s after " \
                  "#{@strategy.quiet_name}; stopping with #{@strategy.stop_name} at least #{QUIET_SETTLE}s from now " \
                  "(Sidekiq's shutdown quiets first)", memory: @native.last_memory)
        nil
      end

      # Sidekiq is about to requeue the jobs still in flight: counts this memory restart for each, and sends those
      # in flight at `quarantine_after` memory restarts to the dead set instead (their threads are interrupted,
      # so that Sidekiq has nothing of them to requeue). Never raises: without Redis the jobs are requeued.
      def quarantine
        quarantine_in_flight(@native.decision_memory)
        @native.quarantined
      end

      def stop(action)
        @strategy.stop(STOP_CAUSES.fetch(action), memory: @native.decision_memory, in_flight: @guard.in_flight)
        nil
      end

      def kill
        @strategy.kill(memory: @native.last_memory)
        nil
      end

      private

      # [denial, message] when this process may not restart now, nil when the fleet gave it a slot.
      def refusal(request)
        case request[:refusal]
        when :dry_run then [:dry_run, "dry run: would restart"]
        when :embedded
          [:embedded, "over the limit but not restarting: Sidekiq runs embedded in this process (pid " \
                      "#{::Process.pid}), which the guard never signals; pass the instance of " \
                      "Sidekiq.configure_embed to SidekiqRust.embed to let the guard quiet and stop it"]
        else
          slot = @fleet.acquire(@guard.slot_ttl, peers: request[:peers])
          slot.granted ? nil : [slot.denial, "over the limit but not restarting: #{slot.text}"]
        end
      end

      def refused(denial, message)
        @history.event(:denial, denial: denial, message: message, **@event) if @log.denial(message, @event)
        @guard.notify(@event.merge(dry_run: true)) if denial == :dry_run
        @native.slot_denied(denial)
      end

      def strategy
        args = { guard: @guard, fleet: @fleet, log: @log, settings: @settings }
        if @adapter.embedded?
          EmbeddedStrategy.new(SidekiqRust.embedded, **args)
        else
          ProcessStrategy.new(kill_after: @guard.kill_after, **args)
        end
      end

      def quarantine_in_flight(memory)
        return unless @quarantine.enabled?

        jobs = @guard.in_flight
        poisoned = jobs.empty? ? [] : @quarantine.record(jobs)
        done = poisoned.select { |job| @quarantine.quarantine(job[:jid], @log.quarantine_reason(job, @event, memory)) }
        return if done.empty?

        @log.error("quarantined #{done.size} job(s) in flight at #{@settings.quarantine_after} memory restarts " \
                   "(quarantine_after): sent to Sidekiq's dead set instead of being requeued again",
                   memory: memory, reason: @event[:reason], quarantined: done)
        quarantine_event = @event.merge(event: :quarantine, memory: memory, quarantined: done)
        @guard.notify(quarantine_event)
        @history.event(:quarantine, **quarantine_event)
      rescue StandardError => e
        @log.failure("quarantining the jobs in flight (Sidekiq requeues them as usual)", e)
      end
    end
  end
end
