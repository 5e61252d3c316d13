# frozen_string_literal: true

require_relative "svg_text"

module SidekiqRust
  module Web
    # One process's memory over time as an SVG drawn on the server (no JavaScript): the readings as a path, the
    # max_rss and hard_max_rss as dashed lines, reclaims as green dots, restarts as red vertical lines, the spans the
    # memory brake held fetching and the spans over max_rss as shaded bands, each with a
    # <title> tooltip. Colours are SVG presentation attributes, not style attributes, so a strict
    # Content-Security-Policy (Sidekiq 8: no inline style) does not block them.
    class Chart
      include SvgText

      WIDTH = 640
      HEIGHT = 160
      # Room for the axis labels.
      LEFT = 56
      BOTTOM = 18
      TOP = 8
      RIGHT = 8
      COLORS = { memory: "#1f6fd1", soft: "#d99a00", hard: "#c62828", restart: "#c62828", reclaim: "#2e7d32",
                 denial: "#8e8e8e", grid: "#9e9e9e", paused: "#d99a00" }.freeze

      # readings: [[unix_seconds, bytes], ...] oldest first; events: History.events rows of this process.
      def initialize(readings, max_rss:, hard_max_rss:, events: [], label: "memory")
        @readings = readings
        @max_rss = max_rss
        @hard_max_rss = hard_max_rss
        @events = events
        @label = label
        times = readings.map(&:first) + events.map { |e| e[:at] }
        @from = times.min || 0.0
        @to = [times.max || 1.0, @from + 1].max
        top = ([@hard_max_rss, @max_rss].compact + readings.map(&:last)).max || 1
        @ymax = top * 1.1
      end

      def to_svg
        parts = [%(<svg class="sr-chart" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 #{WIDTH} #{HEIGHT}" ) +
                 %(width="#{WIDTH}" height="#{HEIGHT}" role="img" aria-label="#{esc(@label)}">)]
        parts << axes
        paused_spans.each { |from, to| parts << paused_band(from, to) }
        SmallChart.over_spans(@readings, @max_rss).each { |from, to, peak| parts << over_band(from, to, peak) }
        parts << limit_line(@max_rss, :soft, "max_rss") if @max_rss
        parts << limit_line(@hard_max_rss, :hard, "hard_max_rss") if @hard_max_rss
        parts << memory_path
        @events.each { |event| parts << marker(event) }
        parts << "</svg>"
        parts.compact.join("\n")
      end

      # The path's `d` attribute: M x,y L x,y ... in the SVG's coordinates ("" with no reading).
      def path_data
        @readings.each_with_index.map do |(at, bytes), i|
          format("%<cmd>s%<x>.1f,%<y>.1f", cmd: i.zero? ? "M" : "L", x: x(at), y: y(bytes))
        end.join(" ")
      end

      private

      def x(at)
        LEFT + ((at - @from) / (@to - @from) * (WIDTH - LEFT - RIGHT))
      end

      def y(bytes)
        TOP + ((1 - (bytes / @ymax)) * (HEIGHT - TOP - BOTTOM))
      end

      def axes
        bottom = HEIGHT - BOTTOM
        [
          %(<line x1="#{LEFT}" y1="#{TOP}" x2="#{LEFT}" y2="#{bottom}" stroke="#{COLORS[:grid]}" stroke-width="1"/>),
          %(<line x1="#{LEFT}" y1="#{bottom}" x2="#{WIDTH - RIGHT}" y2="#{bottom}" stroke="#{COLORS[:grid]}" ) +
            %(stroke-width="1"/>),
          %(<text x="#{LEFT - 4}" y="#{TOP + 10}" text-anchor="end" font-size="10">#{mb(@ymax)}</text>),
          %(<text x="#{LEFT - 4}" y="#{bottom}" text-anchor="end" font-size="10">0</text>),
          %(<text x="#{LEFT}" y="#{HEIGHT - 4}" font-size="10">#{clock(@from)}</text>),
          %(<text x="#{WIDTH - RIGHT}" y="#{HEIGHT - 4}" text-anchor="end" font-size="10">#{clock(@to)}</text>)
        ].join("\n")
      end

      def paused_spans
        self.class.paused_spans(@events, @to)
      end

      # [[from, to], ...]: each pause of `events` to the resume after it (to `to` while still paused).
      def self.paused_spans(events, to)
        spans = []
        from = nil
        events.sort_by { |e| e[:at] }.each do |event|
          case event[:type]
          when "pause" then from ||= event[:at]
          when "resume"
            spans << [from, event[:at]] if from
            from = nil
          end
        end
        spans << [from, [to, from].max] if from
        spans
      end

      def paused_band(from, to)
        x1 = x(from)
        width = format("%.1f", [x(to) - x1, 1].max)
        %(<rect class="sr-paused" x="#{format('%.1f', x1)}" y="#{TOP}" width="#{width}" ) +
          %(height="#{HEIGHT - TOP - BOTTOM}" fill="#{COLORS[:paused]}" fill-opacity="0.18">) +
          %(<title>brake: fetching paused #{format('%.1f', to - from)}s from #{clock(from)}</title></rect>)
      end

      def over_band(from, to, peak)
        x1 = x(from)
        width = format("%.1f", [x(to) - x1, 1].max)
        %(<rect class="sr-over" x="#{format('%.1f', x1)}" y="#{TOP}" width="#{width}" ) +
          %(height="#{HEIGHT - TOP - BOTTOM}" fill="#{COLORS[:hard]}" fill-opacity="0.12">) +
          %(<title>over max_rss (#{mb(@max_rss)}) from #{clock(from)} for #{format('%.0f', to - from)}s, peak ) +
          %(#{mb(peak)}</title></rect>)
      end

      def limit_line(bytes, kind, name)
        yy = format("%.1f", y(bytes))
        %(<line class="sr-limit sr-limit-#{kind}" x1="#{LEFT}" y1="#{yy}" x2="#{WIDTH - RIGHT}" y2="#{yy}" ) +
          %(stroke="#{COLORS[kind]}" stroke-width="1" stroke-dasharray="6 4"><title>#{name} #{mb(bytes)}</title></line>)
      end

      def memory_path
        return nil if @readings.empty?

        last_at, last = @readings.last
        %(<path class="sr-memory" d="#{path_data}" fill="none" stroke="#{COLORS[:memory]}" stroke-width="2">) +
          %(<title>#{esc(@label)}: #{mb(last)} at #{clock(last_at)}</title></path>)
      end

      def marker(event)
        xx = format("%.1f", x(event[:at]))
        case event[:type]
        when "restart"
          %(<g class="sr-marker sr-marker-restart"><line x1="#{xx}" y1="#{TOP}" x2="#{xx}" y2="#{HEIGHT - BOTTOM}" ) +
            %(stroke="#{COLORS[:restart]}" stroke-width="2"/><title>restart (#{esc(event[:reason])}) at ) +
            %(#{clock(event[:at])}</title></g>)
        when "reclaim"
          released = event[:data]["released"].to_i
          yy = format("%.1f", y(event[:data]["memory"].to_i))
          %(<g class="sr-marker sr-marker-reclaim"><circle cx="#{xx}" cy="#{yy}" r="4" fill="#{COLORS[:reclaim]}"/>) +
            %(<title>reclaimed #{mb(released)} at #{clock(event[:at])}</title></g>)
        when "denial"
          %(<g class="sr-marker sr-marker-denial"><circle cx="#{xx}" cy="#{TOP + 4}" r="3" ) +
            %(fill="#{COLORS[:denial]}"/><title>restart refused (#{esc(event[:reason])}) at ) +
            %(#{clock(event[:at])}</title></g>)
        when "resume"
          let_go(xx, event) if event[:data]["retained"]
        when "limits"
          %(<g class="sr-marker sr-marker-limits"><line x1="#{xx}" y1="#{TOP}" x2="#{xx}" y2="#{HEIGHT - BOTTOM}" ) +
            %(stroke="#{COLORS[:soft]}" stroke-width="2" stroke-dasharray="2 3"/><title>limits moved at ) +
            %(#{clock(event[:at])}: the cgroup's limit #{mb(event[:data]["limit"].to_i)}, max_rss ) +
            %(#{mb(event[:data]["max_rss"].to_i)}</title></g>)
        end
      end

      # The brake let go: a paused process whose memory stayed retained fetches again (no restart could be had).
      def let_go(xx, event)
        %(<g class="sr-marker sr-marker-let-go"><path d="M#{xx} #{TOP} l-5 8 h10 z" fill="#{COLORS[:paused]}"/>) +
          %(<title>brake let go at #{clock(event[:at])} (memory retained, not in flight)</title></g>)
      end
    end
  end
end
