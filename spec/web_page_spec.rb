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
end
