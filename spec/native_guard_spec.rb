# frozen_string_literal: true

require "spec_helper"

# The boundary of the native guard: one settings Hash, checked in Rust; actions as Symbols of one table.
RSpec.describe SidekiqRust::Native::Guard do
  let(:mb) { 1024 * 1024 }
  let(:base) { { max_rss: 10_000 * mb, kill_after: 40.0 } }

  it "takes one settings Hash and rejects an unknown key by name, listing the known ones" do
    expect { described_class.new(base.merge(max_rs: 1)) }.to raise_error(SidekiqRust::ConfigurationError) do |e|
      expect(e.message).to include('no setting "max_rs"').and include("known: max_rss, hard_max_rss")
    end
  end

  it "rejects a value of the wrong kind, naming the key and its form" do
    expect { described_class.new(base.merge(reclaim: "yes")) }
      .to raise_error(SidekiqRust::ConfigurationError, /reclaim is Name\("yes"\); expected true or false/)
    expect { described_class.new(base.merge(metric: :vms)) }
      .to raise_error(SidekiqRust::ConfigurationError, /expected :rss, :pss or :cgroup/)
    expect { described_class.new(base.merge(brake_at: 9000 * mb, resume_at: 9500 * mb, concurrency: 5)) }
      .to raise_error(SidekiqRust::ConfigurationError, /resume_at .* expected bytes below brake_at/)
    expect { described_class.new(max_rss: 1) }.to raise_error(SidekiqRust::ConfigurationError, /kill_after/)
  end

  it "names its actions from one table, and reports a reclaim as one call" do
    expect(described_class.actions).to include(:reclaim_soft, :reclaim_brake, :restart_hard, :quiet, :quarantine,
                                               :stop_idle, :kill, :pause, :resume, :resume_retained, :widen,
                                               :warn_loop)
    guard = described_class.new(base.merge(brake_at: 9000 * mb, resume_at: 8000 * mb, concurrency: 5))
    expect(guard.window).to eq(5)
    expect(guard.paused?).to be(false)
    reclaim = guard.reclaim(false)
    expect(reclaim.keys).to eq(%i[action before after purged measured purge_error])
    expect(reclaim[:action]).to be_nil
    expect(reclaim.values_at(:before, :after)).to all(be > 0)
    expect(reclaim[:purged]).to be(true).or be(false)
    expect(reclaim[:measured]).to be(true).or be(false)
    expect(guard.phase).to eq("serving")
  end

  it "takes a denial reason as a Symbol of its table only" do
    guard = described_class.new(base)
    expect { guard.slot_denied(:because) }
      .to raise_error(SidekiqRust::InvalidArgument, /unknown denial reason :because \(one of :dry_run, :embedded/)
  end

  it "pauses the brake on memory pressure at brake_pressure, whatever the memory figure" do
    guard = described_class.new(base.merge(brake_at: 9000 * mb, resume_at: 8000 * mb, concurrency: 5,
                                           brake_pressure: 20))
    guard.pressure = 12.5
    expect(guard.sample(false)).to match(action: nil, memory: be > 0)
    guard.pressure = 31.0
    expect(guard.pressured?).to be(true)
    expect(guard.sample(false)[:action]).to eq(:pause)
    expect(guard.window).to eq(0)
    guard.pressure = nil
    expect(guard.pressure).to eq(0.0)
  end
end
