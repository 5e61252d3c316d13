# frozen_string_literal: true

module SidekiqRust
  class Guard
    # The monitor thread: every check_interval a reading (it catches idle processes, which no job end checks),
    # a measuring reclaim when due, and the per-class figures published. Never raises.
    class Monitor
      def initialize(guard, interval:, log:)
        @guard = guard
        @interval = interval
        @log = log
        @lock = Mutex.new
        @wakeup = ConditionVariable.new
        @thread = nil
        @running = false
      end

      def start
        @lock.synchronize do
          return if @thread&.alive?

          @running = true
          @thread = Thread.new { run }
        end
      end

      def stop
        @lock.synchronize do
          @running = false
          @wakeup.broadcast
        end
        @thread&.join(2)
      end

      private

      def run
        Thread.current.name = "sidekiq_rust-monitor"
        loop do
          @lock.synchronize do
            @wakeup.wait(@lock, @interval) if @running
            return unless @running
          end
          begin
            @guard.check
            @guard.measure
            @guard.publish
          rescue StandardError => e
            @log.failure("in the monitor", e)
          end
        end
      end
    end
  end
end
