# frozen_string_literal: true

require_relative "history"

module SidekiqRust
  # The fleet's memory figures in the Prometheus text exposition format (version 0.0.4), read from Redis only
  # (what the guards write through SidekiqRust::History). Served by `SidekiqRust::Metrics::App` (a Rack app to
  # mount) and `sidekiq_rust metrics` (stdout or a file, for node_exporter's textfile collector).
  module Metrics
    CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
    # Processes exported at most (the most recently seen first).
    MAX_PROCESSES = 1000
    # Job classes exported at most (largest retained per job first).
    MAX_CLASSES = 100

    # [name, type, help]; the samples come from #samples.
    FAMILIES = [
      ["sidekiq_rust_memory_bytes", "gauge", "Memory of a guarded process at its last reading (label metric: what " \
                                             "the limits compare with)"],
      ["sidekiq_rust_limit_bytes", "gauge", "The guard's memory limits (kind: max_rss, hard_max_rss)"],
      ["sidekiq_rust_up", "gauge", "1 while the process writes readings, 0 once it is gone (kept until its " \
                                   "history expires)"],
      ["sidekiq_rust_last_reading_timestamp_seconds", "gauge", "Unix time of the process's last memory reading"],
      ["sidekiq_rust_start_time_seconds", "gauge", "Unix time the process's guard started"],
      ["sidekiq_rust_reclaimed_bytes_total", "counter", "Bytes given back by GC + allocator purge"],
      ["sidekiq_rust_restarts_total", "counter", "Graceful restarts begun by the guard"],
      ["sidekiq_rust_restart_denials_total", "counter", "Restarts the fleet refused (logged refusals)"],
      ["sidekiq_rust_quarantined_jobs_total", "counter", "Jobs sent to the dead set instead of being requeued " \
                                                         "again (in flight at quarantine_after memory restarts)"],
      ["sidekiq_rust_memory_pressure_some_avg10", "gauge", "Share of the last 10 s (percent) in which a task of " \
                                                         "the process's memory cgroup stalled on memory (PSI: " \
                                                         "the cgroup's memory.pressure on v2, else the system's)"],
      ["sidekiq_rust_memory_pressure_full_avg10", "gauge", "Share of the last 10 s (percent) in which every " \
                                                         "task stalled on memory (PSI full)"],
      ["sidekiq_rust_cgroup_oom_kills_total", "counter", "Processes the kernel's OOM killer killed in the " \
                                                         "process's memory cgroup (its oom_kill counter)"],
      ["sidekiq_rust_brake_active", "gauge", "1 while the memory brake holds the process's fetching, 0 while it " \
                                             "fetches (processes with the brake on)"],
      ["sidekiq_rust_brake_seconds_total", "counter", "Seconds the memory brake held the process's fetching"],
      ["sidekiq_rust_live_bytes", "gauge", "The allocator's bytes in use: what Ruby's objects malloc'd and C " \
                                           "extensions' memory, Ruby's heap pages apart (read every 30 s)"],
      ["sidekiq_rust_allocator_free_bytes", "gauge", "Memory the allocator holds that the process does not use " \
                                                     "(jemalloc resident - allocated, glibc RSS - in use - Ruby's heap)"],
      ["sidekiq_rust_ruby_heap_fragmentation_ratio", "gauge", "Empty slots on the pages of Ruby's heap that hold " \
                                                              "live objects (1 - live / eden slots)"],
      ["sidekiq_rust_class_jobs", "gauge", "Jobs of the class measured (fleet)"],
      ["sidekiq_rust_class_retained_per_job_bytes", "gauge", "Memory a job of the class leaves retained (fleet)"],
      ["sidekiq_rust_class_growth_per_job_bytes", "gauge", "Process memory growth per job of the class (fleet)"],
      ["sidekiq_rust_class_allocated_per_job_bytes", "gauge", "Bytes a job of the class allocates (fleet)"],
      ["sidekiq_rust_class_working_set_bytes", "gauge", "The most memory a job of the class adds while it runs: " \
                                                        "declared, else measured (admission; largest in the fleet)"],
      ["sidekiq_rust_admission_deferred_total", "counter", "Jobs of the class admission sent back to the front of " \
                                                           "their queue to wait for room (fleet)"]
    ].freeze

    module_function

    # The whole exposition as a String.
    def text(now: Time.now.to_f, adapter: SidekiqAdapter)
      processes = History.processes(limit: MAX_PROCESSES, now: now, adapter: adapter)
      classes = Report.fleet(limit: MAX_CLASSES, adapter: adapter)
      by_name = samples(processes, classes).group_by(&:first)
      FAMILIES.map do |name, type, help|
        lines = ["# HELP #{name} #{help}", "# TYPE #{name} #{type}"]
        (by_name[name] || []).each { |_, labels, value| lines << "#{name}#{format_labels(labels)} #{value}" }
        lines.join("\n")
      end.join("\n") + "\n"
    end

    # [[name, {label => value}, number], ...]
    def samples(processes, classes)
      out = []
      processes.each do |p|
        id = { "identity" => p[:identity] }
        out << ["sidekiq_rust_memory_bytes", id.merge("metric" => p[:metric]), p[:memory]]
        out << ["sidekiq_rust_limit_bytes", id.merge("kind" => "max_rss"), p[:max_rss]] if p[:max_rss]
        out << ["sidekiq_rust_limit_bytes", id.merge("kind" => "hard_max_rss"), p[:hard_max_rss]] if p[:hard_max_rss]
        out << ["sidekiq_rust_up", id, p[:gone] ? 0 : 1]
        out << ["sidekiq_rust_last_reading_timestamp_seconds", id, p[:at]]
        out << ["sidekiq_rust_start_time_seconds", id, p[:started_at]]
        out << ["sidekiq_rust_reclaimed_bytes_total", id, p[:reclaimed_bytes]]
        p[:restarts].each { |reason, n| out << ["sidekiq_rust_restarts_total", id.merge("reason" => reason), n] }
        p[:denials].each { |reason, n| out << ["sidekiq_rust_restart_denials_total", id.merge("reason" => reason), n] }
        out << ["sidekiq_rust_quarantined_jobs_total", id, p[:quarantined]]
        out.concat(recorded_samples(p, id))
        next unless p[:brake]

        out << ["sidekiq_rust_brake_active", id, p[:brake] == :paused ? 1 : 0]
        out << ["sidekiq_rust_brake_seconds_total", id, p[:brake_seconds]]
      end
      classes.each do |c|
        label = { "class" => c[:class] }
        out << ["sidekiq_rust_class_jobs", label, c[:jobs]]
        %i[retained_per_job growth_per_job allocated_per_job].each do |field|
          out << ["sidekiq_rust_class_#{field}_bytes", label, c[field]] unless c[field].nil?
        end
        out << ["sidekiq_rust_class_working_set_bytes", label, c[:working_set]] if c[:working_set]
        out << ["sidekiq_rust_admission_deferred_total", label, c[:deferred]] if c.key?(:deferred)
      end
      out
    end

    # Families whose value is a field a process records only where it is known: the memory cgroup's (no PSI, no
    # cgroup: none) and fragmentation against leaks (Fragmentation).
    RECORDED = {
      "sidekiq_rust_memory_pressure_some_avg10" => :pressure_some_avg10,
      "sidekiq_rust_memory_pressure_full_avg10" => :pressure_full_avg10,
      "sidekiq_rust_cgroup_oom_kills_total" => :oom_kills,
      "sidekiq_rust_live_bytes" => :live,
      "sidekiq_rust_allocator_free_bytes" => :allocator_free,
      "sidekiq_rust_ruby_heap_fragmentation_ratio" => :heap_fragmentation
    }.freeze

    # The RECORDED samples of one process: those its readings had.
    def recorded_samples(process, id)
      RECORDED.filter_map { |name, field| [name, id, process[field]] unless process[field].nil? }
    end

    # {identity="a",metric="rss"}: backslash, double quote and newline escaped as the format asks.
    def format_labels(labels)
      return "" if labels.empty?

      pairs = labels.map do |key, value|
        escaped = value.to_s.gsub("\\") { "\\\\" }.gsub("\"") { "\\\"" }.gsub("\n") { "\\n" }
        "#{key}=\"#{escaped}\""
      end
      "{#{pairs.join(',')}}"
    end

    # A Rack app serving #text, to mount in a Rails app's routes (`mount SidekiqRust::Metrics::App, at:
    # "/sidekiq_rust/metrics"`) or a config.ru. Redis unreachable: 503 with the reason. Lower-case header names,
    # as Rack 3 requires (Rack 2 takes them too).
    class App
      def self.call(env)
        new.call(env)
      end

      def call(_env)
        [200, { "content-type" => CONTENT_TYPE, "cache-control" => "no-store" }, [Metrics.text]]
      rescue StandardError => e
        [503, { "content-type" => "text/plain; charset=utf-8" },
         ["sidekiq_rust metrics: cannot read Redis (#{e.class}: #{e.message})\n"]]
      end
    end
  end
end
