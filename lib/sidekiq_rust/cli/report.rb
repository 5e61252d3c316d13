# frozen_string_literal: true

require "json"
require "optparse"

module SidekiqRust
  class CLI
    # `sidekiq_rust report [options]`: the fleet's per-job-class memory figures, as every process's guard
    # published them to Redis (SidekiqRust::Report.fleet). Loaded by lib/sidekiq_rust/cli.rb.
    class Report < Command
      NAME = "report"
      SUMMARY = "which job classes grew the fleet's memory: retained, growth and allocated per job"

      HELP = <<~TEXT
        Usage: sidekiq_rust report [options]

        Per job class, across every Sidekiq process of the fleet that runs the guard (each publishes its figures
        to Redis every check_interval): jobs, and per job the memory still held after a reclaim (retained: the
        leak signal) with its standard error and the windows (between two measuring reclaims) it rests on, the
        RSS growth (growth: the bloat signal) and the bytes malloc'd (allocated: jemalloc only). Largest
        retained first; a retained figure the windows cannot tell from zero is 0; "?" (null in JSON) where not
        known yet.

        Options:
              --json              print the rows as JSON (bytes)
              --limit N           rows shown (default: 20); the last line says how many were left out
              --redis-url URL     the fleet's Redis (default: Sidekiq's configuration / REDIS_URL)
          -h, --help              show this help

        Exit status: 0 fine, 1 Redis cannot be reached, 2 usage error.
      TEXT

      Options = Struct.new(:help, :json, :limit, :redis_url, keyword_init: true)

      def execute(options)
        connect(options.redis_url)
        rows = SidekiqRust::Report.fleet
        @out.puts(options.json ? JSON.pretty_generate(rows.first(options.limit)) : table(rows, options.limit))
        EXIT_OK
      rescue StandardError => e
        redis_failure(e)
      end

      def parse(argv)
        options = Options.new(help: false, json: false, limit: 20)
        parser = OptionParser.new
        parser.on("-h", "--help") { options.help = true }
        parser.on("--json") { options.json = true }
        parser.on("--limit N", Integer) { |v| options.limit = positive(v, "--limit") }
        parser.on("--redis-url URL") { |v| options.redis_url = v }
        parse_all(parser, argv)
        options
      end

      # The rows as text: a header, at most `limit` rows, and how many were left out. With admission on in
      # the fleet, each class's working set and the jobs sent back to wait too.
      def table(rows, limit)
        admission = rows.any? { |r| r.key?(:deferred) }
        head = format("%-40s %8s %18s %9s %8s %16s %19s", "CLASS", "JOBS", "RETAINED_PER_JOB", "±ERROR",
                      "WINDOWS", "GROWTH_PER_JOB", "ALLOCATED_PER_JOB")
        head += format(" %12s %9s", "WORKING_SET", "DEFERRED") if admission
        lines = [head]
        rows.first(limit).each do |r|
          line = format("%-40s %8d %18s %9s %8s %16s %19s", r[:class].to_s[0, 40], r[:jobs],
                        bytes(r[:retained_per_job]), bytes(r[:retained_error]), r[:windows] || "?",
                        bytes(r[:growth_per_job]), bytes(r[:allocated_per_job]))
          line += format(" %12s %9d", bytes(r[:working_set]), r[:deferred].to_i) if admission
          lines << line
        end
        lines << "(#{rows.size - limit} more not shown: --limit #{rows.size})" if rows.size > limit
        lines << "(no process has published figures: is the guard running, with jobs done?)" if rows.empty?
        lines.join("\n")
      end

      private

      def bytes(value)
        SidekiqRust::Units.bytes(value)
      end
    end
  end
end
