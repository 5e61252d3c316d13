# frozen_string_literal: true

module SidekiqRust
  module Doctor
    # The `allocator` check: the malloc of the app's guarded processes, as each live one recorded it (History's
    # "allocator"), or of this process when none is live (or Redis was left out), saying which it judged. Threaded
    # Sidekiq bloats on glibc's per-thread arenas; jemalloc (`sidekiq_rust exec`) or MALLOC_ARENA_MAX=2 keep it
    # down.
    module AllocatorCheck
      # The start command the generator prints (lib/generators/sidekiq_rust/install/templates/next_steps.txt).
      JEMALLOC_COMMAND = "bundle exec sidekiq_rust exec -- sidekiq -C config/sidekiq.yml"
      GLIBC_TODO = "threaded Sidekiq bloats on glibc: run it under jemalloc (`#{JEMALLOC_COMMAND}`) or set " \
                   "MALLOC_ARENA_MAX=2".freeze
      UNKNOWN_TODO = "sidekiq_rust reclaims memory on glibc and jemalloc only; Allocator.purge is unavailable"

      module_function

      # `processes`: History.processes, nil when they were not read (Redis left out or unreachable).
      def check(processes:, env: ENV)
        live = Array(processes).reject { |p| p[:gone] }
        return fleet(live) unless live.empty?

        this_process(env, processes.nil? ? "the guarded processes were not read" : "no guarded process is live")
      end

      # Judges the live guarded processes: pass when all run jemalloc.
      def fleet(live)
        by_name = live.group_by { |p| p[:allocator].to_s.empty? ? "unknown" : p[:allocator] }
        counts = by_name.sort.map { |name, ps| "#{ps.size} on #{name}" }.join(", ")
        saw = "#{live.size} live guarded process(es): #{counts}"
        others = live.reject { |p| p[:allocator] == "jemalloc" }
        return Check.new(name: "allocator", status: :pass, saw: saw) if others.empty?

        named = others.first(3).map { |p| p[:identity] }.join(", ")
        named += ", ..." if others.size > 3
        todo = if others.any? { |p| p[:allocator] == "glibc" }
                 "#{GLIBC_TODO} where they run (whether it is set there cannot be seen from here)"
               else
                 UNKNOWN_TODO
               end
        Check.new(name: "allocator", status: :warn, saw: "#{saw} (not jemalloc: #{named})", todo: todo)
      end

      # Judges this process: the doctor's own Ruby, saying `why`, or (without one) a booting Sidekiq's.
      def this_process(env, why = nil)
        info = SidekiqRust::Allocator.info
        prefix = why ? "this process (#{why}): " : ""
        case info[:name]
        when "jemalloc"
          Check.new(name: "allocator", status: :pass, saw: "#{prefix}jemalloc #{info[:version]} (#{info[:source]})")
        when "glibc"
          arena_max = SidekiqRust::Allocator.stats[:arena_max]
          if arena_max
            Check.new(name: "allocator", status: :pass,
                      saw: "#{prefix}glibc #{info[:version]} with arena_max=#{arena_max}")
          else
            Check.new(name: "allocator", status: :warn,
                      saw: "#{prefix}glibc #{info[:version]} malloc, no MALLOC_ARENA_MAX (up to 8 arenas per core)",
                      todo: "#{GLIBC_TODO}#{preload_hint(env)}")
          end
        else
          Check.new(name: "allocator", status: :warn, saw: "#{prefix}unknown malloc from #{info[:library]}",
                    todo: UNKNOWN_TODO)
        end
      end

      def preload_hint(env)
        env["LD_PRELOAD"].to_s.empty? ? "" : " (LD_PRELOAD is #{env['LD_PRELOAD']}, but it is not a jemalloc)"
      end
    end
  end
end
