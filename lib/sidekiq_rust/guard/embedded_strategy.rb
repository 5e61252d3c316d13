# frozen_string_literal: true

module SidekiqRust
  class Guard
    # How an embedded Sidekiq (Sidekiq.configure_embed, handed to SidekiqRust.embed) restarts: it shares another
    # program's process, which the guard never signals. Quiet and stop are the instance's; the process goes on,
    # and the slot goes back to the fleet at the stop. There is no kill (the policy ends at the stop).
    class EmbeddedStrategy
      def initialize(embedded, guard:, fleet:, log:, settings:)
        @embedded = embedded
        @guard = guard
        @fleet = fleet
        @log = log
        @settings = settings
      end

      def quiet_name
        "quiet"
      end

      def stop_name
        "stop"
      end

      def begin(event)
        @guard.announce(event, "stopping embedded Sidekiq: quiet, then stop when no job runs (at most " \
                               "#{@settings.shutdown_wait}s); this process (pid #{::Process.pid}) goes on")
      end

      def quiet
        @embedded.quiet
      end

      def stop(cause, memory:, in_flight:)
        @log.warn("stopping embedded Sidekiq: stop, #{cause}", memory: memory, in_flight: in_flight)
        @embedded.stop
        @log.warn("stopped embedded Sidekiq; its memory goes back when the host process restarts",
                  memory: Memory.rss)
      ensure
        @fleet.release
      end

      def kill(memory:)
        @log.error("embedded Sidekiq still running after its stop; the guard never signals this process",
                   memory: memory)
      end
    end
  end
end
