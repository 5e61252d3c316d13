# frozen_string_literal: true

module SidekiqRust
  class Guard
    # What the guard says about a process's memory when it restarts or stops: the per-class rows, the jobs in
    # flight, the top classes, the class with the strongest evidence and the one-line verdict (Verdict).
    class Explanation
      # Classes named in a log line and an event, by retained per job (the figure tested against zero on its
      # evidence; growth per job is not: it stays in the report, not in a restart's line).
      TOP = 5

      def initialize(native, log:)
        @native = native
        @log = log
      end

      # Per job class: [{class:, jobs:, retained_per_job:, growth_per_job:, allocated_per_job:, retained_error:,
      # windows:}] (bytes, nil when unknown), largest retained first (Native::Guard#report), with admission on
      # also working_set: (declared, else learned; nil: neither) and deferred: (jobs sent back to wait). See
      # Report.
      def report(limit: nil)
        rows = with_working_sets(@native.report)
        limit ? rows.first(limit) : rows
      end

      # Admission's figures (Native::Guard#admission_classes) on the rows of the classes they are of.
      def with_working_sets(rows)
        return rows unless @native.admission?

        needs = @native.admission_classes.to_h { |need| [need[:class], need] }
        rows.map do |row|
          need = needs[row[:class]]
          row.merge(working_set: need&.fetch(:working_set), deferred: need ? need[:deferred] : 0)
        end
      end

      # The jobs running now, longest first: [{class:, jid:, running_s:}].
      def in_flight
        @native.in_flight.map { |job| job.merge(running_s: job[:running_s].round(1)) }
      end

      # The jobs in flight and the top classes by retained per job (`rows`: #report's, when the caller already
      # has them: the fit runs once per call of #report).
      def attribution(rows = report)
        { in_flight: in_flight, top_retained: Report.top(rows, :retained_per_job, TOP) }
      end

      # The class with the strongest evidence (nil: none the figures tell from zero) and the one-line verdict:
      # a leak in it, fragmentation, or live memory no class explains. Never raises.
      def verdict(rows = report)
        { suspect: Report.strongest(rows),
          verdict: Verdict.line(rows: rows, fragmentation: Fragmentation.read, last_reclaim: @native.last_reclaim) }
      rescue StandardError => e
        @log.failure("reading the verdict", e)
        { suspect: nil, verdict: nil }
      end
    end
  end
end
