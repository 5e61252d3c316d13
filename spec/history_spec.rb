# frozen_string_literal: true

require "spec_helper"

# SidekiqRust::History against a real redis-server: what the guard writes, what the Web UI and metrics read.
RSpec.describe SidekiqRust::History do
  include E2E

  # An hour of readings at check_interval 600 s: 7 entries.
  let(:settings) { guard_settings(hard_max_rss: 300, check_interval: 600) }
  let(:history) { described_class.new(settings, identity: "web-1:4242") }
  let(:t0) { 1_800_000_000.0 }

  it "keeps the last hour of readings, one per check_interval, newest last" do
    20.times { |i| history.record((100 + i) * 1_048_576, :normal, now: t0 + (i * 600)) }
    history.record(999 * 1_048_576, :normal, now: t0 + (19 * 600) + 10) # within the interval: not written

    readings = described_class.readings("web-1:4242")
    expect(readings.size).to eq(7)
    expect(readings.map(&:first)).to eq((13..19).map { |i| t0 + (i * 600) })
    expect(readings.last.last).to eq(119 * 1_048_576)
  end

  it "describes the process: limits, allocator, phase, counters by reason", allocator: true do
    history.record(150 * 1_048_576, :over_soft, now: Time.now.to_f)
    history.event(:reclaim, released: 40 * 1_048_576, memory: 110 * 1_048_576, still_over: false)
    history.event(:reclaim, released: 2 * 1_048_576, memory: 108 * 1_048_576, still_over: false)
    history.event(:restart, event: :restart, reason: "hard_max_rss", memory: 1, on_restart: -> {})
    history.event(:denial, denial: :sole_process,
                           message: "over the limit but not restarting: no other live Sidekiq process is serving")
    history.event(:denial, denial: :no_slot, message: "over the limit but not restarting: all 1 restart slot(s) are held")

    process = described_class.processes.first
    expect(process).to include(identity: "web-1:4242", pid: Process.pid, memory: 150 * 1_048_576, metric: "rss",
                               max_rss: 200 * 1_048_576, hard_max_rss: 300 * 1_048_576, allocator: SidekiqRust::Allocator.name,
                               phase: "over_soft", reclaimed_bytes: 42 * 1_048_576, gone: false,
                               restarts: { "hard_max_rss" => 1 }, denials: { "sole_process" => 1, "no_slot" => 1 })
    # Fragmentation against live memory, read in this process with the reading (under either allocator).
    expect(process[:live]).to be_between(1_048_576, SidekiqRust::Memory.rss)
    expect(process[:allocator_free]).to be >= 0
    expect(process[:heap_fragmentation]).to be_between(0.0, 1.0)
    events = described_class.events
    expect(events.map { |e| e[:type] }).to eq(%w[denial denial restart reclaim reclaim])
    expect(events[2][:data]).to include("reason" => "hard_max_rss")
    expect(events[2][:data]).not_to have_key("on_restart") # callables are left out
  end

  it "marks a process without a reading for three check intervals as gone" do
    history.record(1, :normal, now: Time.now.to_f - 1900)
    expect(described_class.processes.first[:gone]).to be(true)
  end

  it "marks a process whose shutdown began as gone at once, keeping its last phase" do
    history.record(1, :waiting_slot)
    expect(described_class.processes.first).to include(gone: false, phase: "waiting_slot")
    history.stopped
    expect(described_class.processes.first).to include(gone: true, phase: "waiting_slot")
  end

  it "caps the event stream" do
    1300.times { history.event(:reclaim, released: 1, memory: 1) }
    expect(redis_call("XLEN", described_class::EVENTS)).to be <= 1100 # MAXLEN ~ trims whole nodes of 100
  end

  it "gives every key it writes an expiry" do
    history.record(1, :normal)
    history.event(:denial, message: "dry run: would restart")
    keys = sidekiq_rust_keys
    expected = ["sidekiq_rust:history:web-1:4242", "sidekiq_rust:process:web-1:4242", "sidekiq_rust:processes",
                "sidekiq_rust:events"]
    # In a memory cgroup with an OOM-kill counter: the count its processes saw last (CgroupWatch).
    expected << start_with("sidekiq_rust:cgroup_oom:") if SidekiqRust::Memory.cgroup_oom&.fetch(:oom_kills)
    expect(keys).to contain_exactly(*expected)
    keys.each { |key| expect(redis_call("TTL", key)).to be > 0, "#{key} has no expiry" }
  end

  it "never raises when Redis is down, and says so once" do
    log = StringIO.new
    logged = guard_settings(check_interval: 0.01, logger: Logger.new(log))
    history = described_class.new(logged, identity: "web-3:1")
    redis_server.stop
    expect { 3.times { |i| history.record(1, :normal, now: i.to_f) } }.not_to raise_error
    expect { history.event(:reclaim, released: 1, memory: 1) }.not_to raise_error
    expect(log.string.scan("could not write the memory history").size).to eq(1)
  end
end
