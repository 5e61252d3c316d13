# frozen_string_literal: true

module SidekiqRust
  module Doctor
    # The `timeouts` check: kill_after and systemd's TimeoutStopSec above Sidekiq's shutdown timeout (else
    # jobs are KILLed before they are pushed back).
    module TimeoutsCheck
      module_function

      def check(settings, timeout, timeout_stop_sec)
        problems = []
        saw = ["Sidekiq timeout #{timeout}s"]
        if settings
          kill_after = Configuration.kill_after(settings.kill_after, timeout)
          saw << "guard kill_after #{kill_after}s"
          if kill_after <= timeout
            problems << "kill_after (#{kill_after}s) must exceed Sidekiq's timeout (#{timeout}s), or the guard " \
                        "KILLs before Sidekiq has pushed unfinished jobs back"
          end
        end
        if timeout_stop_sec
          saw << "systemd TimeoutStopSec #{timeout_stop_sec}s"
          if timeout_stop_sec <= timeout + 5
            problems << "TimeoutStopSec (#{timeout_stop_sec}s) must exceed Sidekiq's timeout (#{timeout}s) by a few " \
                        "seconds, or systemd KILLs Sidekiq before it requeues unfinished jobs " \
                        "(`sidekiq_rust systemd` writes a consistent unit)"
          end
        end
        status = problems.empty? ? :pass : :fail
        Check.new(name: "timeouts", status: status, saw: saw.join(", "),
                  todo: problems.empty? ? nil : problems.join("; "))
      end
    end
  end
end
