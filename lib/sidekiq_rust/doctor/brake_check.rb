# frozen_string_literal: true

module SidekiqRust
  module Doctor
    # The `brake` check: where the memory brake pauses and resumes, and whether this process (the app booted as
    # Sidekiq boots it, with --require) already uses more than resume_at: a Sidekiq process of the app would then
    # pause at its first reading and the brake let go after its first reclaim, so the brake would never work.
    module BrakeCheck
      module_function

      # `settings`: Settings (or nil / a ConfigurationError, which the limits check reports); `rss`: this
      # process's RSS; `concurrency`: Sidekiq's, when known.
      def check(settings, rss:, concurrency:)
        return Check.new(name: "brake", status: :skip, saw: "the guard is not configured here") unless
          settings.is_a?(Settings)
        return Check.new(name: "brake", status: :info, saw: "off (brake = false)") unless settings.brake

        saw = "pauses fetching at #{Units.mb(settings.brake_bytes)} (brake_at #{settings.brake_at}), fetches again " \
              "below #{Units.mb(settings.resume_bytes)} (resume_at #{settings.resume_at})" \
              "#{settings.brake_pressure ? format(', or at memory pressure %g%%', settings.brake_pressure) : ''}; " \
              "this process #{Units.mb(rss)}#{concurrency ? ", concurrency #{concurrency}" : ''}"
        return Check.new(name: "brake", status: :pass, saw: saw) if rss < settings.resume_bytes

        Check.new(name: "brake", status: :warn, saw: saw,
                  todo: "a booted process already uses more than resume_at: the brake would pause at the first " \
                        "reading and let go after the first reclaim. Raise max_rss (the working set of one process " \
                        "plus what its concurrent jobs need) or resume_at")
      end
    end
  end
end
