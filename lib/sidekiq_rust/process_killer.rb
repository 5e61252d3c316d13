# frozen_string_literal: true

module SidekiqRust
  # Sidekiq server middleware: counts each job in and out of the guard and checks memory after it, with one
  # RSS read (no GC per job). It keeps no state of its own (Sidekiq makes a new instance per job) and never
  # raises into the job: a failure inside the guard is logged by the guard.
  class ProcessKiller
    def call(_job_instance, job, _queue)
      guard = SidekiqRust.guard
      return yield unless guard

      start = guard.job_started
      begin
        yield
      ensure
        guard.job_finished((job["wrapped"] || job["class"]).to_s, start)
      end
    end
  end
end
