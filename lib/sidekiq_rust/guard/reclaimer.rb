# frozen_string_literal: true

module SidekiqRust
  class Guard
    # GC + allocator purge, one native call (Native::Guard#reclaim: the metric before, GC.start, the purge
    # without the GVL, the metric after), one at a time: the reclaims the policy asks for, and the monitor's
    # measuring reclaims that give the per-class retained figure (what a reclaim gives back counts for no job).
    class Reclaimer
      # What the policy concluded from a reclaim it asked for (the core's verdict), for the log line.
      VERDICTS = {
        back_under: "back under the limit, no restart",
        under_hard: "under the hard limit",
        still_over: "still over the limit",
        loop: "still over the limit, and little came back",
        resumed: "fetching again (below resume_at, or below brake_at with no job running)",
        retained: "still at brake_at after the running jobs finished: the memory is retained, not in flight, and " \
                  "only a restart gives it back"
      }.freeze

      def initialize(native, log:, history:)
        @native = native
        @log = log
        @history = history
        @lock = Mutex.new
        # A measuring reclaim logs nothing: its purge failing is said once (the policy's reclaims say it each time).
        @purge_notice = log.notice(failure: "the purge of the measuring reclaims went wrong",
                                   recovery: "the purge of the measuring reclaims works again")
      end

      # The reclaim the policy asked for (`action` :reclaim_soft, :reclaim_hard or :reclaim_brake): logs what came
      # back and returns the policy's next action.
      def reclaim(action)
        result = run(decide: true)
        after = result[:after]
        released = [result[:before] - after, 0].max
        @history.event(:reclaim, released: released, memory: after, reason: result[:reason].to_s,
                                 still_over: result[:still_over])
        @log.info("reclaimed #{Units.mb(released)} (GC + #{result[:purged] ? 'purge' : 'no purge'}" \
                  "#{action == :reclaim_brake ? ', brake paused and idle' : ''}): #{VERDICTS.fetch(result[:verdict])}",
                  memory: after, purge_error: result[:purge_error])
        result[:action]
      end

      # A measuring reclaim when the core says one is due (or may run, with `force: true`: the process serves).
      # Returns true if it ran.
      def measure(force: false)
        return false unless @native.measure_due?(force)

        result = run(decide: false)
        result[:purge_error] ? @purge_notice.failed(result[:purge_error]) : @purge_notice.succeeded
        true
      end

      private

      def run(decide:)
        @lock.synchronize { @native.reclaim(decide) }
      end
    end
  end
end
