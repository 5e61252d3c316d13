# frozen_string_literal: true

require "spec_helper"
require "rack/mock"

# The Memory tab with many processes: paged, 50 a page, the worst share of max_rss first (real redis-server, the
# Rack app of the Web UI specs).
RSpec.describe "the Memory tab with many processes (Sidekiq #{Sidekiq::VERSION})" do
  include E2E

  let(:settings) { guard_settings(check_interval: 5) }
  let(:mb) { 1_048_576 }

  it "marks the brake letting go and a move of the limits on the charts, and lists the moves as their own kind" do
    now = Time.now.to_f
    history = SidekiqRust::History.new(settings, identity: "worker-1:1")
    history.record(150 * mb, :serving, now: now - 30)
    history.event(:resume, memory: 150 * mb, window: 5, retained: true, now: now - 20)
    history.event(:resume, memory: 100 * mb, window: 5, retained: false, now: now - 15)
    history.event(:limits, limit: 200 * mb, was_limit: 1000 * mb, max_rss: 40 * mb, hard_max_rss: 120 * mb,
                           brake_at: 36 * mb, resume_at: 32 * mb, now: now - 10)
    history.record(160 * mb, :serving, now: now - 1)
    app = Rack::MockRequest.new(WebServer.app)
    fleet = app.get("/sidekiq/memory").body
    expect(fleet.scan('class="sr-marker sr-marker-let-go"').size).to eq(1)
    detail = app.get("/sidekiq/memory?process=worker-1%3A1").body
    expect(detail.scan('class="sr-marker sr-marker-let-go"').size).to eq(1)
    expect(detail).to include('class="sr-marker sr-marker-limits"', "limits moved at ", "the cgroup's limit 200MB, max_rss 40MB")
    moved = app.get("/sidekiq/memory?events=limits").body
    # The apostrophe as each Sidekiq's escaping writes it (&#39; in 6 and 7, &#x27; in 8).
    expect(moved).to match(/the memory cgroup(&#39;|&#x27;)s limit is now 200MB \(was 1000MB\): max_rss 40MB, hard_max_rss 120MB/)
  end

  it "lists each class's working set and the jobs sent back to wait when admission runs in the fleet" do
    now = Time.now.to_f
    SidekiqRust::History.new(settings, identity: "worker-1:1").record(150 * mb, :serving, now: now - 2)
    row = { jobs: 12, retained_per_job: 0, retained_error: 0, windows: 5, growth_per_job: 0, allocated_per_job: nil }
    plain = Rack::MockRequest.new(WebServer.app)
    SidekiqRust::Report.publish("worker-1:1", [row.merge(class: "ImportJob")], ttl: 60, now: now)
    without = plain.get("/sidekiq/memory").body
    expect(without).to include("ImportJob")
    expect(without).not_to include("Working set")
    SidekiqRust::Report.publish("worker-2:1", [row.merge(class: "ImportJob", working_set: 130 * mb,
                                                                       deferred: 7)], ttl: 60, now: now)
    body = plain.get("/sidekiq/memory").body
    expect(body).to include("<th class=\"sr-number\">Working set</th>", "<th class=\"sr-number\">Deferred</th>")
    cells = body[%r{<td>ImportJob</td>.*?</tr>}m].scan(%r{<td class="sr-number">([^<]*)</td>}).flatten
    expect(cells.last(2)).to eq(["130.0MB", "7"])
  end

  it "scales each small chart to its own max_rss, or every chart of the page to one scale with ?scale=shared" do
    now = Time.now.to_f
    { "small:1" => 100, "big:1" => 400 }.each do |identity, limit|
      SidekiqRust::History.new(settings, identity: identity)
                          .record(limit / 2 * mb, :serving, limits: { max_rss: limit * mb, hard_max_rss: nil }, now: now - 2)
    end
    app = Rack::MockRequest.new(WebServer.app)
    limit_heights = ->(body) { body.scan(/sr-limit-soft" x1="0" y1="([\d.]+)"/).flatten.uniq }
    own = app.get("/sidekiq/memory").body
    expect(limit_heights.call(own).size).to eq(1) # the dashed max_rss line at one height in every chart
    expect(own).to include("memory?scale=shared")
    shared = app.get("/sidekiq/memory?scale=shared").body
    expect(limit_heights.call(shared).size).to eq(2)
    expect(shared).to include("y: one scale, 0 &ndash; 600MB")
  end

  it "pages through 120 processes, 50 at a time, the worst share of the limit first" do
    now = Time.now.to_f
    # The larger the memory, the older the reading: the order is by share of max_rss (200 MB), not by recency.
    120.times do |i|
      SidekiqRust::History.new(settings, identity: format("worker-%03d:1", i)).record((i + 1) * mb, :serving,
                                                                                      now: now - 3 - (i * 0.05))
    end
    app = Rack::MockRequest.new(WebServer.app)
    pages = (1..3).map { |n| app.get("/sidekiq/memory?page=#{n}") }
    expect(pages.map(&:status)).to eq([200, 200, 200])
    shown = pages.map { |page| page.body.scan(/<div class="sr-card[^"]*" data-identity="(worker-\d+):1"/).flatten }
    expect(shown.map(&:size)).to eq([50, 50, 20])
    expect(shown.flatten).to eq((0..119).map { |i| format("worker-%03d", 119 - i) })
    expect(pages[0].body).to include("page 1 of 3", "memory?page=2")
    expect(pages[2].body).to include("page 3 of 3", "memory?page=2")
    expect(pages[2].body).not_to include("memory?page=4")
    expect(pages[0].body.scan("<svg class=\"sr-small-chart\"").size).to eq(50)
    # The summary counts the whole fleet, not the page.
    expect(pages[2].body).to match(%r{<span class="sr-count">120</span> serving})
    # Each small chart links to its process's page, which has the full chart.
    expect(pages[0].body).to include("memory?process=worker-119%3A1")
    detail = app.get("/sidekiq/memory?process=worker-119%3A1")
    expect(detail.status).to eq(200)
    expect(detail.body.scan("<svg class=\"sr-chart\"").size).to eq(1)
    expect(detail.body).to include("120MB")
  end

  it "selects events per kind before it truncates: brake rows never push the restarts out" do
    now = Time.now.to_f
    restarted = SidekiqRust::History.new(settings, identity: "restarted:1")
    restarted.record(300 * mb, :waiting_slot, now: now - 100)
    restarted.event(:restart, reason: :max_rss, memory: 300 * mb, max_rss: 200 * mb, busy: 1, now: now - 99)
    braked = SidekiqRust::History.new(settings, identity: "braked:1")
    braked.record(190 * mb, :serving, brake: { paused: true, seconds: 1.0 }, now: now - 1)
    12.times do |i|
      braked.event(:reclaim, released: 512 * 1024, memory: 190 * mb, still_over: false, now: now - 90 + i)
    end
    200.times do |i|
      braked.event(i.even? ? :pause : :resume, memory: 190 * mb, busy: 2, window: 1, now: now - 60 + (i * 0.25))
    end
    app = Rack::MockRequest.new(WebServer.app)

    body = app.get("/sidekiq/memory").body
    types = body.scan(/<tr class="sr-event sr-event-(\w+)">/).flatten
    expect(types.count("restart")).to eq(1)
    expect(types.count("reclaim")).to eq(12)
    expect(types.count { |t| %w[pause resume].include?(t) }).to eq(SidekiqRust::Web::Page::EVENTS_PER_KIND)
    expect(body).to include("memory?events=restart", "restarts (1)", "brake (200)", "reclaims (12)")
    # The gone process shows how it ended, not the phase its last reading caught.
    expect(body).to include("restarted (max_rss) at")
    expect(body).not_to match(/<span class="sr-phase"[^>]*>waiting_slot/)
    # What the reclaimed total sums.
    expect(body).to include("12 reclaims, 6 MB in all")

    restarts = app.get("/sidekiq/memory?events=restart").body.scan(/<tr class="sr-event sr-event-(\w+)">/).flatten
    expect(restarts).to eq(%w[restart])
    brake = app.get("/sidekiq/memory?events=brake").body.scan(/<tr class="sr-event sr-event-(\w+)">/).flatten
    expect(brake.size).to eq(SidekiqRust::Web::Page::EVENTS_SHOWN)
    expect(brake.uniq.sort).to eq(%w[pause resume])
    # The tab's one-round-trip readers (Lua) read what History's own readers do.
    reader = SidekiqRust::Web::Reader
    expect(reader.events(adapter: SidekiqRust::SidekiqAdapter))
      .to eq(SidekiqRust::History.events(count: 5000))
    expect(reader.processes(now: now, adapter: SidekiqRust::SidekiqAdapter))
      .to eq(SidekiqRust::History.processes(now: now)).and(satisfy { |rows| rows.size == 2 })
    expect(reader.readings(%w[restarted:1 braked:1 unknown:1], adapter: SidekiqRust::SidekiqAdapter))
      .to eq("restarted:1" => SidekiqRust::History.readings("restarted:1"),
             "braked:1" => SidekiqRust::History.readings("braked:1"), "unknown:1" => [])
    # A process's page: its events only.
    own = app.get("/sidekiq/memory?process=restarted%3A1").body.scan(/<tr class="sr-event sr-event-(\w+)">/).flatten
    expect(own).to eq(%w[restart])
  end

  it "shades the spans the memory brake held fetching, and lists them in the timeline" do
    now = Time.now.to_f
    history = SidekiqRust::History.new(settings, identity: "braked:1")
    history.record(150 * 1_048_576, :serving, brake: { paused: false, seconds: 12.5 }, now: now - 60)
    history.event(:pause, memory: 190 * 1_048_576, busy: 3, now: now - 40)
    history.event(:resume, memory: 120 * 1_048_576, window: 1, retained: false, now: now - 28)
    history.event(:pause, memory: 185 * 1_048_576, busy: 2, now: now - 5)
    body = Rack::MockRequest.new(WebServer.app).get("/sidekiq/memory").body
    bands = body.scan(%r{<rect class="sr-paused"[^>]*><title>brake: fetching paused ([\d.]+)s from })
    expect(bands.size).to eq(2) # the second one still paused: to the chart's end
    expect(bands.first.first.to_f).to be_within(0.01).of(12.0)
    expect(body).to include("brake: fetching again with 1 thread(s) at 120MB")
    expect(body).to include("brake: fetching paused at 190MB, 3 job(s) running")
  end
end
