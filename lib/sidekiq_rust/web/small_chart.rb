# frozen_string_literal: true

require_relative "svg_text"

module SidekiqRust
  module Web
    # One process's memory as a small multiple: drawn on the time axis every small chart of the page shares
    # (`from`..`to`), its y scaled to the process's own max_rss, so that the limit line sits at the same height in
    # every chart and processes compare at a glance (or to the page's shared `ymax`, to compare megabytes). Memory
    # above HEADROOM times the limit is drawn at the top (the card says the peak); the spans over max_rss are shaded
    # red, the brake's pauses amber, restarts and OOM kills are vertical lines, each with a <title> tooltip. SVG
    # presentation attributes only (no style attribute: Sidekiq 8's CSP).
    class SmallChart
      include SvgText

      WIDTH = 300
      HEIGHT = 60
      TOP = 2
      BOTTOM = 2
      # The y axis reaches this many times max_rss: the limit line at two thirds of the height.
      HEADROOM = 1.5
      COLORS = Chart::COLORS.merge(over: "#c62828", oom: "#6a1b9a", tick: "#808080").freeze

      attr_reader :ymax

      # readings: [[unix_seconds, bytes], ...] oldest first; events: History.events rows of this process; ticks:
      # the shared axis's grid times; ends_at: where a pause still on ends (the last reading of a gone process).
      def initialize(readings, from:, to:, max_rss:, hard_max_rss:, events: [], label: "memory", ticks: [], ends_at: to,
                     ymax: nil)
        @readings = readings
        @from = from
        @to = [to, from + 1].max
        @max_rss = max_rss
        @hard_max_rss = hard_max_rss
        @events = events
        @label = label
        @ticks = ticks
        @ends_at = ends_at
        scale = max_rss || hard_max_rss
        scale ||= (readings.map(&:last).max || 1) / HEADROOM * 1.1
        @ymax = [ymax || (scale * HEADROOM), 1].max
      end

      def to_svg
        parts = [%(<svg class="sr-small-chart" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 #{WIDTH} #{HEIGHT}" ) +
                 %(preserveAspectRatio="none" role="img" aria-label="#{esc(@label)}">)]
        parts << %(<rect x="0" y="0" width="#{WIDTH}" height="#{HEIGHT}" fill="#808080" fill-opacity="0.06"/>)
        @ticks.each { |at| parts << tick(at) }
        Chart.paused_spans(@events, @ends_at).each { |from, to| parts << paused_band(from, to) }
        over_spans.each { |span| parts << over_band(*span) }
        parts << limit_line(@max_rss, :soft, "max_rss") if @max_rss
        parts << limit_line(@hard_max_rss, :hard, "hard_max_rss") if @hard_max_rss && @hard_max_rss <= @ymax
        parts << memory_path
        parts << off_scale
        @events.each { |event| parts << marker(event) }
        parts << "</svg>"
        parts.compact.join("\n")
      end

      # The path's `d`: the highest reading of each pixel column (a peak is never averaged away).
      def path_data
        columns = {}
        @readings.each do |at, bytes|
          next if at < @from

          col = x(at).round
          columns[col] = [columns[col] || 0, bytes].max
        end
        columns.sort.each_with_index.map do |(col, bytes), i|
          format("%<cmd>s%<x>d,%<y>.1f", cmd: i.zero? ? "M" : "L", x: col, y: y(bytes))
        end.join(" ")
      end

      def over_spans
        self.class.over_spans(@readings, @max_rss).select { |_from, to, _peak| to >= @from }
      end

      # [[from, to, peak], ...]: the spans `readings` were over `max_rss` (to the last reading while still over).
      def self.over_spans(readings, max_rss)
        return [] unless max_rss

        spans = []
        start = nil
        peak = 0
        readings.each do |at, bytes|
          if bytes > max_rss
            start ||= at
            peak = [peak, bytes].max
          elsif start
            spans << [start, at, peak]
            start = nil
            peak = 0
          end
        end
        spans << [start, readings.last.first, peak] if start
        spans
      end

      private

      def x(at)
        ((at.clamp(@from, @to) - @from) / (@to - @from) * WIDTH)
      end

      def y(bytes)
        TOP + ((1 - [bytes / @ymax.to_f, 1].min) * (HEIGHT - TOP - BOTTOM))
      end

      def tick(at)
        xx = format("%.1f", x(at))
        %(<line class="sr-tick" x1="#{xx}" y1="0" x2="#{xx}" y2="#{HEIGHT}" stroke="#{COLORS[:tick]}" ) +
          %(stroke-opacity="0.3" stroke-width="1" vector-effect="non-scaling-stroke"/>)
      end

      def paused_band(from, to)
        x1 = x(from)
        width = format("%.1f", [x(to) - x1, 1].max)
        %(<rect class="sr-paused" x="#{format('%.1f', x1)}" y="0" width="#{width}" height="#{HEIGHT}" ) +
          %(fill="#{COLORS[:paused]}" fill-opacity="0.25">) +
          %(<title>brake: fetching paused #{format('%.1f', to - from)}s from #{clock(from)}</title></rect>)
      end

      def over_band(from, to, peak)
        x1 = x(from)
        width = format("%.1f", [x(to) - x1, 1].max)
        %(<rect class="sr-over" x="#{format('%.1f', x1)}" y="0" width="#{width}" height="#{HEIGHT}" ) +
          %(fill="#{COLORS[:over]}" fill-opacity="0.14"><title>over max_rss (#{mb(@max_rss)}) from #{clock(from)} ) +
          %(for #{format('%.0f', to - from)}s, peak #{mb(peak)}</title></rect>)
      end

      def limit_line(bytes, kind, name)
        yy = format("%.1f", y(bytes))
        %(<line class="sr-limit sr-limit-#{kind}" x1="0" y1="#{yy}" x2="#{WIDTH}" y2="#{yy}" ) +
          %(stroke="#{COLORS[kind]}" stroke-width="1" stroke-dasharray="5 3" vector-effect="non-scaling-stroke">) +
          %(<title>#{name} #{mb(bytes)}</title></line>)
      end

      def memory_path
        return nil if @readings.empty?

        last_at, last = @readings.last
        peak = @readings.map(&:last).max
        %(<path class="sr-memory" d="#{path_data}" fill="none" stroke="#{COLORS[:memory]}" stroke-width="1.5" ) +
          %(vector-effect="non-scaling-stroke"><title>#{esc(@label)}: #{mb(last)} at #{clock(last_at)}, peak ) +
          %(#{mb(peak)}</title></path>)
      end

      # A thick line along the top where the memory was above the chart's scale (HEADROOM times max_rss).
      def off_scale
        above = @readings.select { |at, bytes| bytes > @ymax && at >= @from }
        return nil if above.empty?

        x1 = x(above.first.first)
        width = format("%.1f", [x(above.last.first) - x1, 2].max)
        %(<rect class="sr-off-scale" x="#{format('%.1f', x1)}" y="0" width="#{width}" height="3" ) +
          %(fill="#{COLORS[:over]}"><title>above #{mb(@ymax)} (#{HEADROOM}x max_rss), the top of this chart: ) +
          %(peak #{mb(above.map(&:last).max)}</title></rect>)
      end

      def marker(event)
        xx = format("%.1f", x(event[:at]))
        case event[:type]
        when "restart"
          vertical(xx, :restart, "restart (#{event[:reason]}) at #{clock(event[:at])}", "sr-marker-restart")
        when "oom_kill"
          vertical(xx, :oom, "killed by the OOM killer at #{clock(event[:at])}", "sr-marker-oom")
        when "resume"
          let_go(xx, event) if event[:data]["retained"]
        end
      end

      # The brake let go: a paused process whose memory stayed retained fetches again (no restart could be had).
      def let_go(xx, event)
        %(<g class="sr-marker sr-marker-let-go"><line x1="#{xx}" y1="0" x2="#{xx}" y2="#{HEIGHT / 3}" ) +
          %(stroke="#{COLORS[:paused]}" stroke-width="3" vector-effect="non-scaling-stroke"/>) +
          %(<title>brake let go at #{clock(event[:at])} (memory retained, not in flight)</title></g>)
      end

      def vertical(xx, color, title, klass)
        %(<g class="sr-marker #{klass}"><line x1="#{xx}" y1="0" x2="#{xx}" y2="#{HEIGHT}" stroke="#{COLORS[color]}" ) +
          %(stroke-width="2" vector-effect="non-scaling-stroke"/><title>#{esc(title)}</title></g>)
      end
    end
  end
end
