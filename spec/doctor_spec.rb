# frozen_string_literal: true

require "spec_helper"
require "json"

RSpec.describe SidekiqRust::Doctor do
  include E2E

  let(:mb) { 1024 * 1024 }
  let(:exe) { File.expand_path("../exe/sidekiq_rust", __dir__) }

  def settings(**values)
    config = SidekiqRust::Configuration.new
    config.max_rss = 500
    values.each { |key, value| config.public_send("#{key}=", value) }
    config.resolve(cgroup: { usage: 0, limit: 4096 * mb })
  end

  # Runs exe/sidekiq_rust in a plain Ruby outside Bundler (as a user would, with the app's own gems).
  def sidekiq_rust(*args, env: {})
    Bundler.with_unbundled_env do
      Open3.capture3(env, RbConfig.ruby, exe, *args)
    end
  end

  describe "allocator" do
    it "warns about glibc without an arena limit, passes with one, and passes jemalloc" do
      glibc = ruby_output("require %q(json); puts SidekiqRust::Doctor.allocator(ENV).to_h.to_json", env: Allocators::GLIBC_ENV)
      expect(JSON.parse(glibc)).to include("status" => "warn", "todo" => a_string_including("MALLOC_ARENA_MAX=2"))
      limited = ruby_output("puts SidekiqRust::Doctor.allocator(ENV).status",
                            env: Allocators::GLIBC_ENV.merge("MALLOC_ARENA_MAX" => "2"))
      expect(limited.strip).to eq("pass")
      jemalloc = ruby_output("puts SidekiqRust::Doctor.allocator(ENV).saw", env: Allocators.jemalloc_env)
      expect(jemalloc).to match(/jemalloc 5\.\d+\.\d+.* \(preloaded\)/)
    end

    it "passes a jemalloc preloaded from any path, e.g. Rails 8.1's link /usr/local/lib/libjemalloc.so" do
      Dir.mktmpdir("sidekiq_rust-links") do |dir|
        link = File.join(dir, "libfastmalloc.so")
        File.symlink(Allocators.debian_jemalloc, link)
        out = ruby_output("require %q(json); puts SidekiqRust::Doctor.allocator(ENV).to_h.to_json",
                          env: { "LD_PRELOAD" => link })
        expect(JSON.parse(out)).to include("status" => "pass",
                                           "saw" => a_string_matching(/\Ajemalloc 5\.\S+ \(preloaded\)\z/))
      end
    end
  end

  describe "db pool, against a real ActiveRecord pool (sqlite3)" do
    let(:app) { File.expand_path("fixtures/doctor/ar_app.rb", __dir__) }

    it "fails when the pool is smaller than Sidekiq's concurrency, and explains" do
      out, err, status = sidekiq_rust("doctor", "--require", app, "--concurrency", "10", "--no-redis")
      expect(status.exitstatus).to eq(1), err
      expect(out).to match(/^FAIL db pool +ActiveRecord pool 5 < Sidekiq concurrency 10/)
      expect(out).to include("could not obtain a connection from the pool within 5.000 seconds")
      expect(out).to include("thread your jobs start themselves")
    end

    it "passes when the pool is large enough" do
      out, err, status = sidekiq_rust("doctor", "-r", app, "-c", "5", "--no-redis", "--json")
      expect(status.exitstatus).to eq(0), err + out
      pool = JSON.parse(out)["checks"].find { |c| c["name"] == "db pool" }
      expect(pool).to include("status" => "pass", "saw" => "ActiveRecord pool 5 >= Sidekiq concurrency 5")
    end

    it "skips it when ActiveRecord is not loaded" do
      expect(described_class.activerecord_pool(10).status).to eq(:skip)
    end
  end

  describe "limits against the cgroup limit" do
    let(:fixtures) { File.expand_path("fixtures/cgroup", __dir__) }
    let(:cgroup) do # 1 GiB limit, from a fixture layout
      dir = File.join(fixtures, "v2_limited")
      SidekiqRust::Memory.cgroup(root: File.join(dir, "sys_fs_cgroup"), proc_cgroup: File.join(dir, "proc_self_cgroup"))
    end

    it "passes limits below the container limit and fails the others" do
      expect(described_class.limits(settings(max_rss: "700MB", hard_max_rss: "900MB"), cgroup).status).to eq(:pass)
      check = described_class.limits(settings(max_rss: "700MB", hard_max_rss: "2GB"), cgroup)
      expect(check.status).to eq(:fail)
      expect(check.saw).to include("hard_max_rss not below the cgroup limit 1024MB")
      expect(check.todo).to include("OOM")
      expect(described_class.limits(settings(max_rss: "1GB"), cgroup).saw).to include("max_rss not below")
    end

    it "passes without a cgroup limit and warns without a guard" do
      expect(described_class.limits(settings, nil).status).to eq(:pass)
      expect(described_class.limits(nil, cgroup).status).to eq(:warn)
    end
  end

  describe "timeouts" do
    it "fails a kill_after that does not exceed Sidekiq's timeout" do
      check = described_class.timeouts(settings(kill_after: 20), 25.0, nil)
      expect(check.status).to eq(:fail)
      expect(check.todo).to include("kill_after (20.0s) must exceed Sidekiq's timeout (25.0s)")
    end

    it "fails a systemd TimeoutStopSec too close to Sidekiq's timeout, passes a consistent one" do
      expect(described_class.timeouts(settings, 25.0, 26).todo).to include("TimeoutStopSec (26s)")
      expect(described_class.timeouts(settings, 25.0, 40).status).to eq(:pass)
      expect(described_class.timeouts(nil, 25.0, nil).saw).to eq("Sidekiq timeout 25.0s")
    end
  end

  describe "redis, against a real redis-server" do
    it "passes noeviction, fails another policy, fails when unreachable" do
      expect(described_class.redis_check).to have_attributes(status: :pass, saw: a_string_matching(/round trip \d/))
      redis_server.command("CONFIG", "SET", "maxmemory-policy", "allkeys-lru")
      failed = described_class.redis_check
      expect(failed.status).to eq(:fail)
      expect(failed.saw).to include("allkeys-lru")
      expect(failed.todo).to include("noeviction")
      redis_server.stop
      expect(described_class.redis_check).to have_attributes(status: :fail, saw: a_string_including("unreachable"))
    ensure
      redis_server.start unless redis_server.running?
    end
  end

  describe "gc env" do
    it "reports the variables in effect without judging them" do
      check = described_class.gc_environment("RUBY_GC_HEAP_GROWTH_FACTOR" => "1.1", "HOME" => "/root")
      expect(check.status).to eq(:info)
      expect(check.saw).to eq("RUBY_GC_HEAP_GROWTH_FACTOR=1.1")
    end
  end

  describe "the command line" do
    it "prints help, and exits 2 on a usage error" do
      out, _err, status = sidekiq_rust("doctor", "--help")
      expect(status.exitstatus).to eq(0)
      expect(out).to include("Usage: sidekiq_rust doctor")
      _out, err, status = sidekiq_rust("doctor", "--concurrency", "many")
      expect(status.exitstatus).to eq(2)
      expect(err).to include("invalid argument: --concurrency many")
    end

    it "checks a real Redis given by URL and prints JSON" do
      out, err, status = sidekiq_rust("doctor", "--redis-url", "unix://#{redis_server.socket}", "--json",
                                      env: Allocators::GLIBC_ENV.merge("MALLOC_ARENA_MAX" => "2"))
      expect(status.exitstatus).to eq(0), err + out
      checks = JSON.parse(out)["checks"].to_h { |c| [c["name"], c["status"]] }
      expect(checks).to include("allocator" => "pass", "redis" => "pass", "gc env" => "info", "db pool" => "skip")
    end
  end
end
