# frozen_string_literal: true

require "spec_helper"
require "logger"

RSpec.describe SidekiqRust::Configuration do
  let(:mb) { 1024 * 1024 }
  let(:cgroup) { { usage: 100 * mb, limit: 2048 * mb, version: 2 } }

  def resolve(cgroup: self.cgroup, **values)
    config = described_class.new
    config.max_rss = 500
    values.each { |key, value| config.public_send("#{key}=", value) }
    config.resolve(cgroup: cgroup)
  end

  def expect_rejected(key, value, form, **extra)
    expect { resolve(key => value, **extra) }.to raise_error(SidekiqRust::ConfigurationError) do |e|
      expect(e.message).to include(key.to_s).and include(value.inspect).and include(form)
    end
  end

  describe "defaults" do
    it "has sensible ones" do
      s = resolve
      expect(s.to_h).to include(max_rss: 500 * mb, hard_max_rss: 750 * mb, metric: :rss, grace_time: 60.0,
                                check_interval: 5.0, reclaim: true, reclaim_cooldown: 300.0, shutdown_wait: 60.0,
                                kill_after: nil, max_concurrent_restarts: 1, require_other_process: true,
                                dry_run: false, on_restart: nil, logger: nil, doctor_on_boot: false,
                                measure_interval: 60.0, loop_window: 600.0, quarantine_after: 2)
      expect(s).to be_frozen
    end
  end

  describe "sizes (max_rss, hard_max_rss)" do
    it "reads an Integer as MB, and units" do
      expect(resolve(max_rss: 800).max_rss).to eq(800 * mb)
      expect(resolve(max_rss: "800MB").max_rss).to eq(800 * mb)
      expect(resolve(max_rss: "1.5GB").max_rss).to eq(1536 * mb)
      expect(resolve(max_rss: "1.5 GiB").max_rss).to eq(1536 * mb)
      expect(resolve(max_rss: "2g").max_rss).to eq(2048 * mb)
      expect(resolve(max_rss: "512000KB").max_rss).to eq(500 * mb)
      expect(resolve(max_rss: "800").max_rss).to eq(800 * mb)
      expect(resolve(max_rss: 300.0).max_rss).to eq(300 * mb)
      expect(resolve(max_rss: 1.5).max_rss).to eq((1.5 * mb).to_i)
    end

    it "reads a percentage of the cgroup limit" do
      expect(resolve(max_rss: "80%").max_rss).to eq((2048 * mb * 0.8).to_i)
      expect(resolve(max_rss: "50%", hard_max_rss: "90%").hard_max_rss).to eq((2048 * mb * 0.9).to_i)
    end

    it "gives a hard limit by default (:auto): 1.5 x max_rss, at most 90% of the cgroup's limit" do
      expect(resolve(max_rss: 500, cgroup: nil).hard_max_rss).to eq(750 * mb)
      expect(resolve(max_rss: 1500).hard_max_rss).to eq((2048 * mb * 0.9).to_i) # capped: a share, followed
      expect(resolve(max_rss: 1500).hard_max_rss_share).to eq(0.9)
      expect(resolve(max_rss: "80%").to_h).to include(hard_max_rss: (2048 * mb * 0.9).to_i, hard_max_rss_share: 0.9)
      expect(resolve(max_rss: "50%").to_h).to include(hard_max_rss: (2048 * mb * 0.75).to_i, hard_max_rss_share: 0.75)
      # Nothing left above max_rss under the cap: no hard limit.
      expect(resolve(max_rss: "95%").hard_max_rss).to be_nil
      expect(resolve(max_rss: 1900).hard_max_rss).to be_nil
      # What ENV gives, and none.
      expect(resolve(max_rss: 500, hard_max_rss: "auto").hard_max_rss).to eq(750 * mb)
      expect(resolve(max_rss: 500, hard_max_rss: "none").hard_max_rss).to be_nil
      expect(resolve(max_rss: 500, hard_max_rss: nil).hard_max_rss).to be_nil
      expect_rejected(:hard_max_rss, "lots", ':auto (1.5 x max_rss, at most 90% of the cgroup limit); or nil / "none"')
      expect_rejected(:hard_max_rss, :big, ":auto")
    end

    it "keeps a percentage's share and the limit it was resolved against, for the guard to follow the limit" do
      s = resolve(max_rss: "50%", hard_max_rss: "1800MB")
      expect(s.to_h).to include(max_rss_share: 0.5, hard_max_rss_share: nil, cgroup_limit: 2048 * mb)
      s = resolve(max_rss: "500MB", hard_max_rss: "90%")
      expect(s.to_h).to include(max_rss_share: nil, hard_max_rss_share: 0.9, cgroup_limit: 2048 * mb)
      expect(resolve(max_rss: 500).to_h).to include(max_rss_share: nil, hard_max_rss_share: nil, cgroup_limit: nil)
    end

    it "rejects a percentage without a cgroup limit" do
      expect_rejected(:max_rss, "80%", "this process has none", cgroup: nil)
      expect_rejected(:max_rss, "80%", "this process has none", cgroup: { usage: 1, limit: nil, version: 2 })
    end

    it "rejects what is not a size" do
      ["lots", "", "-5MB", "150%", "0%", "1.5XB", "300 megs", 0, -1, 0.0, Float::INFINITY, :big].each do |bad|
        expect_rejected(:max_rss, bad, "expected")
      end
      expect_rejected(:max_rss, nil, "it is required")
    end

    it "rejects a hard limit not above the soft one" do
      expect_rejected(:hard_max_rss, 400, "a limit above max_rss (500MB)")
      expect_rejected(:hard_max_rss, "500MB", "a limit above max_rss")
      expect_rejected(:hard_max_rss, "huge", '"1.5GB"')
      expect(resolve(hard_max_rss: "1GB").hard_max_rss).to eq(1024 * mb)
    end
  end

  describe "durations" do
    it "accepts seconds and rejects the rest" do
      expect(resolve(grace_time: 0).grace_time).to eq(0.0)
      expect(resolve(kill_after: 40).kill_after).to eq(40.0)
      expect_rejected(:grace_time, -1, "a number of seconds >= 0")
      expect(resolve(grace_time: "5").grace_time).to eq(5.0) # from ENV
      expect(resolve(shutdown_wait: "1.5", kill_after: 40.5).shutdown_wait).to eq(1.5)
      expect_rejected(:grace_time, "soon", "a number of seconds >= 0")
      expect_rejected(:grace_time, "-5", "a number of seconds >= 0")
      expect_rejected(:check_interval, 0, "a number of seconds > 0")
      expect_rejected(:reclaim_cooldown, nil, "a number of seconds >= 0")
      expect_rejected(:shutdown_wait, "1m", "a number of seconds >= 0")
      expect_rejected(:kill_after, 0, "a number of seconds > 0")
      expect(resolve(measure_interval: nil).measure_interval).to be_nil
      expect_rejected(:measure_interval, 0, "a number of seconds > 0")
    end
  end

  describe "the other keys" do
    it "validates metric" do
      expect(resolve(metric: :pss).metric).to eq(:pss)
      expect(resolve(metric: "cgroup").metric).to eq(:cgroup)
      expect_rejected(:metric, :vms, "one of :rss, :pss, :cgroup")
      expect_rejected(:metric, :cgroup, "needs a memory cgroup", cgroup: nil)
    end

    it "validates booleans" do
      expect(resolve(reclaim: "false").reclaim).to be(false) # from ENV
      %i[reclaim require_other_process dry_run doctor_on_boot].each do |key|
        expect_rejected(key, "yes", "true or false")
        expect_rejected(key, nil, "true or false")
      end
      expect(resolve(dry_run: true).dry_run).to be(true)
    end

    it "validates max_concurrent_restarts" do
      expect(resolve(max_concurrent_restarts: 3).max_concurrent_restarts).to eq(3)
      expect(resolve(max_concurrent_restarts: "2").max_concurrent_restarts).to eq(2)
      expect(resolve(max_concurrent_restarts: 2.0).max_concurrent_restarts).to eq(2)
      expect_rejected(:max_concurrent_restarts, 0, "an Integer >= 1")
      expect_rejected(:max_concurrent_restarts, 1.5, "an Integer >= 1")
    end

    it "validates quarantine_after (0: off)" do
      expect(resolve(quarantine_after: 3).quarantine_after).to eq(3)
      expect(resolve(quarantine_after: "0").quarantine_after).to eq(0)
      expect_rejected(:quarantine_after, -1, "an Integer >= 0 (0: off)")
      expect_rejected(:quarantine_after, "twice", "an Integer >= 0 (0: off)")
      expect_rejected(:quarantine_after, 1.5, "an Integer >= 0 (0: off)")
    end

    it "validates the brake: on by default, brake_at and resume_at shares of max_rss, resume below brake" do
      s = resolve
      expect([s.brake, s.brake_at, s.resume_at]).to eq([true, 0.9, 0.8])
      expect([s.brake_bytes, s.resume_bytes]).to eq([450 * mb, 400 * mb])
      expect(resolve(brake: "false", brake_at: "0.95", resume_at: 0.6).to_h).to include(brake: false, brake_at: 0.95,
                                                                                          resume_at: 0.6)
      expect_rejected(:brake, "sometimes", "true or false")
      expect_rejected(:brake_at, 1.2, "a share of max_rss above 0.5 and at most 1.0, like 0.9")
      expect_rejected(:brake_at, "90%", "a share of max_rss above 0.5 and at most 1.0, like 0.9")
      expect_rejected(:resume_at, 0.2, "a share of max_rss above 0.3 and below brake_at (0.9), like 0.8")
      expect_rejected(:resume_at, 0.9, "a share of max_rss below brake_at (0.9), like 0.8")
      expect([s.brake_pressure, resolve(brake_pressure: nil).brake_pressure]).to eq([20.0, nil])
      expect_rejected(:brake_pressure, 0, "a percentage of memory pressure above 0 and at most 100")
    end

    it "takes admission off by default, and on only with the brake" do
      expect(resolve.admission).to be(false)
      expect(resolve(admission: "true").admission).to be(true)
      expect_rejected(:admission, "maybe", "true or false")
      expect { resolve(admission: true, brake: false) }
        .to raise_error(SidekiqRust::ConfigurationError,
                        /admission is true; expected false while brake is false .*set brake = true, or admission = false/)
    end

    it "validates on_restart and logger" do
      callback = ->(event) { event }
      expect(resolve(on_restart: callback).on_restart).to be(callback)
      expect_rejected(:on_restart, "notify", "responds to call")
      logger = Logger.new(File::NULL)
      expect(resolve(logger: logger).logger).to be(logger)
      expect_rejected(:logger, $stdout, "Logger-like")
    end

    it "raises NoMethodError for an unknown key" do
      expect { described_class.new.max_memory = 5 }.to raise_error(NoMethodError)
    end
  end

  describe "#check: the form only, wherever configure runs" do
    def check(**values)
      config = described_class.new
      values.each { |key, value| config.public_send("#{key}=", value) }
      config.check
    end

    it "accepts what only the environment can settle, and rejects bad forms" do
      expect { check(max_rss: "80%", hard_max_rss: "90%", metric: :cgroup) }.not_to raise_error
      expect { check(max_rss: nil) }.not_to raise_error # ENV["SIDEKIQ_MAX_RSS"] unset on a laptop
      expect { check(max_rss: "300 megs") }.to raise_error(SidekiqRust::ConfigurationError, /max_rss is "300 megs"/)
      expect { check(max_rss: 500, hard_max_rss: 400) }.to raise_error(SidekiqRust::ConfigurationError, /above max_rss/)
      expect { check(max_rss: "80%", grace_time: "soon") }.to raise_error(SidekiqRust::ConfigurationError, /grace_time/)
      expect { check(metric: :vms) }.to raise_error(SidekiqRust::ConfigurationError, /metric/)
    end
  end

  describe "SidekiqRust.configure in a client-only process" do
    after { SidekiqRust.reset_configuration }

    it "adds up the blocks, as Sidekiq.configure_server does" do
      SidekiqRust.configure { |c| c.max_rss = "1GB" }
      SidekiqRust.configure { |c| c.grace_time = "5" }
      expect(SidekiqRust.settings.to_h).to include(max_rss: 1024 * mb, grace_time: 5.0)
      # A block that fails changes nothing.
      expect { SidekiqRust.configure { |c| c.max_rss = "lots" } }.to raise_error(SidekiqRust::ConfigurationError)
      expect(SidekiqRust.settings.max_rss).to eq(1024 * mb)
    end

    it "leaves what depends on the environment to the Sidekiq server's start" do
      expect { SidekiqRust.configure { |c| c.max_rss = ENV.fetch("SIDEKIQ_RUST_UNSET_FOR_SPEC", nil) } }
        .not_to raise_error
      expect { SidekiqRust.settings }.to raise_error(SidekiqRust::ConfigurationError, /max_rss is nil.*required/)
    end

    it "validates at once and registers nothing outside a Sidekiq server" do
      expect { SidekiqRust.configure { |c| c.max_rss = "nope" } }
        .to raise_error(SidekiqRust::ConfigurationError, /max_rss is "nope"/)
      SidekiqRust.configure { |c| c.max_rss = "1GB" }
      expect(SidekiqRust.settings.max_rss).to eq(1024 * mb)
      expect(Sidekiq.server?).to be_falsey
      chain = Sidekiq::VERSION.to_i >= 7 ? Sidekiq.default_configuration.server_middleware : Sidekiq.server_middleware
      expect(chain.exists?(SidekiqRust::Middleware)).to be(false)
      expect(SidekiqRust.guard).to be_nil
      expect(SidekiqRust.report).to eq([])
    end
  end
end
