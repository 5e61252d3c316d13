# frozen_string_literal: true

module SidekiqRust
  class Guard
    # How a `sidekiq` process restarts: quiet is TSTP to its own PID (Process#quiet! through Redis would wait for
    # the next heartbeat), stop is TERM (Sidekiq requeues what still runs), with a native timer armed that KILLs
    # after `kill_after` even if Ruby's own shutdown hangs. A supervisor (systemd Restart=always, Kubernetes)
    # starts the process again. The restart slot goes back to the fleet at exit.
    class ProcessStrategy
      def initialize(guard:, fleet:, log:, settings:, kill_after:)
        @guard = guard
        @fleet = fleet
        @log = log
        @settings = settings
        @kill_after = kill_after
      end

      def quiet_name
        "TSTP"
      end

      def stop_name
        "TERM"
      end

      def begin(event)
        at_exit { give_back_slot }
        @fleet.mark_memory_restart(@settings.loop_window)
        @guard.announce(event, "restarting: quiet (TSTP), then TERM when no job runs (at most " \
                               "#{@settings.shutdown_wait}s)")
      end

      def quiet
        signal("TSTP")
      end

      def stop(cause, memory:, in_flight:)
        @log.warn("restarting: stop (TERM), #{cause}; KILL if still alive after #{@kill_after}s",
                  memory: memory, in_flight: in_flight)
        Native.arm_kill_timer(@kill_after)
        signal("TERM")
      end

      def kill(memory:)
        @log.error("restarting: still alive #{@kill_after}s after TERM, sending KILL", memory: memory)
        signal("KILL")
      end

      private

      # Logged first, so that whoever watches the logs never sees more processes restarting than there are slots.
      def give_back_slot
        @log.info("restarting: exiting, restart slot given back")
        @fleet.release
      rescue StandardError => e
        @log.failure("giving back the restart slot (it expires after #{@guard.slot_ttl}s)", e)
      end

      def signal(name)
        ::Process.kill(name, ::Process.pid)
      end
    end
  end
end
