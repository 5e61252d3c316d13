# frozen_string_literal: true

module SidekiqRust
  module Doctor
    # The `limits` check: the guard configured and resolvable here, its limits below the cgroup's (above
    # it the kernel's OOM killer acts first).
    module LimitsCheck
      module_function

      def check(settings, cgroup)
        unless settings
          return Check.new(name: "limits", status: :warn, saw: "the guard is not configured",
                           todo: "add SidekiqRust.configure { |c| c.max_rss = \"1.5GB\" } to an initializer")
        end
        if settings.is_a?(ConfigurationError)
          return Check.new(name: "limits", status: :fail, saw: "the guard would not start here: #{settings.message}",
                           todo: "Sidekiq would fail at boot on this machine with this environment")
        end

        limit = cgroup && cgroup[:limit]
        soft = Units.mb(settings.max_rss)
        hard = Units.mb(settings.hard_max_rss)
        unless limit
          return Check.new(name: "limits", status: :pass, saw: "max_rss #{soft}, hard #{hard}; no cgroup limit")
        end

        over = { "max_rss" => settings.max_rss, "hard_max_rss" => settings.hard_max_rss }
               .select { |_, bytes| bytes && bytes >= limit }.keys
        if over.empty?
          Check.new(name: "limits", status: :pass,
                    saw: "max_rss #{soft}, hard #{hard} below the cgroup limit #{Units.mb(limit)}")
        else
          Check.new(name: "limits", status: :fail,
                    saw: "#{over.join(' and ')} not below the cgroup limit #{Units.mb(limit)} " \
                         "(max_rss #{soft}, hard #{hard})",
                    todo: "the kernel OOM-kills the container before the guard can restart gracefully: " \
                          "set the limits below #{Units.mb(limit)}, e.g. max_rss \"75%\", hard_max_rss \"90%\"")
        end
      end
    end
  end
end
