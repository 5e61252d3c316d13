# frozen_string_literal: true

require "cgi"
require_relative "../history"
require_relative "chart"

module SidekiqRust
  module Web
    # What the Memory tab shows, read from Redis only (SidekiqRust::History): one page of processes (live first by
    # recency; gone ones fade), each with its chart, the fleet's latest events and the per-class table. The view
    # (views/memory.erb) only lays it out.
    class Page
      PER_PAGE = 10
      EVENTS_SHOWN = 50
      # Events read to put markers on the charts of the processes shown.
      EVENTS_FOR_MARKERS = 500
      CLASSES_SHOWN = 25

      attr_reader :page, :now

      def initialize(page: 1, now: Time.now.to_f, adapter: SidekiqAdapter)
        @page = [page.to_i, 1].max
        @now = now
        @adapter = adapter
      end

      def total
        @total ||= History.process_count(@adapter)
      end

      def pages
        [(total + PER_PAGE - 1) / PER_PAGE, 1].max
      end

      # This page's processes (History.processes rows).
      def processes
        @processes ||= History.processes(limit: PER_PAGE, offset: (page - 1) * PER_PAGE, now: now, adapter: @adapter)
      end

      def events
        @events ||= History.events(count: EVENTS_FOR_MARKERS, adapter: @adapter)
      end

      def timeline
        events.first(EVENTS_SHOWN)
      end

      def classes
        @classes ||= Report.fleet(limit: CLASSES_SHOWN, adapter: @adapter)
      end

      def chart(process)
        readings = History.readings(process[:identity], adapter: @adapter)
        Chart.new(readings, soft: process[:soft], hard: process[:hard],
                            events: events.select { |e| e[:identity] == process[:identity] },
                            label: "#{process[:metric]} of #{process[:identity]}").to_svg
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
          parts = ["#{event[:reason]}: #{mb(data['memory'])} (limit #{mb(data['limit'])}), busy #{data['busy']}"]
          parts << "in flight: #{in_flight(data['in_flight'])}" if data["in_flight"]
          top = data["top_retained"] || data["top_growth"]
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
