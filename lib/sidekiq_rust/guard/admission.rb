# frozen_string_literal: true

module SidekiqRust
  class Guard
    # Admission, as Ruby carries it out (the decision is Native::Guard#admit's, see docs/admission.md): a fetched
    # job the core holds goes back to the front of its queue through the fetcher's own unit of work, a reclaim
    # (GC + purge) runs when the core asks for one before it decides again, and what the core decided is told:
    # the first hold of each class and each class's first measuring run (info), a class too big for the process
    # and a declaration that is not a size or far from what its jobs measured (each once), and a hold in the
    # history (the Memory tab's events) at most every EVENT_EVERY seconds.
    class Admission
      # A hold goes to the history at most this often (seconds).
      EVENT_EVERY = 10

      def initialize(native, log:, history:, reclaimer:)
        @native = native
        @reclaimer = reclaimer
        @log = log
        @history = history
        @said = {}
        @last_event = nil
      end

      # Whether a fetched unit of work starts now: false when the core held it (it is back at the front of its
      # queue). Never raises: a failure starts the job (never lost; held only when the requeue succeeded).
      def admit(work)
        answer = decide(work.job)
        return true unless answer && answer[:decision] == :hold

        work.requeue
        held(answer)
        false
      rescue StandardError => e
        @log.failure("admitting a job (it starts)", e)
        true
      end

      # What the core learned since (a declared figure far from the measured one), each said once.
      def notes
        @native.admission_notes.each { |note| say(note[:class], note) }
      rescue StandardError => e
        @log.failure("reading admission's notes", e)
      end

      private

      # The core's answer for a fetched job's payload (nil: it starts); when the core asks for a reclaim first
      # (what the last jobs left stands between the job and the bound), the reclaim runs and the core decides
      # again (never :reclaim twice in a row).
      def decide(job)
        answer = @native.admit(job)
        return nil if answer.nil?

        tell(answer)
        return answer unless answer[:decision] == :reclaim

        reclaim
        answer = @native.admit(job)
        tell(answer) if answer
        answer
      end

      def reclaim
        @reclaimer.measure(force: true)
      rescue StandardError => e
        @log.failure("reclaiming before admitting a job (admission decides without it)", e)
      end

      def tell(answer)
        say(answer[:class], answer[:say]) if answer[:say]
        return unless answer[:decision] == :probe && once(:probe, answer[:class])

        @log.info("admission: #{answer[:class]} is not measured yet: its first job runs alone and measured " \
                  "(declare it with sidekiq_options memory: \"150MB\" to skip this)")
      end

      def held(answer)
        if once(answer[:hold], answer[:class])
          @log.info("admission: #{answer[:class]} waits (#{why(answer)}): back to the front of its queue until a " \
                    "running job ends; counted in sidekiq_rust_admission_deferred_total")
        end
        now = Clock.now
        return if @last_event && now - @last_event < EVENT_EVERY

        @last_event = now
        @history.event(:admission, class: answer[:class], hold: answer[:hold], need: answer[:need],
                                   projected: answer[:projected], bound: answer[:bound])
      end

      def why(answer)
        case answer[:hold]
        when :no_room
          "needs #{Units.mb(answer[:need])}: #{Units.mb(answer[:projected])} with the running jobs, over brake_at " \
            "#{Units.mb(answer[:bound])}"
        when :unmeasured then "not measured yet: it runs alone once the running jobs end"
        when :too_big then "needs more than the process can give: it runs alone once the running jobs end"
        else "another job runs alone"
        end
      end

      def say(klass, said)
        return unless once(said[:say], klass)

        case said[:say]
        when :too_big
          @log.warn("admission: #{klass} needs #{Units.mb(said[:need])}, more than this process can ever give " \
                    "(#{Units.mb(said[:room])}: brake_at less its idle memory): it runs alone, the other jobs held " \
                    "meanwhile. Give it its own capsule or queue, raise max_rss, or declare a smaller figure if " \
                    "this one is wrong")
        when :bad_declared
          @log.error("admission: #{klass} declares memory: #{said[:value].inspect}; expected a size like " \
                     "\"150MB\" or \"1.5GB\", or an Integer (MB): its jobs run as if undeclared")
        when :mismatch
          @log.warn("admission: #{klass} declares memory: #{Units.mb(said[:declared])}, and a job of it measured " \
                    "#{Units.mb(said[:learned])} alone: the declared figure is the one used; correct it")
        end
      end

      def once(what, klass)
        return false if @said[[what, klass]]

        @said[[what, klass]] = true
      end
    end
  end
end
