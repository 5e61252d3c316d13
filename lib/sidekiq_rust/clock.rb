# frozen_string_literal: true

module SidekiqRust
  # The monotonic clock the guard measures durations with (never the wall clock, which NTP may move).
  module Clock
    module_function

    # Seconds, as a Float, from an arbitrary origin.
    def now
      ::Process.clock_gettime(::Process::CLOCK_MONOTONIC)
    end
  end
end
