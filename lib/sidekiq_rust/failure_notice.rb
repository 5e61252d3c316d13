# frozen_string_literal: true

module SidekiqRust
  # Says a failure that repeats (Redis down, a file that cannot be read) once, and its recovery once: the log
  # is not flooded from every check, and the failure does not go unsaid nor seem to last forever. One notice per
  # thing that can fail; safe to share between threads. Never raises.
  #
  #   notice = FailureNotice.new(logger, failure: "could not write the memory history",
  #                                      recovery: "the memory history is written again")
  #   notice.failed(error) # "sidekiq_rust: could not write the memory history: Redis::CannotConnectError: ..."
  #   notice.failed(error) # (nothing)
  #   notice.succeeded     # "sidekiq_rust: the memory history is written again (after 2 failures in 10s)"
  #   notice.succeeded     # (nothing)
  class FailureNotice
    # `tag`: the process's identity, added to each line as `identity=TAG` (nil: none).
    def initialize(logger, failure:, recovery:, tag: nil)
      @logger = logger
      @failure = failure
      @recovery = recovery
      @tag = tag
      @lock = Mutex.new
      @failures = 0
      @since = nil
    end

    # The thing failed (`error`: an exception, or a String saying why): logged as a warning unless it is
    # already failing.
    def failed(error)
      first = @lock.synchronize do
        @failures += 1
        @since ||= Clock.now
        @failures == 1
      end
      write(:warn, "#{@failure}: #{describe(error)}") if first
      nil
    end

    # The thing worked: logged once if it was failing.
    def succeeded
      failures, since = @lock.synchronize do
        counted = [@failures, @since]
        @failures = 0
        @since = nil
        counted
      end
      return if failures.zero?

      write(:info, format("%<recovery>s (after %<failures>d failure(s) in %<seconds>.0fs)",
                          recovery: @recovery, failures: failures, seconds: Clock.now - since))
    end

    def failing?
      @lock.synchronize { @failures.positive? }
    end

    private

    def describe(error)
      error.is_a?(Exception) ? "#{error.class}: #{error.message}" : error.to_s
    end

    def write(level, message)
      @logger&.public_send(level, "sidekiq_rust: #{message}#{" identity=#{@tag}" if @tag}")
    rescue StandardError
      nil
    end
  end
end
