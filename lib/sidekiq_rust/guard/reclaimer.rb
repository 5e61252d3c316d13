# frozen_string_literal: true

module SidekiqRust
  class Guard
    # GC + allocator purge, one native call (Native::Guard#reclaim: the metric before, GC.start, the purge
    # without the GVL, the metric after), one at a time: the reclaims the policy asks for, and the monitor's
    # measuring reclaims that give the per-class retained figure (what a reclaim gives back counts for no job).
    class Reclaimer
      # Measuring reclaims take at most 1/MEASURE_BUDGET of the process's time (the next one waits at least this
      # many times as long as the last one took).
      MEASURE_BUDGET = 20
      # A floor read just as a job started closes no window of the retained figure (what that job keeps may or
      # may not be in it): the next measuring reclaim then comes after this share of measure_interval (the
      # budget above still holds).
      REMEASURE_SHARE = 0.1

      VERDICTS = {
        resume: "below resume_at: fetching again",
        resume_retained: "still above resume_at after the running jobs finished: the memory is retained, not " \
                         "in flight, so the brake lets go (the limits decide)",
        warn_loop: "still over the limit, and little came back"
      }.freeze

      def initialize(native, settings, log:, history:)
        @native = native
        @settings = settings
        @log = log
        @history = history
        @lock = Mutex.new
        @next_measure = settings.measure_interval && (Clock.now + settings.measure_interval)
        # A measuring reclaim logs nothing: its purge failing is said once (the policy's reclaims say it each time).
        @purge_notice = log.notice(failure: "the purge of the measuring reclaims went wrong",
                                   recovery: "the purge of the measuring reclaims works again")
      end

      # The reclaim the policy asked for (`action` :reclaim_soft, :reclaim_hard or :reclaim_brake): logs what came
      # back and returns the policy's next action.
      def reclaim(action)
        result = run(decide: true)
        next_action = result[:action]
        after = result[:after]
        released = [result[:before] - after, 0].max
        @history.event(:reclaim, released: released, memory: after, reason: action.to_s.delete_prefix("reclaim_"),
                                 still_over: !next_action.nil? && !next_action.to_s.start_with?("resume"))
        @log.info("reclaimed #{Units.mb(released)} (GC + #{result[:purged] ? 'purge' : 'no purge'}" \
                  "#{action == :reclaim_brake ? ', brake paused and idle' : ''}): #{verdict(next_action, after)}",
                  memory: after, purge_error: result[:purge_error])
        next_action
      end

      # A measuring reclaim when due (or at once with `force: true`). Returns true if it ran.
      def measure(force: false)
        return false unless force || (@next_measure && Clock.now >= @next_measure)

        result = run(decide: false)
        result[:purge_error] ? @purge_notice.failed(result[:purge_error]) : @purge_notice.succeeded
        true
      end

      private

      def verdict(next_action, after)
        case next_action
        when nil then after < @settings.max_rss ? "back under the limit, no restart" : "under the hard limit"
        when :resume, :resume_retained, :warn_loop then VERDICTS.fetch(next_action)
        else "still over the limit"
        end
      end

      def schedule(measured, started, finished)
        interval = @settings.measure_interval
        return unless interval

        delay = measured ? interval : interval * REMEASURE_SHARE
        @next_measure = finished + [delay, (finished - started) * MEASURE_BUDGET].max
      end

      def run(decide:)
        @lock.synchronize do
          started = Clock.now
          result = @native.reclaim(decide)
          finished = Clock.now
          schedule(result[:measured], started, finished)
          result
        end
      end
    end
  end
end
