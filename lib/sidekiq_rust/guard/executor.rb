# frozen_string_literal: true

module SidekiqRust
  class Guard
    # Carries out the actions the native policy returns, in the guard's own thread (never a job's): each action,
    # then the next one its outcome gives, until there is none. Actions come through a queue, in order, so that
    # none is dropped while another is carried out. The brake's actions take effect at once, in the caller's
    # thread (they only move the fetch gate).
    #
    #   reclaim_*             -> Reclaimer (GC + purge)                        -> Reclaimed
    #   restart_*             -> Restart#request (dry run, embedded, the slot) -> SlotGranted / SlotDenied(reason)
    #   quiet, stop_*, kill   -> Restart (its strategy), then the next readings
    #   quarantine            -> Restart#quarantine                            -> Quarantined
    #   pause, resume*, widen -> Brake
    #   warn_loop             -> the restart-loop advice
    class Executor
      # How often the restart sequence takes a reading.
      POLL = 0.25
      RECLAIMS = %i[reclaim_soft reclaim_hard reclaim_brake].freeze
      RESTARTS = %i[restart_soft restart_hard restart_retained].freeze
      STOPS = %i[stop_idle stop_waited stop_hard].freeze
      BRAKE_ACTIONS = %i[pause resume resume_idle resume_retained widen].freeze
      # Every action this executor carries out: exactly the core's table (Native::Guard.actions), checked when
      # the guard is made.
      HANDLED = (RECLAIMS + RESTARTS + STOPS + BRAKE_ACTIONS + %i[quiet quiet_unconfirmed quarantine kill warn_loop])
                .freeze

      # Raises Error unless `actions` (the native table) is exactly what this executor handles.
      def self.check_actions(actions)
        unknown = actions - HANDLED
        unused = HANDLED - actions
        return if unknown.empty? && unused.empty?

        raise Error, "sidekiq_rust: the native guard's actions and Guard::Executor's differ (not handled: " \
                     "#{unknown.inspect}, not in the native table: #{unused.inspect}); the extension and the Ruby " \
                     "files are of different versions: reinstall the gem (or run `rake compile`)"
      end

      def initialize(guard, native:, restart:, reclaimer:, brake:, log:)
        Executor.check_actions(Native::Guard.actions)
        @guard = guard
        @native = native
        @restart = restart
        @reclaimer = reclaimer
        @brake = brake
        @log = log
        @actions = Queue.new
        @thread = nil
      end

      def start
        @thread ||= Thread.new { work }
      end

      def dispatch(action)
        if BRAKE_ACTIONS.include?(action)
          brake(action)
        else
          @actions << action
        end
      end

      private

      def work
        Thread.current.name = "sidekiq_rust-guard"
        loop do
          action = @actions.pop
          begin
            action = perform(action) while action
          rescue StandardError => e
            @log.failure("while acting on #{action}", e)
          end
        end
      end

      # Carries out one action; returns the policy's next one (nil: none).
      def perform(action)
        case action
        when *RECLAIMS then @reclaimer.reclaim(action)
        when *RESTARTS then @restart.request(action)
        when :quiet then @restart.quiet || watch
        when :quiet_unconfirmed then @restart.quiet_unconfirmed || watch
        when :quarantine then @restart.quarantine
        when *STOPS then @restart.stop(action) || watch
        when :kill then @restart.kill
        when :warn_loop then @guard.warn_restart_loop
        when *BRAKE_ACTIONS then brake(action)
        else raise Error, "the native guard returned #{action.inspect}, which this guard does not know"
        end
      end

      # The brake's actions have no outcome to report: nil, there is no next action.
      def brake(action)
        @brake&.apply(action)
        nil
      end

      # The restart sequence's readings, until the policy answers (nil once it is done).
      def watch
        loop do
          return nil if @native.phase == "done"

          sleep POLL
          action = @native.sample(true)[:action]
          return action if action
        end
      end
    end
  end
end
