# frozen_string_literal: true

# The Markdown table of bench/fleet_compare.rb: one row per strategy's run (FleetRun::Result).
class FleetTable
  def self.percentile(values, share)
    return 0.0 if values.empty?

    sorted = values.sort
    sorted[(share * (sorted.size - 1)).round]
  end

  def initialize(results, max_rss:)
    @results = results
    @max_rss = max_rss
    @base = results.find { |r| r.strategy.key == "a" }
  end

  def markdown
    rows = @results.map { |result| row(result) }
    lines = ["| strategy | peak RSS MB | p95 RSS MB | restarts | jobs/s | x of (a) | p99 latency s | jobs done " \
             "| jobs lost | run twice | SIGKILLs |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    (lines + rows).join("\n")
  end

  private

  def rate(result)
    result.done / result.elapsed
  end

  def row(result)
    rss = result.rss_values
    relative = @base ? format("%.2f", rate(result) / rate(@base)) : "-"
    capped = result.capped ? " (cap hit)" : ""
    format("| %<label>s | %<peak>.0f | %<p95>.0f | %<restarts>d | %<rate>.1f | %<rel>s | %<p99>.1f | " \
           "%<done>d / %<pushed>d%<capped>s | %<lost>d | %<twice>d | %<kills>d |",
           label: result.strategy.label, peak: rss.max.to_f, p95: self.class.percentile(rss, 0.95),
           restarts: result.restarts, rate: rate(result), rel: relative,
           p99: self.class.percentile(result.latencies, 0.99), done: result.done, pushed: result.pushed,
           capped: capped, lost: result.lost, twice: result.twice, kills: result.sigkills)
  end
end
