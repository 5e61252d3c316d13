# frozen_string_literal: true

require "json"
require "optparse"

module SidekiqRust
  class CLI
    # `sidekiq_rust top [options]`: every Sidekiq process of the fleet, from Redis heartbeats, with PSS/USS for
    # the ones on this host. Loaded by lib/sidekiq_rust/cli.rb.
    class Top < Command
      NAME = "top"
      SUMMARY = "a live table of the fleet's Sidekiq processes and their memory"

      HELP = <<~TEXT
        Usage: sidekiq_rust top [options]

        Every Sidekiq process of the fleet, from its Redis heartbeat (which lags by one beat, 5-10 s): identity
        (Sidekiq's, as the guard logs it), host, pid, busy/concurrency, quiet, and whether it holds a sidekiq_rust
        restart slot. Memory comes from one source per row, named in SRC: "live" (read now from /proc: RSS, PSS,
        USS) for the processes on this host, "beat" (the heartbeat's RSS, no PSS/USS) for the others.
        Largest RSS first. In a memory cgroup (a container), a line for it: limit, working set, OOM kills, and the
        memory pressure (PSI some/full avg10: the share of the last 10 s in which tasks stalled on memory).
        Under the processes, the fleet's first job classes as `sidekiq_rust report` ranks them (largest retained
        first): jobs and retained per job, and with admission on in the fleet each class's working set and the
        jobs sent back to wait (`report` has every column and class).

        From each process's guard record: LIMIT, its max_rss ("-": no guard); LIVE, ALLOCFREE and HEAPFRAG, what
        it measured of its fragmentation (every 30 s). LIVE is never shown staler than the RSS beside it: a figure
        measured more than one check interval before that RSS was read is marked "~" and capped at the RSS (the
        process may have given memory back since); --json gives its age (live_age, seconds).

        Options:
              --interval SECONDS  refresh period (default: 2)
              --once              print one frame and exit
              --json              print one frame as JSON and exit
              --limit N           rows shown (default: 50); the summary line counts them all
              --redis-url URL     the fleet's Redis (default: Sidekiq's configuration / REDIS_URL)
          -h, --help              show this help

        Exit status: 0 fine, 1 Redis cannot be reached, 2 usage error.
      TEXT

      Options = Struct.new(:help, :interval, :once, :json, :limit, :redis_url, keyword_init: true)

      # Restart slots looked at beyond one per live process (see Fleet.all_holders).
      SLOT_MARGIN = 32
      # Job classes shown under the processes (the fleet's, ranked as `report` ranks them).
      CLASSES = 5
      # What a guard record gives a row; nil without a guard (or before its first reading).
      NO_RECORD = { max_rss: nil, hard_max_rss: nil, live: nil, live_age: nil, live_stale: nil, allocator_free: nil,
                    heap_fragmentation: nil }.freeze
      # The fields top reads of a guard's record (History::PROCESS_PREFIX + identity).
      RECORD_FIELDS = %w[max_rss hard_max_rss live live_at interval allocator_free heap_fragmentation].freeze

      def execute(options)
        connect(options.redis_url)
        if options.json
          @out.puts(JSON.pretty_generate(report(rows, options.limit, classes: classes)))
        elsif options.once
          @out.puts(frame(rows, options.limit, classes: classes))
        else
          loop do
            text = frame(rows, options.limit, classes: classes)
            @out.print("\e[H\e[2J#{text}\n")
            @out.flush
            sleep options.interval
          end
        end
        EXIT_OK
      rescue Interrupt # Ctrl-C
        EXIT_OK
      rescue StandardError => e
        redis_failure(e)
      end

      def parse(argv)
        options = Options.new(help: false, interval: 2.0, once: false, json: false, limit: 50)
        parser = OptionParser.new
        parser.on("-h", "--help") { options.help = true }
        parser.on("--interval SECONDS", Float) { |v| options.interval = positive(v, "--interval") }
        parser.on("--once") { options.once = true }
        parser.on("--json") { options.json = true }
        parser.on("--limit N", Integer) { |v| options.limit = positive(v, "--limit") }
        parser.on("--redis-url URL") { |v| options.redis_url = v }
        parse_all(parser, argv)
        options
      end

      # One row per live process, largest RSS first: {identity:, hostname:, pid:, busy:, concurrency:, rss:,
      # pss:, uss:, memory_source:, quiet:, paused:, restart_slot:} (bytes); paused: its memory brake holds
      # fetching. memory_source "live": rss, pss, uss read now
      # from /proc (this host); "heartbeat": rss from Sidekiq's heartbeat, pss and uss nil (other hosts, or a
      # process gone since its beat). From the process's guard record (nil: no guard, or unknown): max_rss:,
      # hard_max_rss: (its limits), live: (the allocator's bytes in use, at most rss), live_age: (seconds between
      # its measure and the rss's), live_stale: (true when measured more than one check interval before the rss:
      # live is then capped at rss), allocator_free:, heap_fragmentation:.
      def rows(now: Time.now.to_f)
        processes = SidekiqAdapter.processes
        holders = Fleet.all_holders(processes.size + SLOT_MARGIN)
        here = SidekiqAdapter.hostname
        paused = paused_marks(processes)
        records = guard_records(processes)
        processes.map do |process|
          tag = SidekiqAdapter.tag_of(process)
          pid = process["pid"].to_i
          memory = (process["hostname"] == here && local_memory(pid)) ||
                   { rss: process["rss"].to_i * 1024, pss: nil, uss: nil, memory_source: "heartbeat" }
          rss_at = memory[:memory_source] == "live" ? now : process["beat"].to_f
          {
            identity: tag, hostname: process["hostname"], pid: pid,
            busy: process["busy"].to_i, concurrency: process["concurrency"].to_i, **memory,
            quiet: process.stopping?, paused: paused.include?(tag), restart_slot: holders.include?(tag),
            **record_figures(records[tag], memory[:rss], rss_at)
          }
        end.sort_by { |row| -row[:rss] }
      end

      # A row's figures from its guard record (RECORD_FIELDS' values), the LIVE figure set against the RSS read
      # at `rss_at`: capped at it, and stale when measured more than one check interval before it (a record
      # without live_at, written before it was recorded, is stale).
      def record_figures(record, rss, rss_at)
        return NO_RECORD unless record

        max_rss, hard_max_rss, live, live_at, interval, allocator_free, heap_fragmentation =
          record.map { |v| v.to_s.empty? ? nil : v }
        figures = NO_RECORD.merge(max_rss: max_rss&.to_i, hard_max_rss: hard_max_rss&.to_i,
                                  allocator_free: allocator_free&.to_i, heap_fragmentation: heap_fragmentation&.to_f)
        return figures unless live

        age = live_at && [rss_at - live_at.to_f, 0].max.round(1)
        stale = age.nil? || age > interval.to_f
        figures.merge(live: [live.to_i, rss].min, live_age: age, live_stale: stale)
      end

      def summary(rows)
        {
          processes: rows.size, busy: rows.sum { |r| r[:busy] }, concurrency: rows.sum { |r| r[:concurrency] },
          rss: rows.sum { |r| r[:rss] }, quiet: rows.count { |r| r[:quiet] }, paused: rows.count { |r| r[:paused] },
          restart_slots: rows.count { |r| r[:restart_slot] }
        }
      end

      def report(rows, limit, cgroup: cgroup_status, classes: [])
        { summary: summary(rows), cgroup: cgroup, processes: rows.first(limit), not_shown: [rows.size - limit, 0].max,
          classes: classes }
      end

      # The fleet's first CLASSES job classes, as `report` gives them (Report.fleet's rows).
      def classes
        SidekiqRust::Report.fleet(limit: CLASSES)
      end

      # The memory cgroup top runs in (a container's, from inside it), nil when none: {dir:, version:, limit:,
      # usage: (working set), current:, oom_kills:, group_kill:, pressure_some_avg10:, pressure_full_avg10:}.
      def cgroup_status
        cgroup = Memory.cgroup
        return nil unless cgroup

        oom = Memory.cgroup_oom || {}
        pressure = Memory.pressure || {}
        cgroup.slice(:dir, :version, :limit, :usage, :current)
              .merge(oom_kills: oom[:oom_kills], group_kill: oom[:group_kill],
                     pressure_some_avg10: pressure[:some_avg10], pressure_full_avg10: pressure[:full_avg10])
      rescue SidekiqRust::Error
        nil
      end

      def cgroup_line(cgroup)
        pressure = cgroup[:pressure_some_avg10]
        format("memory cgroup v%<v>d %<dir>s: limit %<limit>s, working set %<usage>s, OOM kills %<kills>s, " \
               "pressure some %<some>s full %<full>s (avg10)",
               v: cgroup[:version], dir: cgroup[:dir], limit: mb(cgroup[:limit]), usage: mb(cgroup[:usage]),
               kills: cgroup[:oom_kills] || "-", some: pressure ? format("%.2f%%", pressure) : "-",
               full: cgroup[:pressure_full_avg10] ? format("%.2f%%", cgroup[:pressure_full_avg10]) : "-")
      end

      # The table as text: a summary line, a header, at most `limit` rows, and how many were left out; then the
      # job classes, when any process published them.
      def frame(rows, limit, now: Time.now, cgroup: cgroup_status, classes: [])
        s = summary(rows)
        lines = [format("sidekiq_rust top  %<time>s  %<n>d process(es), busy %<busy>d/%<conc>d, RSS %<rss>s, " \
                        "%<quiet>d quiet, %<paused>d paused by the brake, %<slots>d holding a restart slot",
                        time: now.strftime("%H:%M:%S"), n: s[:processes], busy: s[:busy], conc: s[:concurrency],
                        rss: mb(s[:rss]), quiet: s[:quiet], paused: s[:paused], slots: s[:restart_slots])]
        lines << cgroup_line(cgroup) if cgroup
        lines << format("%-32s %-16s %8s %9s %9s %9s %9s %9s %-4s %-6s %-4s %10s %9s %9s", "IDENTITY", "HOST", "PID",
                        "BUSY", "RSS", "LIMIT", "PSS", "USS", "SRC", "STATE", "SLOT", "LIVE", "ALLOCFREE", "HEAPFRAG")
        shown = rows.first(limit)
        shown.each do |r|
          lines << format("%-32s %-16s %8d %9s %9s %9s %9s %9s %-4s %-6s %-4s %10s %9s %9s", r[:identity],
                          r[:hostname].to_s[0, 16], r[:pid], "#{r[:busy]}/#{r[:concurrency]}", mb(r[:rss]),
                          mb(r[:max_rss]), mb(r[:pss]), mb(r[:uss]), r[:memory_source] == "live" ? "live" : "beat",
                          state(r), r[:restart_slot] ? "yes" : "-", live(r), mb(r[:allocator_free]),
                          r[:heap_fragmentation] ? "#{(r[:heap_fragmentation] * 100).round}%" : "-")
        end
        if shown.any? { |r| r[:live] && r[:live_stale] }
          lines << "(~ LIVE measured before its RSS was read, by up to #{Fragmentation::EVERY} s; capped at the RSS)"
        end
        lines << "(#{rows.size - limit} more not shown: --limit #{rows.size})" if rows.size > limit
        lines << "(no Sidekiq process is alive)" if rows.empty?
        (lines + class_lines(classes)).join("\n")
      end

      private

      # The job classes' lines (none without classes): jobs and retained per job, and with admission on in the
      # fleet the working set and the jobs sent back to wait.
      def class_lines(classes)
        return [] if classes.empty?

        admission = classes.any? { |c| c.key?(:deferred) }
        head = format("%-40s %8s %16s", "CLASS", "JOBS", "RETAINED/JOB")
        head += format(" %12s %9s", "WORKING_SET", "DEFERRED") if admission
        lines = ["", head]
        classes.each do |c|
          line = format("%-40s %8d %16s", c[:class].to_s[0, 40], c[:jobs], Units.bytes(c[:retained_per_job]))
          line += format(" %12s %9d", Units.bytes(c[:working_set]), c[:deferred].to_i) if admission
          lines << line
        end
        lines
      end

      def state(row)
        return "quiet" if row[:quiet]

        row[:paused] ? "paused" : "run"
      end

      # The LIVE cell: "~" marks a figure staler than the RSS beside it.
      def live(row)
        return "-" unless row[:live]

        row[:live_stale] ? "~#{mb(row[:live])}" : mb(row[:live])
      end

      # Each process's guard record (History's hash, written at each reading), RECORD_FIELDS' values:
      # {identity => [String or nil, ...]}, no entry for a process without one.
      def guard_records(processes)
        return {} if processes.empty?

        tags = processes.map { |p| SidekiqAdapter.tag_of(p) }
        values = SidekiqAdapter.redis do |conn|
          conn.pipelined do |pipe|
            tags.each { |tag| pipe.call("HMGET", History::PROCESS_PREFIX + tag, *RECORD_FIELDS) }
          end
        end
        tags.zip(values).reject { |_, fields| fields.nil? || fields.compact.empty? }.to_h
      end

      # The identities whose brake holds fetching (Brake's marks in Redis).
      def paused_marks(processes)
        return [] if processes.empty?

        tags = processes.map { |p| SidekiqAdapter.tag_of(p) }
        marks = SidekiqAdapter.redis { |conn| conn.call("MGET", *tags.map { |t| Brake::PAUSED_PREFIX + t }) }
        tags.zip(marks).select { |_, mark| mark }.map(&:first)
      end

      def mb(bytes)
        Units.mb(bytes, none: "-")
      end

      # RSS, PSS and USS of a process on this host, all from one read of /proc; nil when it cannot be read.
      def local_memory(pid)
        smaps = Memory.smaps(pid)
        { rss: smaps[:rss], pss: smaps[:pss], uss: smaps[:uss], memory_source: "live" }
      rescue SidekiqRust::Error
        nil
      end
    end
  end
end
