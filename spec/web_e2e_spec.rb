# frozen_string_literal: true

require "spec_helper"

# End to end: real guarded Sidekiq processes write their history into a real redis-server; a real Rack server
# (WEBrick) serves Sidekiq's Web UI with the Memory tab and SidekiqRust::Metrics::App; a real headless Chromium
# loads the tab; Python's prometheus_client parses the metrics.
RSpec.describe "the Memory tab and the metrics of real guarded processes (Sidekiq #{Sidekiq::VERSION})" do
  include E2E

  let(:mb) { 1024 * 1024 }

  before(:all) { @web = WebServer.new.start }
  after(:all) { @web&.stop }

  # What a person sees of each process's small chart, and of the chart in it.
  ROWS_SCRIPT = <<~JS
    return Array.from(document.querySelectorAll("div.sr-card")).map(function (card) {
      var chart = card;
      var path = chart.querySelector("svg path.sr-memory");
      return {
        identity: card.getAttribute("data-identity"),
        text: card.innerText,
        opacity: window.getComputedStyle(card).opacity,
        path: path ? path.getAttribute("d") : null,
        soft: chart.querySelectorAll("line.sr-limit-soft").length,
        hard: chart.querySelectorAll("line.sr-limit-hard").length,
        restarts: chart.querySelectorAll("g.sr-marker-restart").length,
        restart_titles: Array.from(chart.querySelectorAll("g.sr-marker-restart title")).map(function (t) { return t.textContent; }),
        width: chart.querySelector("svg").getBoundingClientRect().width
      };
    });
  JS

  # A process's page: its full chart.
  DETAIL_SCRIPT = <<~JS
    var chart = document.querySelector("svg.sr-chart");
    var path = chart.querySelector("path.sr-memory");
    return {
      text: document.querySelector(".sr-memory-tab").innerText,
      path: path ? path.getAttribute("d") : null,
      soft: chart.querySelectorAll("line.sr-limit-soft").length,
      hard: chart.querySelectorAll("line.sr-limit-hard").length,
      restarts: chart.querySelectorAll("g.sr-marker-restart").length,
      restart_titles: Array.from(chart.querySelectorAll("g.sr-marker-restart title")).map(function (t) { return t.textContent; }),
      width: chart.getBoundingClientRect().width
    };
  JS

  it "shows each process over time with its limits and restart, and serves metrics Prometheus can parse" do
    # Without the brake (it would restart the process for retained memory at brake_at, with fewer readings).
    bloated = sidekiq("bloated", guard: { "max_rss" => 150, "hard_max_rss" => 900, "shutdown_wait" => 20,
                                          "check_interval" => 0.5, "brake" => false })
    steady = sidekiq("steady", guard: { "max_rss" => 8000, "check_interval" => 0.5 })
    wait_for_fleet(2)
    push("BloatJob", 10, 0.3, count: 40)
    expect(bloated.wait_exit(timeout: 120).exitstatus).to eq(0)
    eventually(timeout: 120, what: "all 40 jobs done") { done_count == 40 }
    # The bloated process is gone once no reading came for 15 s (3 check intervals, at least 15 s).
    sleep 16

    browser = Browser.new
    begin
      browser.visit("#{@web.url}/sidekiq/memory")
      text = browser.text
      expect(text).to include("Memory")
      rows = browser.execute(ROWS_SCRIPT)
      by_id = rows.to_h { |row| [row["identity"], row] }
      expect(by_id.keys).to include(bloated.identity, steady.identity)

      gone = by_id.fetch(bloated.identity)
      live = by_id.fetch(steady.identity)
      expect(gone["text"]).to match(/gone \d+s ago/)
      expect(gone["text"]).to include("150MB", "900MB") # the limits
      expect(live["text"]).to include("live", "8000MB")
      expect(gone["opacity"].to_f).to be < 0.6 # faded by the tab's stylesheet (loaded under Sidekiq's CSP)
      expect(live["opacity"].to_f).to eq(1.0)

      # The small chart: a path through the readings, the soft limit (the hard one, at 6x, is above its scale: the
      # card says it), the restart marker.
      expect(gone["path"]).to match(/\AM[\d.]+,[\d.]+( L[\d.]+,[\d.]+){3,}\z/)
      expect(gone["soft"]).to eq(1)
      expect(gone["hard"]).to eq(0)
      expect(gone["restarts"]).to eq(1)
      expect(gone["restart_titles"].first).to include("restart (max_rss)")
      expect(gone["width"]).to be > 200
      expect(gone["text"]).to include("restarted (max_rss)") # not the phase its last reading caught
      expect(live["path"]).to start_with("M")
      expect(live["restarts"]).to eq(0)

      # The fleet's timeline and the per-class table.
      expect(text).to match(/#{Regexp.escape(bloated.identity)}\s+restart\s+max_rss: \d+MB \(max_rss 150MB\)/)
      # The per-class table from the figures the guards published (sidekiq_rust:classes:IDENTITY).
      expect(text).to match(/BloatJob\s+\d+\s/)
      # The tab in Sidekiq's navigation.
      expect(browser.execute("return Array.from(document.querySelectorAll('a')).some(function (a) { " \
                             "return a.textContent.trim() === 'Memory' && /memory$/.test(a.getAttribute('href')); })"))
        .to be(true)
      browser.screenshot(File.expand_path("../tmp/memory-tab-sidekiq#{Sidekiq::VERSION.to_i}.png", __dir__))

      # The restarted process's page: the full chart, a path through the readings, both limits, the restart marker.
      browser.visit("#{@web.url}/sidekiq/memory?process=#{CGI.escape(bloated.identity)}")
      detail = browser.execute(DETAIL_SCRIPT)
      expect(detail["path"]).to match(/\AM[\d.]+,[\d.]+( L[\d.]+,[\d.]+){3,}\z/)
      expect(detail["soft"]).to eq(1)
      expect(detail["hard"]).to eq(1)
      expect(detail["restarts"]).to eq(1)
      expect(detail["restart_titles"].first).to include("restart (max_rss)")
      expect(detail["width"]).to be > 300
      expect(detail["text"]).to include("150MB", "900MB", "restarted (max_rss)")
      expect(detail["text"]).to match(/restart\s+max_rss: \d+MB \(max_rss 150MB\)/)
    ensure
      browser.quit
    end

    # The metrics, from the Rack app and from the command line, through a real Prometheus text parser.
    served = Net::HTTP.get_response(URI("#{@web.url}/metrics"))
    expect(served["Content-Type"]).to eq("text/plain; version=0.0.4; charset=utf-8")
    families = Prometheus.parse(served.body)
    expect(families.map { |f| f["name"] }).to include(
      "sidekiq_rust_memory_bytes", "sidekiq_rust_limit_bytes", "sidekiq_rust_reclaimed_bytes",
      "sidekiq_rust_restarts", "sidekiq_rust_restart_denials", "sidekiq_rust_class_retained_per_job_bytes"
    )
    expect(families.find { |f| f["name"] == "sidekiq_rust_restarts" }["type"]).to eq("counter")
    memory = Prometheus.samples(families, "sidekiq_rust_memory_bytes")
    expect(memory.map { |s| s["labels"] }).to include({ "identity" => steady.identity, "metric" => "rss" })
    expect(memory.find { |s| s["labels"]["identity"] == steady.identity }["value"]).to be > 10 * mb
    expect(Prometheus.samples(families, "sidekiq_rust_limit_bytes")).to include(
      a_hash_including("labels" => { "identity" => bloated.identity, "kind" => "max_rss" }, "value" => 150.0 * mb)
    )
    expect(Prometheus.samples(families, "sidekiq_rust_restarts_total")).to include(
      a_hash_including("labels" => { "identity" => bloated.identity, "reason" => "max_rss" }, "value" => 1.0)
    )
    bloat_jobs = Prometheus.samples(families, "sidekiq_rust_class_jobs").find { |s| s["labels"] == { "class" => "BloatJob" } }
    expect(bloat_jobs && bloat_jobs["value"]).to be > 0

    out, err, status = Open3.capture3(RbConfig.ruby, "-I", ChildRuby::LIB, File.expand_path("../exe/sidekiq_rust", __dir__),
                                      "metrics", "--redis-url", "unix://#{redis_server.socket}")
    expect(status.exitstatus).to eq(0), err
    expect(Prometheus.parse(out).map { |f| f["name"] }).to eq(families.map { |f| f["name"] })

    # Every key the guards and this gem wrote carries an expiry.
    keys = sidekiq_rust_keys
    expect(keys).to include("sidekiq_rust:events", "sidekiq_rust:processes",
                            "sidekiq_rust:history:#{steady.identity}")
    keys.each { |key| expect(redis_call("TTL", key)).to be > 0, "#{key} has no expiry" }
  end
end
