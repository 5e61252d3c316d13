# frozen_string_literal: true

require "delegate"

module SidekiqRust
  # The fetcher the memory brake puts in front of whatever fetcher Sidekiq is configured with (BasicFetch, or
  # another gem's): each processor's retrieve_work asks the brake's gate first, so that a paused process pops
  # no job at all; with admission on, the job popped starts only if the guard admits it, else it is back at the
  # front of its queue (its unit of work's requeue) and the thread waits for room before it fetches again.
  # Everything else (bulk_requeue, setup, ...) goes to the wrapped fetcher as it is.
  #
  # Sidekiq 7+ builds one per capsule as `config[:fetch_class].new(capsule)`; the class it replaced is kept in
  # `config[INNER]`. Sidekiq 6.4 takes an instance in `Sidekiq.options[:fetch]`, wrapped as it is.
  class BrakeFetch < SimpleDelegator
    INNER = :sidekiq_rust_inner_fetch_class

    # A capsule (Sidekiq 7+) or a fetcher instance (6.4).
    def initialize(capsule_or_fetcher)
      inner = if capsule_or_fetcher.respond_to?(:retrieve_work)
                capsule_or_fetcher
              else
                (capsule_or_fetcher[INNER] || Sidekiq::BasicFetch).new(capsule_or_fetcher)
              end
      super(inner)
    end

    def retrieve_work
      guard = SidekiqRust.guard
      brake = guard&.brake
      return __getobj__.retrieve_work unless brake
      return nil unless brake.admit

      work = __getobj__.retrieve_work
      mark = brake.room_mark
      return work if work && guard.admit(work)

      brake.release
      brake.wait_for_room(mark) if work
      nil
    rescue StandardError
      brake&.release
      raise
    end
  end
end
