# frozen_string_literal: true

module SidekiqRust
  module Doctor
    # The `fragmentation` check: fragmentation against live memory in the guarded processes, as each recorded it
    # (History, every 30 s), or in this process when none has: the allocator's free bytes and Ruby's heap empty
    # slots, and what to try when they hold a large share (Verdict's thresholds).
    module FragmentationCheck
      module_function

      # `processes`: History.processes (nil: Redis left out or unreachable); `here`: SidekiqRust::Fragmentation.read.
      def check(processes:, here: SidekiqRust::Fragmentation.read)
        recorded = Array(processes).reject { |p| p[:gone] || p[:live].nil? }
        return from_process(here) if recorded.empty?

        worst = recorded.max_by { |p| p[:allocator_free].to_i.fdiv([p[:memory].to_i, 1].max) }
        figures = { rss: worst[:memory], live: worst[:live], allocator_free: worst[:allocator_free],
                    heap_fragmentation: worst[:heap_fragmentation], ruby_heap: worst[:ruby_heap],
                    allocator: worst[:allocator] }
        verdict(figures, "#{recorded.size} guarded process(es); the most fragmented, #{worst[:identity]}: ")
      end

      # A process just booted says little about a worker that ran for hours: informative only.
      def from_process(here)
        Check.new(name: "fragmentation", status: :info,
                  saw: "no guarded process has recorded figures yet; this process: #{describe(here)}")
      end

      def verdict(figures, prefix)
        saw = "#{prefix}#{describe(figures)}"
        line = Verdict.fragmented(figures, nil)
        return Check.new(name: "fragmentation", status: :pass, saw: saw) unless line

        Check.new(name: "fragmentation", status: :warn, saw: saw, todo: line.split(": ").last)
      end

      def describe(f)
        free = f[:allocator_free] ? "allocator free #{Units.mb(f[:allocator_free])}" : "allocator free unknown"
        heap = f[:heap_fragmentation] ? "Ruby's heap #{(f[:heap_fragmentation] * 100).round}% empty slots" : nil
        ["memory #{Units.mb(f[:rss].to_i)}", "live #{Units.mb(f[:live], none: '?')}", free, heap].compact.join(", ")
      end
    end
  end
end
