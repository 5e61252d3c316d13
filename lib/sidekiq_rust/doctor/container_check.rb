# frozen_string_literal: true

module SidekiqRust
  module Doctor
    # The `container` check: the memory cgroup's limit, whether max_rss is under it with room left for the hard
    # limit, what the kernel does at the limit (OOM-kill one process, or every process of the group), the OOM
    # kills so far and the memory pressure.
    module ContainerCheck
      # Less room than this between the hard limit and the cgroup's (a share of the limit) is too little: memory
      # that grows fast passes both between two of the guard's checks.
      MIN_ROOM = 0.05
      # Memory pressure (PSI some avg10, percent) above which the check says so.
      PRESSURE_WARN = 10.0

      module_function

      # `settings`: Settings (or nil / a ConfigurationError, which the limits check reports); `cgroup`, `oom`,
      # `pressure`: Memory.cgroup, Memory.cgroup_oom and Memory.pressure.
      def check(settings, cgroup:, oom:, pressure:)
        unless cgroup
          return Check.new(name: "container", status: :skip, saw: "not in a memory cgroup (no container limit)")
        end

        saw = [description(cgroup, oom, pressure)]
        limit = cgroup[:limit]
        return Check.new(name: "container", status: :info, saw: "#{saw.first}; no memory limit") unless limit

        problems = [limit_problem(settings, limit), *counter_problems(oom, pressure)].compact
        saw << guard_description(settings) if settings.is_a?(Settings)
        status = problems.any? { |p| p.first == :fail } ? :fail : (problems.empty? ? :pass : :warn)
        Check.new(name: "container", status: status, saw: saw.join("; "),
                  todo: problems.empty? ? nil : problems.map(&:last).join("; "))
      end

      def description(cgroup, oom, pressure)
        parts = ["memory cgroup v#{cgroup[:version]} #{cgroup[:dir]}"]
        parts << "limit #{Units.mb(cgroup[:limit])}" if cgroup[:limit]
        parts << "working set #{Units.mb(cgroup[:usage])} (charged #{Units.mb(cgroup[:current])})"
        if oom
          parts << (oom[:group_kill] ? "an OOM kill takes every process of the group (memory.oom.group)" :
                                       "an OOM kill takes one process")
          parts << "#{oom[:oom_kills]} OOM kill(s) so far" if oom[:oom_kills]
        end
        parts << format("pressure some avg10 %.2f%%", pressure[:some_avg10]) if pressure
        parts.join(", ")
      end

      def guard_description(settings)
        "max_rss #{Units.mb(settings.max_rss)}, hard #{Units.mb(settings.hard_max_rss)} (metric #{settings.metric})"
      end

      # [:fail | :warn, what to do] about the guard's limits against the cgroup's, or nil.
      def limit_problem(settings, limit)
        return nil unless settings.is_a?(Settings)

        soft = settings.max_rss
        hard = settings.hard_max_rss
        if (hard || soft) >= limit
          [:fail, "the limits must be below the cgroup's #{Units.mb(limit)} or the kernel OOM-kills first " \
                  "(SIGKILL: the jobs in flight are lost): max_rss \"80%\", hard_max_rss \"90%\""]
        elsif hard.nil?
          [:warn, "no hard_max_rss: above max_rss the guard waits grace_time (#{settings.grace_time}s) and a " \
                  "reclaim, and memory that keeps growing reaches the cgroup's limit first: set hard_max_rss \"90%\""]
        elsif limit - hard < limit * MIN_ROOM
          [:warn, "hard_max_rss leaves #{Units.mb(limit - hard)} below the cgroup's limit: memory that grows fast " \
                  "passes it between two checks (check_interval #{settings.check_interval}s); keep " \
                  "#{(MIN_ROOM * 100).round}% (hard_max_rss \"#{(100 - (MIN_ROOM * 100)).round}%\" or less)"]
        end
      end

      def counter_problems(oom, pressure)
        problems = []
        if oom&.dig(:kill_disabled)
          problems << [:warn, "oom_kill_disable is 1: at the limit the processes hang instead of being killed"]
        end
        if oom && oom[:oom_kills].to_i.positive?
          problems << [:warn, "the kernel OOM-killed #{oom[:oom_kills]} process(es) of this cgroup: the Memory tab's " \
                              "timeline (oom_kill events) names them and their jobs in flight"]
        end
        if pressure && pressure[:some_avg10] > PRESSURE_WARN
          problems << [:warn, format("memory pressure: tasks stalled on memory %<pct>.1f%% of the last 10 s (PSI " \
                                     "%<source>s): the cgroup is reclaiming hard, close to its limit",
                                     pct: pressure[:some_avg10], source: pressure[:source])]
        end
        problems
      end
    end
  end
end
