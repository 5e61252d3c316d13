# frozen_string_literal: true

require "spec_helper"

# The boundary of the native guard: one settings Hash, checked in Rust; actions as Symbols of one table.
RSpec.describe SidekiqRust::Native::Guard do
  let(:mb) { 1024 * 1024 }
  # Every key the native guard takes (it keeps no defaults), as the guard resolves the defaults; no brake
  # (concurrency unknown).
  let(:base) do
    {
      max_rss: 10_000 * mb, hard_max_rss: nil, grace_time: 60.0, metric: :rss, check_interval: 5.0, reclaim: true,
      reclaim_cooldown: 300.0, loop_window: 600.0, shutdown_wait: 60.0, require_other_process: true,
      dry_run: false, quarantine_after: 2, measure_interval: 60.0, brake: true, brake_at: 0.9, resume_at: 0.8,
      brake_pressure: nil, kill_after: 40.0, concurrency: nil, replaced_restart: false, embedded: false,
      embedded_instance: false, settle: 2.5, quiet_timeout: 15.0, max_rss_share: nil, hard_max_rss_share: nil,
      cgroup_limit: nil, admission: false
    }
  end

  it "admits a fetched job by its payload: a class not measured yet runs alone and measured, meanwhile others wait" do
    guard = described_class.new(base.merge(concurrency: 5, admission: true))
    first = guard.admit(JSON.generate("args" => [{ "class" => "Evil" }], "class" => "ImportJob", "jid" => "j1"))
    expect(first).to eq(decision: :probe, hold: nil, class: "ImportJob", need: nil, projected: first[:projected],
                             bound: first[:bound], say: nil)
    expect(guard.window).to eq(1)
    second = guard.admit(JSON.generate("class" => "Other", "jid" => "j2", "memory" => "lots"))
    expect(second).to include(decision: :hold, hold: :exclusive, say: { say: :bad_declared, value: "lots" })
    guard.job_finished(guard.job_started("ImportJob", "j1"))
    expect(guard.window).to eq(5)
    expect(guard.admission_classes.find { |r| r[:class] == "ImportJob" })
      .to include(samples: 1, declared: nil, deferred: 0, working_set: be >= 0)
    expect(guard.admission_classes.find { |r| r[:class] == "Other" }).to include(deferred: 1, working_set: nil)
    # A measured class that fits starts with nothing to tell: no answer built (most jobs).
    expect(guard.admit(JSON.generate("class" => "ImportJob", "jid" => "j3"))).to be_nil
    expect(guard.admit("not a job")).to be_nil
    expect(described_class.new(base.merge(concurrency: 5)).admit(JSON.generate("class" => "A"))).to be_nil
  end

  it "takes one settings Hash and rejects an unknown key by name, listing the known ones" do
    expect { described_class.new(base.merge(max_rs: 1)) }.to raise_error(SidekiqRust::ConfigurationError) do |e|
      expect(e.message).to include('no setting "max_rs"').and include("known: max_rss, hard_max_rss")
    end
  end

  it "takes exactly the keys the guard gives it: OPTIONS' native ones and the facts" do
    config = SidekiqRust::Configuration.new
    config.max_rss = 500
    given = SidekiqRust::Guard.native_settings(config.resolve(cgroup: nil), kill_after: 40.0)
    expect(given.keys).to match_array(base.keys)
    expect(described_class.new(given).brake?).to be(false)
    expect { described_class.new(base.except(:grace_time, :settle)) }
      .to raise_error(SidekiqRust::ConfigurationError, /lack grace_time, settle \(every key is required/)
  end

  it "answers the limits in force, which move with the cgroup's limit only where given as shares of it" do
    guard = described_class.new(base.merge(concurrency: 5))
    expect(guard.limits).to eq(max_rss: 10_000 * mb, hard_max_rss: nil, brake_at: 9000 * mb, resume_at: 8000 * mb)
    expect(guard.sample(false)).to include(moved: nil)
    expect(described_class.new(base).limits).to include(brake_at: nil, resume_at: nil)
    expect { described_class.new(base.merge(max_rss_share: 0.8)) }
      .to raise_error(SidekiqRust::ConfigurationError, /cgroup_limit is Nil; expected bytes/)
  end

  it "rejects a value of the wrong kind, naming the key and its form" do
    expect { described_class.new(base.merge(reclaim: "yes")) }
      .to raise_error(SidekiqRust::ConfigurationError, /reclaim is Name\("yes"\); expected true or false/)
    expect { described_class.new(base.merge(metric: :vms)) }
      .to raise_error(SidekiqRust::ConfigurationError, /expected :rss, :pss or :cgroup/)
    expect { described_class.new(base.merge(brake_at: 0.9, resume_at: 0.95, concurrency: 5)) }
      .to raise_error(SidekiqRust::ConfigurationError, /resume_at .* expected a share of max_rss .* below brake_at/)
    expect { described_class.new(base.merge(kill_after: nil)) }
      .to raise_error(SidekiqRust::ConfigurationError, /kill_after is Nil; expected seconds > 0/)
  end

  it "names its actions from one table, exactly those the executor carries out" do
    expect(described_class.actions).to match_array(SidekiqRust::Guard::Executor::HANDLED)
    expect { SidekiqRust::Guard::Executor.check_actions(described_class.actions - [:widen]) }
      .to raise_error(SidekiqRust::Error, /not in the native table: \[:widen\]/)
  end

  it "reports a reclaim as one call" do
    expect(described_class.actions).to include(:reclaim_soft, :reclaim_brake, :restart_hard, :restart_retained, :quiet,
                                               :quarantine, :stop_idle, :kill, :pause, :resume, :resume_idle,
                                               :resume_retained, :widen, :warn_loop)
    guard = described_class.new(base.merge(concurrency: 5))
    expect(guard.brake?).to be(true)
    expect(described_class.new(base).brake?).to be(false)
    expect(described_class.new(base.merge(concurrency: 5, brake: false)).brake?).to be(false)
    expect(guard.window).to eq(5)
    expect(guard.paused?).to be(false)
    reclaim = guard.reclaim(false)
    expect(reclaim.keys).to eq(%i[reason action verdict still_over before after purged purge_error measured])
    expect(reclaim.values_at(:reason, :verdict, :still_over)).to eq([nil, nil, false])
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
    guard = described_class.new(base.merge(concurrency: 5, brake_pressure: 20))
    guard.pressure = 12.5
    expect(guard.sample(false)).to match(action: nil, memory: be > 0, over: nil, moved: nil)
    guard.pressure = 31.0
    expect(guard.sample(false)[:action]).to eq(:pause)
    expect(guard.pressured?).to be(true)
    expect(guard.window).to eq(0)
    guard.pressure = nil
    expect(guard.pressure).to eq(0.0)
  end
end
