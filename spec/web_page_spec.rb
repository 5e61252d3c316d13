# frozen_string_literal: true

require "spec_helper"
require "rack/mock"

# The Memory tab with many processes: paged, 10 a page, the most recently seen first (real redis-server, the Rack
# app of the Web UI specs).
RSpec.describe "the Memory tab with many processes (Sidekiq #{Sidekiq::VERSION})" do
  include E2E

  let(:settings) { guard_settings(check_interval: 5) }

  it "pages through 25 processes, 10 at a time, newest first" do
    now = Time.now.to_f
    25.times do |i|
      SidekiqRust::History.new(settings, identity: format("worker-%02d:1", i)).record((i + 1) * 1_048_576, :serving,
                                                                                     now: now - 25 + i)
    end
    app = Rack::MockRequest.new(WebServer.app)
    pages = (1..3).map { |n| app.get("/sidekiq/memory?page=#{n}") }
    expect(pages.map(&:status)).to eq([200, 200, 200])
    shown = pages.map { |page| page.body.scan(/data-identity="(worker-\d+):1"/).flatten }
    expect(shown.map(&:size)).to eq([10, 10, 5])
    expect(shown.flatten).to eq((0..24).map { |i| format("worker-%02d", 24 - i) })
    expect(pages[0].body).to include("page 1 of 3", "memory?page=2")
    expect(pages[2].body).to include("page 3 of 3", "memory?page=2")
    expect(pages[2].body).not_to include("memory?page=4")
    expect(pages[0].body.scan("<svg class=\"sr-chart\"").size).to eq(10)
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
