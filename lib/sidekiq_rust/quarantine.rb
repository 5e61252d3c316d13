# frozen_string_literal: true

require "json"

module SidekiqRust
  # Raised by the guard into the thread of a job it quarantines (a poison pill), while the process is quiet and
  # before TERM, so that the job ends and Sidekiq's shutdown has nothing of it to requeue. Like Sidekiq::Shutdown
  # it is no StandardError: a job's own `rescue => e` does not swallow it. the Middleware, first in the chain,
  # rescues it: the job counts as done for Sidekiq, and it already is in the dead set.
  class Quarantined < ::Exception # rubocop:disable Lint/InheritException
  end

  # The poison-pill guard. At each memory restart the guard records, per jid, how many memory restarts the job
  # was in flight at (in Redis: `sidekiq_rust:restarts_in_flight:<jid>`, an Integer expiring after EXPIRY). A
  # job that reaches `quarantine_after` goes to Sidekiq's dead set with an error saying why, and its thread is
  # interrupted before TERM, so that Sidekiq's own shutdown requeue (any fetch, any version) does not push it back.
  class Quarantine
    KEY_PREFIX = Keys::RESTARTS_IN_FLIGHT
    # A job's count is forgotten this long after the last memory restart it was in flight at.
    EXPIRY = Keys::QUARANTINE_TTL
    # The thread variable through which the guard finds a running job's thread and payload.
    JOB = :sidekiq_rust_job
    # How long the guard waits for a quarantined job's thread to leave the job before TERM.
    LEAVE_WAIT = 5

    def self.key(jid)
      "#{KEY_PREFIX}#{jid}"
    end

    def initialize(settings, adapter: SidekiqAdapter)
      @after = settings.quarantine_after
      @adapter = adapter
    end

    def enabled?
      @after.positive?
    end

    # Counts one more memory restart for each job in flight ([{class:, jid:, running_s:}]); returns those that
    # reached `quarantine_after`, each with `restarts:`. Raises on Redis errors (the caller logs and goes on
    # without quarantine: the jobs are then requeued as usual).
    def record(in_flight)
      return [] unless enabled?

      in_flight.filter_map do |job|
        restarts = count(job[:jid])
        job.merge(restarts: restarts) if restarts >= @after
      end
    end

    # Sends the job to Sidekiq's dead set with `reason`, then interrupts its thread and waits (at most
    # LEAVE_WAIT) until it left the job. Returns true when the job is in the dead set. The dead set first: if
    # that fails the job is left alone, and Sidekiq requeues it as usual.
    def quarantine(jid, reason)
      thread = Thread.list.find { |t| t.thread_variable_get(JOB)&.fetch("jid", nil) == jid }
      job = thread&.thread_variable_get(JOB)
      return false unless job

      payload = job.merge("error_class" => Quarantined.name, "error_message" => reason, "failed_at" => Time.now.to_f)
      @adapter.kill_job(JSON.generate(payload), Quarantined.new(reason))
      forget(jid)
      thread.raise(Quarantined, reason)
      deadline = Clock.now + LEAVE_WAIT
      sleep 0.05 while thread.thread_variable_get(JOB).equal?(job) &&
                       Clock.now < deadline
      true
    end

    private

    # The count starts again for a job retried from the dead set (the team fixed the job or the limit). Never
    # raises: a count left behind expires.
    def forget(jid)
      @adapter.redis { |conn| conn.call("DEL", self.class.key(jid)) }
    rescue StandardError
      nil
    end

    # INCR on a key of the wrong type, or holding no Integer, raises; such a key is replaced (garbage in the
    # gem's keys must not stop the count).
    def count(jid)
      key = self.class.key(jid)
      @adapter.redis do |conn|
        restarts = begin
          conn.call("INCR", key)
        rescue StandardError => e
          raise unless e.message.match?(/WRONGTYPE|not an integer|out of range/)

          conn.call("SET", key, "1")
          1
        end
        conn.call("EXPIRE", key, EXPIRY)
        restarts.to_i
      end
    end
  end
end
