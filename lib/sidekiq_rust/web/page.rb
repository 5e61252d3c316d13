# frozen_string_literal: true

require "cgi"
require_relative "../history"
require_relative "chart"
require_relative "small_chart"
require_relative "reader"

module SidekiqRust
  module Web
    # What the Memory tab shows, read from Redis only (SidekiqRust::History, through Web::Reader). The fleet page:
    # a summary first (how many processes serve, are paused by the brake, are over max_rss and since when, are
    # restarting or gone; the fleet's memory against its limits; the top classes; the last hour's restarts and OOM
    # kills), then the processes as small multiples on one shared time axis, each scaled to its own max_rss, worst
    # share of the limit first, grouped by host, PER_PAGE a page; then the events (newest of each kind, or one
    # kind: `?events=restart`) and the per-class table. A process's page (`?process=IDENTITY`): its full chart,
    # its figures and its events. The view (views/memory.erb) only lays it out.
    class Page
      PER_PAGE = 50
      # Events shown of one kind (`?events=KIND`).
      EVENTS_SHOWN = 50
      # Events shown of each kind when all kinds are shown (merged newest first).
      EVENTS_PER_KIND = 15
      CLASSES_SHOWN = 25
      TOP_CLASSES = 5
      # Over max_rss processes the summary names.
      OVER_SHOWN = 4
      # The summary's "last hour".
      RECENT = 3600
      # Phases of a guard that is on its way to a restart (the policy's; "reclaiming" serves on).
      RESTARTING = %w[waiting_slot quieting quarantining stopping done].freeze
      KIND_LABELS = { "restart" => "restarts", "oom_kill" => "OOM kills", "brake" => "brake",
                      "reclaim" => "reclaims", "denial" => "refused restarts", "quarantine" => "quarantines",
                      "limits" => "limits moved", "admission" => "admission" }.freeze

      attr_reader :now, :identity, :kind

      # The small charts' y scale: each process's own max_rss (nil), or one scale for the page (`?scale=shared`).
      SCALES = %w[shared].freeze

      # The page asked for, at most the last.
      def page
        [@page, pages].min
      end

      def initialize(page: 1, process: nil, events: nil, scale: nil, now: Time.now.to_f, adapter: SidekiqAdapter)
        @page = [page.to_i, 1].max
        @scale = SCALES.include?(scale.to_s) ? scale.to_s : nil
        @identity = process.to_s.empty? ? nil : process.to_s
        @kind = Reader::KINDS.key?(events.to_s) ? events.to_s : nil
        @now = now
        @adapter = adapter
      end

      # A process's page (`?process=IDENTITY`) rather than the fleet's.
      def detail?
        !@identity.nil?
      end

      # Every process (History.processes rows): live ones first, each by its share of max_rss, worst first.
      def all
        @all ||= Reader.processes(now: now, adapter: @adapter)
                       .sort_by { |p| [p[:gone] ? 1 : 0, -(share(p) || -1), p[:identity]] }
      end

      def total
        all.size
      end

      def pages
        [(total + PER_PAGE - 1) / PER_PAGE, 1].max
      end

      # This page's processes, in the order of #all.
      def processes
        @processes ||= all.drop((page - 1) * PER_PAGE).first(PER_PAGE)
      end

      # This page's processes by host ([[hostname, [rows]], ...]): the host of the worst process first.
      def hosts
        processes.group_by { |p| p[:hostname].to_s }.to_a
      end

      # The process of a process's page (nil: it has no history).
      def process
        @process ||= all.find { |p| p[:identity] == @identity }
      end

      # A process's identity without its host name (under the host's heading): "12345:0f3a9c2b7d1e".
      def short_identity(process)
        host = process[:hostname].to_s
        short = process[:identity].delete_prefix("#{host}:")
        host.empty? || short.empty? ? process[:identity] : short
      end

      # A process's name in the summary: its host's first label and its pid ("ip-10-0-5-35:1009"); the link and
      # its title carry the whole identity.
      def brief_identity(process)
        host = process[:hostname].to_s.split(".").first
        host && process[:pid].to_i.positive? ? "#{host}:#{process[:pid]}" : process[:identity]
      end

      # memory / max_rss (hard_max_rss without one); nil without a limit.
      def share(process)
        limit = process[:max_rss] || process[:hard_max_rss]
        limit&.positive? ? process[:memory].fdiv(limit) : nil
      end

      # "228%", "-".
      def share_text(process)
        value = share(process)
        value ? "#{(value * 100).round}%" : "-"
      end

      def events
        @events ||= Reader.events(adapter: @adapter)
      end

      def events_of(identity)
        (@events_by_identity ||= events.group_by { |e| e[:identity] })[identity] || []
      end

      # The events table: the newest EVENTS_PER_KIND of each kind, or EVENTS_SHOWN of the kind asked for, of the
      # fleet or of the process of a process's page.
      def timeline
        rows = detail? ? events_of(@identity) : events
        return Reader.select(rows, per_kind: EVENTS_SHOWN, kinds: [@kind]) if @kind

        Reader.select(rows, per_kind: EVENTS_PER_KIND)
      end

      # {kind => events of that kind in the stream} of the fleet or the process.
      def kind_counts
        rows = detail? ? events_of(@identity) : events
        counts = rows.map { |e| Reader.kind(e) }.tally
        Reader::KINDS.keys.to_h { |k| [k, counts.fetch(k, 0)] }
      end

      # The link of the events table to one kind (nil: all), on this page.
      def events_query(kind)
        params = []
        params << "process=#{CGI.escape(@identity)}" if detail?
        params << "events=#{kind}" if kind
        (params.empty? ? "memory" : "memory?#{params.join('&')}") + "#events"
      end

      def kind_label(kind)
        KIND_LABELS.fetch(kind, kind.to_s)
      end

      def process_query(process)
        "memory?process=#{CGI.escape(process[:identity])}"
      end

      def classes
        @classes ||= Report.fleet(limit: CLASSES_SHOWN, adapter: @adapter)
      end

      # Whether admission runs in the fleet: its classes carry a working set and the jobs sent back to wait.
      def admission?
        classes.any? { |c| c.key?(:deferred) }
      end

      def top_classes
        Report.top(classes, :retained_per_job, TOP_CLASSES)
      end

      # Readings of this page's processes and of those the summary says since when they are over max_rss (a
      # process's page: its own).
      def readings(identity)
        @readings ||= begin
          shown = detail? ? [@identity] : (processes + over.first(OVER_SHOWN)).map { |p| p[:identity] }
          Reader.readings(shown, adapter: @adapter)
        end
        @readings.fetch(identity) do
          @readings[identity] = Reader.readings([identity], adapter: @adapter)[identity] || []
        end
      end

      # The shared time axis of the small charts: from the oldest reading shown (at most History::KEEP ago) to now.
      def axis
        @axis ||= begin
          first = processes.filter_map { |p| readings(p[:identity]).first&.first }.min || (now - 60)
          from = [first, now - History::KEEP].max
          [from, [now, from + 1].max]
        end
      end

      # The shared axis's grid: every 1, 5, 10 or 15 minutes, whichever gives 3 to 12 lines.
      def ticks
        from, to = axis
        step = [60, 300, 600, 900].find { |s| (to - from) / s <= 12 } || 900
        first = (from / step).ceil * step
        (first..to).step(step).to_a
      end

      # Whether the small charts share one y scale (`?scale=shared`) rather than each its own max_rss.
      def shared_scale?
        @scale == "shared"
      end

      # The link to a page of processes (nil: this one) keeping the scale, or to this page with `scale`.
      def processes_query(page: self.page, scale: @scale)
        params = []
        params << "page=#{page}" if page > 1
        params << "scale=#{scale}" if scale
        params.empty? ? "memory" : "memory?#{params.join('&')}"
      end

      # The y top of every small chart of this page with the shared scale: the highest of each process's top
      # (HEADROOM x its max_rss, or its peak), so that processes compare in megabytes.
      def shared_ymax
        @shared_ymax ||= processes.map do |p|
          peak = readings(p[:identity]).map(&:last).max || 0
          [(p[:max_rss] || 0) * SmallChart::HEADROOM, peak * 1.1].max
        end.max
      end

      def small_chart(process)
        from, to = axis
        SmallChart.new(readings(process[:identity]), from: from, to: to, max_rss: process[:max_rss], hard_max_rss: process[:hard_max_rss],
                                                     ymax: shared_scale? ? shared_ymax : nil,
                                                     events: events_of(process[:identity]), ticks: ticks,
                                                     ends_at: process[:gone] ? process[:at] : to,
                                                     label: "#{process[:metric]} of #{process[:identity]}").to_svg
      end

      # The full chart of a process's page.
      def chart(process)
        Chart.new(readings(process[:identity]), max_rss: process[:max_rss], hard_max_rss: process[:hard_max_rss],
                                                events: events_of(process[:identity]),
                                                label: "#{process[:metric]} of #{process[:identity]}").to_svg
      end

      def live
        all.reject { |p| p[:gone] }
      end

      # Live processes over max_rss, the largest share first.
      def over
        @over ||= live.select { |p| p[:max_rss] && p[:memory] > p[:max_rss] }
      end

      # Live processes the brake holds, the largest share first.
      def paused
        live.select { |p| p[:brake] == :paused }
      end

      # Live processes on their way to a restart, the largest share first.
      def restarting
        live.select { |p| RESTARTING.include?(p[:phase].to_s) }
      end

      # Gone processes, the most recently gone first.
      def gone
        all.select { |p| p[:gone] }.sort_by { |p| -p[:at] }
      end

      # Since when a process has been over max_rss: the first reading of its last run of readings over it
      # ([at, whole]: whole when the run starts at its oldest reading, so "at least since").
      def over_since(process)
        rows = readings(process[:identity])
        i = rows.size
        i -= 1 while i.positive? && rows[i - 1].last > process[:max_rss]
        return [process[:at], false] if i == rows.size

        [rows[i].first, i.zero?]
      end

      # The fleet's counts: serving (live, not restarting, not paused), paused (by the brake), over (max_rss),
      # restarting, gone.
      def counts
        @counts ||= {
          serving: live.count { |p| !RESTARTING.include?(p[:phase].to_s) && p[:brake] != :paused },
          paused: paused.size,
          over: over.size,
          restarting: restarting.size,
          gone: gone.size
        }
      end

      # The live fleet's memory and the sum of its limits (processes without one left out of the limit's sum).
      def fleet_memory
        @fleet_memory ||= {
          memory: live.sum { |p| p[:memory] }, max_rss: live.sum { |p| p[:max_rss] || 0 },
          hard_max_rss: live.sum { |p| p[:hard_max_rss] || 0 }, processes: live.size
        }
      end

      # Live processes by share of max_rss: {"under 50%" => n, "50-90%" => n, "90-100%" => n, "over" => n}.
      def share_buckets
        buckets = { "under 50%" => 0, "50-90%" => 0, "90-100%" => 0, "over" => 0 }
        live.each do |p|
          s = share(p) or next
          key = if s > 1 then "over"
                elsif s >= 0.9 then "90-100%"
                elsif s >= 0.5 then "50-90%"
                else "under 50%"
                end
          buckets[key] += 1
        end
        buckets
      end

      # The fleet bar: an SVG of the live fleet's memory against the sum of max_rss (at 80% of its width).
      def fleet_bar
        fm = fleet_memory
        limit = fm[:max_rss].positive? ? fm[:max_rss] : [fm[:memory], 1].max
        scale = 400 * 0.8 / limit
        used = [fm[:memory] * scale, 400].min
        color = fm[:memory] > limit ? "#c62828" : "#1f6fd1"
        [%(<svg class="sr-fleet-bar" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 400 14" ) +
          %(preserveAspectRatio="none" role="img" aria-label="the live fleet's memory against its max_rss">),
         %(<rect x="0" y="0" width="400" height="14" fill="#9e9e9e" fill-opacity="0.18"/>),
         %(<rect x="0" y="0" width="#{format('%.1f', used)}" height="14" fill="#{color}"><title>#{mb(fm[:memory])} ) +
           %(in use</title></rect>),
         %(<line x1="320" y1="0" x2="320" y2="14" stroke="#d99a00" stroke-width="2" ) +
           %(vector-effect="non-scaling-stroke"><title>max_rss, all live processes: #{mb(fm[:max_rss])}</title></line>),
         "</svg>"].join("\n")
      end

      # The last hour's events of `kind` (a Reader::KINDS key), of the fleet.
      def recent(kind)
        events.select { |e| e[:at] >= now - RECENT && Reader.kind(e) == kind }
      end

      # {reason => n} of the last hour's restarts.
      def recent_restart_reasons
        recent("restart").map { |e| e[:reason].to_s }.tally
      end

      # What a process's reclaimed bytes sum: "12 reclaims, 6,175 MB in all" when the stream still holds every
      # reclaim the counter added up, else the counter and what the stream holds of it.
      def reclaimed_text(process)
        total = process[:reclaimed_bytes].to_i
        reclaims = events_of(process[:identity]).select { |e| e[:type] == "reclaim" }
        held = reclaims.sum { |e| [e[:data]["released"].to_i, 0].max }
        return "no reclaim" if total.zero? && reclaims.empty?
        return "#{plural(reclaims.size, 'reclaim')}, #{mb_total(total)} in all" if held >= total

        "#{mb_total(total)} in all since it started; the event stream still holds " \
          "#{plural(reclaims.size, 'reclaim')} of it (#{mb_total(held)})"
      end

      # The phase a process shows: a live one's phase; a gone one's end (restarted, OOM-killed) or, when its last
      # reading caught a phase on the way to a restart, "gone" and its last serving state, not the stale phase.
      # `short`: without the time.
      def phase_text(process, short: false)
        return process[:phase].to_s unless process[:gone]

        restart = events_of(process[:identity]).find { |e| e[:type] == "restart" }
        oom = !restart && oom_kill_of(process)
        at = short ? "" : " at #{clock((restart || oom)[:at])}" if restart || oom
        return "restarted (#{restart[:reason]})#{at}" if restart
        return "killed by the OOM killer#{at}" if oom

        "gone, last serving"
      end

      # The raw phase behind #phase_text (a tooltip), when it says something else.
      def phase_title(process)
        process[:gone] ? "the last phase its guard wrote: #{process[:phase]}" : nil
      end

      def oom_kill_of(process)
        events.find do |e|
          e[:type] == "oom_kill" && Array(e[:data]["killed"]).any? { |k| k.to_s.start_with?("#{process[:identity]} ") }
        end
      end

      # "6,175 MB".
      def mb_total(bytes)
        "#{(bytes / Units::MB.to_f).round.to_s.reverse.scan(/\d{1,3}/).join(',').reverse} MB"
      end

      def plural(count, word, words = "#{word}s")
        "#{count} #{count == 1 ? word : words}"
      end

      def mb(bytes)
        Units.mb(bytes, none: "-")
      end

      # A per-job figure: KB below a megabyte.
      def size(bytes)
        bytes.nil? ? "-" : Units.bytes(bytes)
      end

      # "3m 05s" / "2h 10m": a duration in seconds.
      def duration(seconds)
        s = seconds.to_i
        return "#{s}s" if s < 60
        return format("%<m>dm %<s>02ds", m: s / 60, s: s % 60) if s < 3600

        format("%<h>dh %<m>02dm", h: s / 3600, m: (s % 3600) / 60)
      end

      # "12.50%" (PSI), "-" when unknown.
      def percent(value)
        value.nil? ? "-" : format("%.2f%%", value)
      end

      def clock(at)
        Time.at(at).utc.strftime("%H:%M:%S UTC")
      end

      # "live" or "gone 2m 10s ago".
      def state(process)
        process[:gone] ? "gone #{duration(now - process[:at])} ago" : "live"
      end

      # One line describing an event for the timeline.
      def details(event)
        data = event[:data]
        case event[:type]
        when "reclaim"
          "gave back #{mb(data['released'])}, #{mb(data['memory'])} after" \
            "#{data['still_over'] ? ', still over the limit' : ', back under the limit'}"
        when "restart"
          parts = ["#{event[:reason]}: #{mb(data['memory'])} (max_rss #{mb(data['max_rss'])}), busy #{data['busy']}"]
          parts << "in flight: #{in_flight(data['in_flight'])}" if data["in_flight"]
          top = data["top_retained"]
          parts << "top: #{top.first(3).map { |j| j['class'] }.join(', ')}" if top.is_a?(Array) && !top.empty?
          parts << data["verdict"] if data["verdict"]
          parts.join("; ")
        when "denial"
          data["message"].to_s
        when "oom_kill"
          oom_kill(data)
        when "pause"
          "brake: fetching paused at #{mb(data['memory'])}, #{data['busy']} job(s) running"
        when "resume"
          "brake: fetching again with #{data['window']} thread(s) at #{mb(data['memory'])}" \
            "#{data['retained'] ? ' (memory retained, not in flight: the brake lets go)' : ''}"
        when "limits"
          "the memory cgroup's limit is now #{mb(data['limit'])} (was #{mb(data['was_limit'])}): max_rss " \
            "#{mb(data['max_rss'])}, hard_max_rss #{data['hard_max_rss'] ? mb(data['hard_max_rss']) : 'none'}"
        when "admission"
          "admission: #{data['class']} waits (#{data['hold']}): needs #{mb(data['need'])}, " \
            "#{mb(data['projected'])} with the running jobs, brake_at #{mb(data['bound'])}"
        when "quarantine"
          jobs = Array(data["quarantined"]).map { |j| "#{j['class']} #{j['jid']}" }
          "sent to the dead set, not requeued again (in flight at #{data.dig('quarantined', 0, 'restarts')} memory " \
            "restarts): #{jobs.join(', ')}"
        else
          ""
        end
      end

      private

      def oom_kill(data)
        killed = Array(data["killed"])
        "the kernel's OOM killer killed #{killed.empty? ? 'a process the guards do not know' : killed.join(', ')} " \
          "(OOM kill #{data['oom_kills']} of the cgroup); in flight at its last reading, lost with basic fetch: " \
          "#{in_flight(Array(data['in_flight']))}"
      end

      def in_flight(jobs)
        return "none" if jobs.empty?

        jobs.first(5).map { |j| "#{j['class']} #{j['jid']} (#{j['running_s'].to_f.round(1)}s)" }.join(", ")
      end
    end
  end
end
