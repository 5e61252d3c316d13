# frozen_string_literal: true

# The chart of bench/fleet_compare.rb: RSS over time of every process, one small panel per strategy, the three
# process slots in three colours (a slot's successive processes on one line, broken at each restart), max_rss
# and hard_max_rss as dashed lines. Plain SVG, presentation attributes only.
class FleetChart
  COLUMNS = 2
  PANEL_W = 440
  PANEL_H = 200
  MARGIN = { left: 52, right: 14, top: 30, bottom: 34 }.freeze
  COLOURS = %w[#1f77b4 #ff7f0e #2ca02c].freeze
  GAP = 1.5 # seconds without a sample that break a slot's line (a restart)

  def initialize(results, max_rss:, hard_max_rss:)
    @results = results
    @max_rss = max_rss
    @hard = hard_max_rss
    all = results.flat_map(&:samples)
    @t_max = [all.map(&:first).max.to_f, 1].max.ceil(-1)
    @y_max = ([all.map(&:last).max.to_f, @hard].max / 100.0).ceil * 100
  end

  def svg
    rows = (@results.size + COLUMNS - 1) / COLUMNS
    width = COLUMNS * PANEL_W
    height = (rows * PANEL_H) + 30
    panels = @results.each_with_index.map do |result, i|
      panel(result, (i % COLUMNS) * PANEL_W, 30 + ((i / COLUMNS) * PANEL_H))
    end
    <<~SVG
      <svg xmlns="http://www.w3.org/2000/svg" width="#{width}" height="#{height}" viewBox="0 0 #{width} #{height}" font-family="sans-serif" font-size="11">
      <rect width="#{width}" height="#{height}" fill="#ffffff"/>
      <text x="10" y="19" font-size="13" font-weight="bold" fill="#222222">RSS per process (MB) over time (s), a colour per process; dashed: max_rss #{@max_rss} (red), hard_max_rss #{@hard} (grey)</text>
      #{panels.join("\n")}
      </svg>
    SVG
  end

  private

  def panel(result, x0, y0)
    plot_w = PANEL_W - MARGIN[:left] - MARGIN[:right]
    plot_h = PANEL_H - MARGIN[:top] - MARGIN[:bottom]
    left = x0 + MARGIN[:left]
    top = y0 + MARGIN[:top]
    x = ->(t) { (left + (t.fdiv(@t_max) * plot_w)).round(1) }
    y = ->(mb) { (top + plot_h - (mb.fdiv(@y_max) * plot_h)).round(1) }
    parts = [%(<text x="#{left}" y="#{top - 8}" font-size="12" fill="#222222">#{escape(result.strategy.label)}: ) +
             %(peak #{result.rss_values.max.to_f.round} MB, #{result.restarts} restarts</text>),
             %(<rect x="#{left}" y="#{top}" width="#{plot_w}" height="#{plot_h}" fill="#fafafa" stroke="#999999"/>)]
    parts.concat(axes(left, top, plot_w, plot_h, x, y))
    [[@max_rss, "#d62728"], [@hard, "#888888"]].each do |mb, colour|
      parts << %(<line x1="#{left}" y1="#{y.call(mb)}" x2="#{left + plot_w}" y2="#{y.call(mb)}" stroke="#{colour}" ) +
               %(stroke-width="1.2" stroke-dasharray="5,3"/>)
    end
    lines(result).each do |slot, points|
      coords = points.map { |t, mb| "#{x.call(t)},#{y.call(mb)}" }.join(" ")
      parts << %(<polyline points="#{coords}" fill="none" stroke="#{COLOURS[slot % COLOURS.size]}" stroke-width="1.2"/>)
    end
    parts.join("\n")
  end

  def axes(left, top, plot_w, plot_h, x, y)
    ticks = (0..@y_max).step(@y_max > 600 ? 200 : 100).map do |mb|
      %(<text x="#{left - 5}" y="#{y.call(mb) + 4}" text-anchor="end" fill="#444444">#{mb}</text>) +
        %(<line x1="#{left}" y1="#{y.call(mb)}" x2="#{left + plot_w}" y2="#{y.call(mb)}" stroke="#e4e4e4"/>)
    end
    ticks + (0..@t_max).step(@t_max > 120 ? 30 : 20).map do |t|
      %(<text x="#{x.call(t)}" y="#{top + plot_h + 14}" text-anchor="middle" fill="#444444">#{t}</text>)
    end
  end

  # [slot, [[t, mb], ...]] per unbroken stretch of a slot's samples.
  def lines(result)
    result.samples.group_by { |_, slot, _| slot }.flat_map do |slot, samples|
      stretches = samples.slice_when { |a, b| b.first - a.first > GAP }
      stretches.map { |stretch| [slot, stretch.map { |t, _, mb| [t, mb] }] }
    end
  end

  def escape(text)
    text.gsub("&", "&amp;").gsub("<", "&lt;").gsub(">", "&gt;")
  end
end
