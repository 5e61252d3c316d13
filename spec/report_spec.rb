# frozen_string_literal: true

require "spec_helper"
require "json"
require "stringio"
require "sidekiq_rust/cli"

# The fleet's per-class figures through a real redis-server: what processes publish, what readers merge.
RSpec.describe SidekiqRust::Report do
  include E2E

  let(:mb) { 1024 * 1024 }

  def row(klass, jobs, retained, growth, allocated, error: nil, windows: 0)
    { class: klass, jobs: jobs, retained_per_job: retained, growth_per_job: growth, allocated_per_job: allocated,
      retained_error: error, windows: windows }
  end

  it "publishes a process's rows under its identity with an expiry, bounded, and lists it in the index" do
    rows = Array.new(150) { |i| row("Job#{i}", 1, i, nil, nil) }
    described_class.publish("host:1", rows, ttl: 5)
    payload = JSON.parse(redis_call("GET", "sidekiq_rust:classes:host:1"))
    expect(payload).to include("identity" => "host:1")
    expect(payload["at"]).to be_within(5).of(Time.now.to_f)
    expect(payload["classes"].size).to eq(described_class::MAX_CLASSES)
    expect(payload["classes"].first).to eq("class" => "Job0", "jobs" => 1, "retained_per_job" => 0,
                                           "growth_per_job" => nil, "allocated_per_job" => nil,
                                           "retained_error" => nil, "windows" => 0)
    expect(redis_call("TTL", "sidekiq_rust:classes:host:1")).to be_between(1, described_class::KEEP)
    expect(redis_call("TTL", described_class::INDEX_KEY)).to be > 0
    expect(redis_call("ZRANGE", described_class::INDEX_KEY, 0, -1)).to eq(["host:1"])
  end

  it "merges the fleet: jobs added up, figures weighted by jobs where known, ranked by retained (unknown last)" do
    described_class.publish("a:1", [row("LeakJob", 30, 6 * mb, 6 * mb, nil, error: 300_000, windows: 50),
                                    row("PingJob", 100, 0, 0, nil)], ttl: 60)
    described_class.publish("b:2", [row("LeakJob", 10, 2 * mb, nil, 1000, error: 400_000, windows: 20),
                                    row("NewJob", 1, nil, nil, nil),
                                     row("ChurnJob", 5, 0, 200 * mb, nil)], ttl: 60)
    # A process whose figures expired long ago drops out of the index.
    described_class.publish("gone:3", [row("OldJob", 1, 99 * mb, 0, 0)], ttl: 60, now: Time.now.to_f - 7200)

    rows = described_class.fleet
    expect(rows.map { |r| r[:class] }).to eq(%w[LeakJob ChurnJob PingJob NewJob])
    # The standard error of the jobs-weighted mean: sqrt((30 * 300k)^2 + (10 * 400k)^2) / 40.
    expect(rows.first).to eq(row("LeakJob", 40, 5 * mb, 6 * mb, 1000, error: 246_221, windows: 70))
    expect(described_class.fleet(limit: 1).size).to eq(1)
    expect(redis_call("ZRANGE", described_class::INDEX_KEY, 0, -1)).to contain_exactly("a:1", "b:2")
  end

  it "keeps a process's figures for an hour after its last publication: a restarted process's jobs still count" do
    described_class.publish("old:1", [row("LeakJob", 240, 3 * mb, nil, nil, error: 100_000, windows: 30)], ttl: 15,
                                                                                       now: Time.now.to_f - 600)
    described_class.publish("new:2", [row("LeakJob", 20, 3 * mb, nil, nil, error: 400_000, windows: 4)], ttl: 15)
    expect(described_class.fleet.first).to include(class: "LeakJob", jobs: 260, retained_per_job: 3 * mb,
                                                   windows: 34)
    expect(described_class.processes.map { |p| p[:identity] }).to contain_exactly("old:1", "new:2")
  end

  describe "sidekiq_rust report" do
    let(:out) { StringIO.new }
    let(:err) { StringIO.new }
    let(:cli) { SidekiqRust::CLI::Report.new(out: out, err: err) }

    it "prints the table and the JSON, with a limit; an unreachable Redis exits 1" do
      described_class.publish("a:1", [row("LeakJob", 30, 6 * mb, 7 * mb, 6 * mb, error: 200_000, windows: 25),
                                      row("PingJob", 100, 0, nil, 512, error: 3000, windows: 40)], ttl: 60)
      expect(cli.run(["--limit", "1", "--redis-url", "unix://#{redis_server.socket}"])).to eq(0)
      expect(out.string).to eq(<<~TEXT)
        CLASS                                        JOBS   RETAINED_PER_JOB    ±ERROR  WINDOWS   GROWTH_PER_JOB   ALLOCATED_PER_JOB
        LeakJob                                        30              6.0MB     195KB       25            7.0MB               6.0MB
        (1 more not shown: --limit 2)
      TEXT
      out.truncate(0)
      out.rewind
      expect(cli.run(["--json", "--redis-url", "unix://#{redis_server.socket}"])).to eq(0)
      expect(JSON.parse(out.string)).to eq([
                                             { "class" => "LeakJob", "jobs" => 30, "retained_per_job" => 6 * mb,
                                               "growth_per_job" => 7 * mb, "allocated_per_job" => 6 * mb,
                                               "retained_error" => 200_000, "windows" => 25 },
                                             { "class" => "PingJob", "jobs" => 100, "retained_per_job" => 0,
                                               "growth_per_job" => nil, "allocated_per_job" => 512,
                                               "retained_error" => 3000, "windows" => 40 }
                                           ])
      _, stderr, status = Open3.capture3(RbConfig.ruby, File.expand_path("../exe/sidekiq_rust", __dir__), "report",
                                         "--redis-url", "unix:///nonexistent/redis.sock")
      expect(status.exitstatus).to eq(1)
      expect(stderr).to match(/\Asidekiq_rust report: cannot reach Redis \(.*\): check --redis-url/)
    end

    it "rejects a bad limit with the usage" do
      expect(cli.run(["--limit", "0"])).to eq(2)
      expect(err.string).to include("--limit takes a number above 0").and include("Usage: sidekiq_rust report")
    end
  end
end
