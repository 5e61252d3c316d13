# frozen_string_literal: true

require "spec_helper"

# The Memory tab as a person sees it, in a real headless Chromium at a 1,400 px desktop and a 390 px phone: a fleet
# of 13 processes on 3 hosts, one of them with a cloud's long host name (one process leaking to 3.4 times its limit,
# one paused by the brake, one restarting, two gone after their restarts, one that reclaimed 40 times), hundreds of
# brake rows in the event stream, written through SidekiqRust::History into a real redis-server and served by
# WEBrick. The page must not scroll sideways, and the fleet's summary must be on the first screen.
RSpec.describe "the Memory tab's layout (Sidekiq #{Sidekiq::VERSION})" do
  include E2E

  let(:mb) { 1_048_576 }
  # A host name as long as a cloud's (Sidekiq's identities start with it).
  let(:host) { "ip-10-0-12-34.eu-west-1.compute.internal" }
  let(:tmp) { File.expand_path("../tmp", __dir__).tap { |dir| FileUtils.mkdir_p(dir) } }

  # The adapter History writes through, with a host name of its own (as DYNO gives one).
  let(:host_adapter) do
    Struct.new(:hostname) do
      def redis(&block)
        SidekiqRust::SidekiqAdapter.redis(&block)
      end

      def logger
        SidekiqRust::SidekiqAdapter.logger
      end
    end
  end

  before(:all) { @web = WebServer.new.start }
  after(:all) { @web&.stop }

  let(:settings) { guard_settings(check_interval: 10, hard_max_rss: 400) } # max_rss 200 MB

  # 30 minutes of readings, one every 10 s (to `until_ago` seconds ago): memory (MB) at m minutes ago.
  def write(identity, host, phase: :serving, brake: nil, minutes: 30, until_ago: 0, &memory)
    history = SidekiqRust::History.new(settings, identity: identity, adapter: host_adapter.new(host))
    now = Time.now.to_f
    (until_ago..(minutes * 60)).step(10).reverse_each do |ago|
      history.record(memory.call(ago / 60.0) * mb, ago == until_ago ? phase : :serving, brake: brake, now: now - ago)
    end
    own_pid(identity)
    history
  end

  # History writes this process's pid: give each simulated process the pid its identity names.
  def own_pid(identity)
    redis_call("HSET", "#{SidekiqRust::History::PROCESS_PREFIX}#{identity}", "pid", identity.split(":")[-2])
  end

  def fleet
    now = Time.now.to_f
    write("web-1:101:aaa", "web-1") { |m| [60 + ((30 - m) * 30), 680].min } # over since about 25 min ago
    write("web-1:102:bbb", "web-1") { |m| 120 + (10 * Math.sin(m)) }
    braked = write("web-1:103:ccc", "web-1", brake: { paused: true, seconds: 40.0 }) { |_m| 190 }
    restarted = write("web-1:100:zzz", "web-1", phase: :waiting_slot, until_ago: 1710) { |_m| 250 }
    write("#{host}:201:ddd", host, phase: :waiting_slot) { |m| 150 + ((30 - m) * 3) } # 240 MB: restarting
    gone = write("#{host}:202:eee", host, phase: :waiting_slot, until_ago: 600) { |m| 100 + ((30 - m) * 8) }
    reclaimer = write("#{host}:203:fff", host) { |m| 140 + (m.to_i.even? ? 30 : 0) }
    write("#{host}:204:ggg", host) { |_m| 80 }
    5.times { |i| write("worker-3:30#{i}:h#{i}", "worker-3", minutes: 20) { |m| 40 + (i * 20) + m } }

    restarted.event(:restart, reason: :max_rss, memory: 250 * mb, max_rss: 200 * mb, busy: 2, now: now - 1705)
    gone.event(:restart, reason: :max_rss, memory: 260 * mb, max_rss: 200 * mb, busy: 1, now: now - 595)
    40.times do |i|
      reclaimer.event(:reclaim, released: 30 * mb, memory: 140 * mb, still_over: false, now: now - 1750 + (i * 40))
    end
    # A burst of brake rows after the restarts: 301 of them.
    150.times do |i|
      braked.event(:pause, memory: 195 * mb, busy: 2, now: now - 500 + (i * 3))
      braked.event(:resume, memory: 185 * mb, window: 1, retained: false, now: now - 499 + (i * 3))
    end
    braked.event(:pause, memory: 195 * mb, busy: 2, now: now - 30)
    SidekiqRust::Report.publish("web-1:101:aaa", [
      { class: "LeakJob", jobs: 240, retained_per_job: 3 * mb, growth_per_job: 3 * mb, allocated_per_job: 4 * mb,
        retained_error: 80_000, windows: 52 },
      { class: "WorkingSetJob", jobs: 120, retained_per_job: 0, growth_per_job: 150 * mb,
        allocated_per_job: 150 * mb, retained_error: 10_000, windows: 40 }
    ], ttl: 600)
  end

  # What the processes' page shows of a process: its full chart's limits and restarts, and its text.
  DETAIL = <<~JS
    return { scrollWidth: document.documentElement.scrollWidth, innerWidth: window.innerWidth,
             soft: document.querySelectorAll("svg.sr-chart line.sr-limit-soft").length,
             hard: document.querySelectorAll("svg.sr-chart line.sr-limit-hard").length,
             restarts: document.querySelectorAll("svg.sr-chart g.sr-marker-restart").length,
             text: document.querySelector(".sr-memory-tab").innerText };
  JS

  EVENT_TYPES = <<~JS
    return Array.from(document.querySelectorAll("tr.sr-event td:nth-child(3)")).map(function (td) {
      return td.textContent;
    });
  JS

  LAYOUT = <<~JS
    var summary = document.querySelector(".sr-summary").getBoundingClientRect();
    return {
      scrollWidth: document.documentElement.scrollWidth,
      innerWidth: window.innerWidth,
      innerHeight: window.innerHeight,
      summaryBottom: summary.bottom + window.scrollY,
      // The fold: the window's bottom, or the top of a bar fixed to it (Sidekiq's footer).
      fold: Array.from(document.querySelectorAll("body *")).filter(function (el) {
        var style = window.getComputedStyle(el);
        return (style.position === "fixed" || style.position === "sticky") &&
               el.getBoundingClientRect().top > window.innerHeight / 2;
      }).reduce(function (fold, el) { return Math.min(fold, el.getBoundingClientRect().top); }, window.innerHeight),
      overflowing: Array.from(document.querySelectorAll(".sr-memory-tab *")).filter(function (el) {
        return el.getBoundingClientRect().right > window.innerWidth + 0.5 && !el.closest(".sr-scroll");
      }).map(function (el) { return el.tagName + "." + el.className; }).slice(0, 5),
      cards: Array.from(document.querySelectorAll(".sr-card")).map(function (card) {
        var soft = card.querySelector("line.sr-limit-soft");
        var svg = card.querySelector("svg");
        return { identity: card.getAttribute("data-identity"), text: card.innerText,
                 softY: soft ? soft.getAttribute("y1") : null, viewBox: svg.getAttribute("viewBox"),
                 host: card.parentElement.previousElementSibling.textContent.trim().split(/\\s/)[0],
                 over: card.querySelectorAll("rect.sr-over").length,
                 restarts: card.querySelectorAll("g.sr-marker-restart").length,
                 height: svg.getBoundingClientRect().height };
      })
    };
  JS

  def visit(browser, path)
    browser.visit("#{@web.url}/sidekiq/memory#{path}")
    browser.execute(LAYOUT)
  end

  it "puts the fleet's summary on the first screen at 1,400 px, without scrolling sideways" do
    fleet
    browser = Browser.new(width: 1400, height: 900)
    begin
      layout = visit(browser, "")
      expect(layout["innerWidth"]).to eq(1400)
      expect(layout["scrollWidth"]).to be <= layout["innerWidth"], layout["overflowing"].inspect
      expect(layout["overflowing"]).to eq([])
      expect(layout["summaryBottom"]).to be <= layout["fold"]
      browser.screenshot(File.join(tmp, "memory-tab-1400.png"))
      %w[sr-grid sr-events].each do |part|
        browser.execute("document.querySelector('.#{part}').scrollIntoView()")
        browser.screenshot(File.join(tmp, "memory-tab-1400-#{part.delete_prefix('sr-')}.png"))
      end
      # The README's picture: the summary and every small chart.
      browser.resize(1400, 1500)
      browser.execute("window.scrollTo(0, 0)")
      expect(browser.execute("return document.documentElement.scrollWidth")).to be <= 1400
      browser.screenshot(File.join(tmp, "memory-tab-1400-tall.png"))
      # The small charts on one scale: the same page, no sideways scroll either.
      shared = visit(browser, "?scale=shared")
      expect(shared["scrollWidth"]).to be <= shared["innerWidth"], shared["overflowing"].inspect
      browser.screenshot(File.join(tmp, "memory-tab-1400-shared.png"))
      visit(browser, "")
      browser.resize(1400, 1500)
      browser.execute("window.scrollTo(0, 0)")

      summary = browser.execute("return document.querySelector('.sr-summary').innerText")
      # 11 live: 1 paused by the brake, 1 restarting (over its limit too), 9 serving; 2 gone.
      expect(summary).to match(/\b9\s+serving/)
      expect(summary).to match(/\b1\s+paused by the brake/)
      expect(summary).to match(/\b2\s+over max_rss/)
      expect(summary).to match(/web-1:101 340% since \d\d:\d\d:\d\d UTC/)
      expect(summary).to match(/ip-10-0-12-34:201 120% since \d\d:\d\d:\d\d UTC/)
      expect(summary).to match(/\b1\s+restarting/)
      expect(summary).to match(/\b2\s+gone/)
      expect(summary).to include("LeakJob", "3.0MB")
      expect(summary).not_to include("WorkingSetJob") # retains nothing
      expect(summary).to include("2 restarts (max_rss 2)", "0 OOM kills", "151 brake pauses", "40 reclaims")

      cards = layout["cards"]
      expect(cards.size).to eq(13)
      # One time axis and the limit line at one height in every small chart.
      expect(cards.map { |c| c["viewBox"] }.uniq.size).to eq(1)
      expect(cards.map { |c| c["softY"] }.uniq.size).to eq(1)
      # Grouped by host, the hosts in the order of their worst process; in each, the worst share first, the gone last.
      expect(cards.map { |c| c["host"] }.chunk_while { |a, b| a == b }.map(&:first)).to eq(["web-1", host, "worker-3"])
      expect(cards.select { |c| c["host"] == "web-1" }.map { |c| c["identity"] })
        .to eq(%w[web-1:101:aaa web-1:103:ccc web-1:102:bbb web-1:100:zzz])
      leak = cards.first
      expect(leak["identity"]).to eq("web-1:101:aaa")
      expect(leak["over"]).to eq(1)
      expect(leak["text"]).to include("680MB", "340%", "over since")
      gone = cards.find { |c| c["identity"] == "#{host}:202:eee" }
      expect(gone["text"]).to match(/gone \d+m \d\ds ago/)
      expect(gone["text"]).to include("restarted (max_rss)")
      expect(gone["text"]).not_to include("waiting_slot")
      expect(gone["restarts"]).to eq(1)
      expect(cards.find { |c| c["identity"] == "#{host}:203:fff" }["text"]).to include("40 reclaims, 1,200 MB in all")
      expect(cards.find { |c| c["identity"] == "#{host}:201:ddd" }["text"]).to include("waiting_slot")

      # The events: 301 brake rows, newer than the restarts, do not push them out.
      events = browser.execute(EVENT_TYPES)
      expect(events.count("restart")).to eq(2)
      expect(events.count("reclaim")).to eq(SidekiqRust::Web::Page::EVENTS_PER_KIND)
      layout = visit(browser, "?events=restart")
      expect(layout["scrollWidth"]).to be <= layout["innerWidth"]
      expect(browser.execute(EVENT_TYPES)).to eq(%w[restart restart])

      # A process's page: its full chart with both limits, since when it is over, its events.
      browser.visit("#{@web.url}/sidekiq/memory?process=#{CGI.escape('web-1:101:aaa')}")
      detail = browser.execute(DETAIL)
      expect(detail["scrollWidth"]).to be <= detail["innerWidth"]
      expect(detail.values_at("soft", "hard", "restarts")).to eq([1, 1, 0])
      expect(detail["text"]).to match(/Over max_rss\s+since \d\d:\d\d:\d\d UTC/)
      browser.screenshot(File.join(tmp, "memory-tab-1400-process.png"))
      browser.visit("#{@web.url}/sidekiq/memory?process=#{CGI.escape("#{host}:202:eee")}")
      detail = browser.execute(DETAIL)
      expect(detail["restarts"]).to eq(1)
      expect(detail["text"]).to include("restarted (max_rss)")
      expect(detail["text"]).to match(/restart\s+max_rss: 260MB \(max_rss 200MB\)/)
    ensure
      browser.quit
    end
  end

  it "keeps the summary on the first screen with 60 processes on 5 hosts, many of them in trouble, 50 a page" do
    now = Time.now.to_f
    hosts = (1..5).map { |i| "ip-10-0-#{i}-#{i * 7}.eu-west-1.compute.internal" }
    60.times do |i|
      host = hosts[i % 5]
      history = SidekiqRust::History.new(settings, identity: "#{host}:#{1000 + i}:#{format('%012x', i * 7919)}",
                                                   adapter: host_adapter.new(host))
      memory = (i < 10 ? 250 + (i * 10) : 60 + (i * 2)) * mb # 10 over max_rss (200 MB)
      phase = i.between?(10, 15) ? :waiting_slot : :serving # 6 restarting
      brake = i.between?(16, 21) ? { paused: true, seconds: 5.0 } : nil # 6 paused
      ago = i >= 54 ? 120 : 0 # 6 gone
      [300, 200, 100].each { |back| history.record(memory * 0.8, :serving, now: now - ago - back) }
      history.record(memory, phase, brake: brake, now: now - ago)
      own_pid(history.identity)
    end
    browser = Browser.new(width: 1400, height: 900)
    begin
      layout = visit(browser, "")
      expect(layout["scrollWidth"]).to be <= layout["innerWidth"], layout["overflowing"].inspect
      expect(layout["summaryBottom"]).to be <= layout["fold"]
      expect(layout["cards"].size).to eq(50)
      summary = browser.execute("return document.querySelector('.sr-summary').innerText")
      expect(summary).to match(/\b10\s+over max_rss/)
      expect(summary).to include("and 6 more") # 4 named
      expect(summary).to match(/\b6\s+restarting/)
      expect(summary).to match(/\b6\s+paused by the brake/)
      expect(summary).to match(/\b6\s+gone/)
      expect(summary).to match(/\b42\s+serving/) # 54 live, less 6 restarting and 6 paused
      browser.screenshot(File.join(tmp, "memory-tab-1400-60.png"))
      layout = visit(browser, "?page=2")
      expect(layout["cards"].size).to eq(10)
      expect(layout["scrollWidth"]).to be <= layout["innerWidth"]
    ensure
      browser.quit
    end
  end

  it "is readable at a 390 px phone width, without scrolling sideways" do
    fleet
    browser = Browser.new(width: 390, height: 844)
    begin
      layout = visit(browser, "")
      expect(layout["innerWidth"]).to eq(390)
      expect(layout["scrollWidth"]).to be <= layout["innerWidth"], layout["overflowing"].inspect
      expect(layout["overflowing"]).to eq([])
      expect(layout["cards"].size).to eq(13)
      expect(layout["cards"].map { |c| c["height"] }.min).to be >= 50 # the small charts keep their height
      # The tab's own first screen (Sidekiq's summary bar fills the phone's first one).
      browser.execute("document.querySelector('.sr-memory-tab').scrollIntoView()")
      browser.screenshot(File.join(tmp, "memory-tab-390.png"))
      %w[sr-grid sr-events sr-classes].each do |part|
        browser.execute("document.querySelector('.#{part}').scrollIntoView()")
        browser.screenshot(File.join(tmp, "memory-tab-390-#{part.delete_prefix('sr-')}.png"))
      end
      browser.visit("#{@web.url}/sidekiq/memory?process=#{CGI.escape('web-1:101:aaa')}")
      detail = browser.execute(DETAIL)
      expect(detail["scrollWidth"]).to be <= detail["innerWidth"]
      expect(detail["soft"]).to eq(1)
      browser.screenshot(File.join(tmp, "memory-tab-390-process.png"))
    ensure
      browser.quit
    end
  end
end
