# frozen_string_literal: true

module SidekiqRust
  # Sidekiq server middleware: counts each job in and out of the guard (its class, jid and run time for the
  # per-class attribution) and checks memory after it, reading RSS only when the last reading is older than
  # 20 ms (no GC per job). It keeps no state of its own (Sidekiq makes a new instance per job) and never
  # raises into the job: a failure inside the guard is logged by the guard. With the quarantine on, the job's
  # payload is in a thread variable while it runs, so that the guard can send a poison pill to the dead set and
  # end it (SidekiqRust::Quarantined, rescued here: for Sidekiq the job is done).
  class Middleware
    def call(_job_instance, job, _queue)
      guard = SidekiqRust.guard
      return yield unless guard

      token = guard.job_started((job["wrapped"] || job["class"]).to_s, job["jid"].to_s)
      watched = guard.quarantine? ? Thread.current : nil
      begin
        watched&.thread_variable_set(Quarantine::JOB, job)
        yield
      rescue Quarantined => e
        guard.left_quarantined(job, e)
      ensure
        watched&.thread_variable_set(Quarantine::JOB, nil)
        guard.job_finished(token)
      end
    end
  end

  # The middleware's old name (it counts jobs for the guard, it kills nothing), kept for apps that name it.
  ProcessKiller = Middleware
end
