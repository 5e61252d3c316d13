# frozen_string_literal: true

require "spec_helper"
require "json"
require "sidekiq_rust/cli"

RSpec.describe SidekiqRust::CLI::Top do
  include E2E

  let(:out) { StringIO.new }
  let(:err) { StringIO.new }
  let(:top) { described_class.new(out: out, err: err) }
  let(:roomy) { { "max_rss" => 8000 } }

  def rows_by_pid
    JSON.parse(run_top("--json"))["processes"].to_h { |row| [row["pid"], row] }
  end

  # exe/sidekiq_rust in a child Ruby, under the Sidekiq version of this suite (the child inherits Bundler's
  # environment).
  def sidekiq_rust(*argv)
    Open3.capture3(RbConfig.ruby, File.expand_path("../exe/sidekiq_rust", __dir__), *argv)
  end

  def run_top(*argv)
    out.truncate(0)
    out.rewind
    expect(top.run(argv)).to eq(0), err.string
    out.string
  end

  it "shows every process of the fleet, with PSS/USS for this host's, a restart slot and quiet state" do
    a = sidekiq("a", guard: roomy)
    b = sidekiq("b", guard: roomy)
    wait_for_fleet(2)

    text = run_top("--once")
    expect(text).to match(/2 process\(es\), busy 0\/4/)
    # LIMIT: the guard's max_rss. LIVE, ALLOCFREE, HEAPFRAG: what each guard recorded (every 30 s). Each "-" until
    # the guard's first reading; "~" marks a LIVE measured before the RSS beside it.
    expect(text).to match(/^\S+\s+\S+\s+#{a.pid}\s+0\/2\s+\d+MB\s+(8000MB|-)\s+\d+MB\s+\d+MB\s+live\s+run\s+-\s+(~?\d+MB|-)\s+(\d+MB|-)\s+(\d+%|-)$/)
    expect(text).to match(/^\S+\s+\S+\s+#{b.pid}\s+0\/2 /)

    rows = rows_by_pid
    expect(rows.keys).to contain_exactly(a.pid, b.pid)
    expect(rows[a.pid]["pss"]).to be > 0
    expect(rows[a.pid]["uss"]).to be <= rows[a.pid]["pss"]
    expect(rows[a.pid]["rss"]).to be > 10 * 1024 * 1024
    # One source per row: RSS, PSS and USS of a local process all read now, so PSS never exceeds RSS.
    expect(rows[a.pid]["memory_source"]).to eq("live")
    expect(rows[a.pid]["pss"]).to be <= rows[a.pid]["rss"]
    # The name is Sidekiq's identity, as the guard logs it.
    identity = live_processes.find { |p| p["pid"] == a.pid }["identity"]
    expect(rows[a.pid]["identity"]).to eq(identity)
    expect(a.log).to include("identity=#{identity} ")
    b_identity = live_processes.find { |p| p["pid"] == b.pid }["identity"]

    redis_call("SET", "#{SidekiqRust::Fleet::KEY_PREFIX}0", b_identity)
    expect(rows_by_pid[b.pid]).to include("restart_slot" => true)
    expect(rows_by_pid[a.pid]).to include("restart_slot" => false)
    expect(run_top("--once")).to include("1 holding a restart slot")
    redis_call("SET", "#{SidekiqRust::Fleet::KEY_PREFIX}7", identity)
    expect(rows_by_pid[a.pid]).to include("restart_slot" => true) # a slot other than the first
    expect(run_top("--once")).to include("2 holding a restart slot")
    redis_call("DEL", "#{SidekiqRust::Fleet::KEY_PREFIX}7")

    Process.kill(:TSTP, a.pid) # quiet; the heartbeat shows it within one beat
    eventually(timeout: 15, what: "a shown quiet") { rows_by_pid[a.pid]["quiet"] }
    expect(run_top("--once")).to match(/#{a.pid}\s+0\/2\s+\d+MB\s+(8000MB|-)\s+\d+MB\s+\d+MB\s+live\s+quiet/)
  end

  # Issue 26: no limit column, and a LIVE figure (measured every 30 s) that could exceed the RSS read now.
  it "shows each process's limit, and a LIVE figure no staler than its RSS: capped at it and marked when older" do
    mb = 1024 * 1024
    units = ->(bytes) { SidekiqRust::Units.mb(bytes) }
    a = sidekiq("a", guard: { "max_rss" => 900, "hard_max_rss" => 1200 })
    wait_for_fleet(1)
    row = eventually(timeout: 20, what: "a's guard record with LIVE") do
      rows_by_pid[a.pid].then { |r| r if r && r["live"] }
    end
    expect(row).to include("max_rss" => 900 * mb, "hard_max_rss" => 1200 * mb, "memory_source" => "live")
    expect(row["live"]).to be_between(1, row["rss"])
    expect(row["live_age"]).to be >= 0
    expect(row["live_stale"]).to eq(row["live_age"] > 0.5) # its check_interval
    expect(run_top("--once")).to match(/^\S+\s+\S+\s+#{a.pid}\s+0\/2\s+\d+MB\s+900MB\s+\d+MB\s+\d+MB\s+live /)

    # Killed, the process leaves its heartbeat (for up to 60 s) and its guard record as they were: its RSS is
    # now the heartbeat's, read at its beat, and what the record says is set against that.
    identity = a.identity
    Process.kill(:KILL, a.pid)
    a.wait_exit
    beat = redis_call("HGET", identity, "beat")
    key = SidekiqRust::History::PROCESS_PREFIX + identity
    rss = rows_by_pid[a.pid]["rss"]
    # Measured at the beat: shown as measured.
    redis_call("HSET", key, "live", (rss / 2).to_s, "live_at", beat)
    expect(rows_by_pid[a.pid]).to include("memory_source" => "heartbeat", "live" => rss / 2, "live_age" => 0,
                                          "live_stale" => false)
    text = run_top("--once")
    expect(text).to match(/#{a.pid}\s+0\/2\s+#{units.(rss)}\s+900MB\s+-\s+-\s+beat\s+\S+\s+-\s+#{units.(rss / 2)} /)
    expect(text).not_to include("~")
    # Measured 20 s before the beat, and above its RSS (memory given back since): capped at the RSS, and marked.
    redis_call("HSET", key, "live", (rss * 2).to_s, "live_at", (beat.to_f - 20).to_s)
    expect(rows_by_pid[a.pid]).to include("live" => rss, "live_age" => 20.0, "live_stale" => true)
    text = run_top("--once")
    expect(text).to match(/#{a.pid}\s+0\/2\s+#{units.(rss)}\s+900MB\s+-\s+-\s+beat\s+\S+\s+-\s+~#{units.(rss)} /)
    expect(text).to include("(~ LIVE measured before its RSS was read, by up to 30 s; capped at the RSS)")
    # A record written before its guard recorded when LIVE was measured: its age is unknown, so it is stale.
    redis_call("HSET", key, "live", (rss / 2).to_s)
    redis_call("HDEL", key, "live_at")
    expect(rows_by_pid[a.pid]).to include("live" => rss / 2, "live_age" => nil, "live_stale" => true)
  end

  it "redraws every --interval, clearing the screen, until interrupted" do
    process = sidekiq("only", guard: roomy)
    wait_for_fleet(1)
    exe = File.expand_path("../exe/sidekiq_rust", __dir__)
    Open3.popen3(RbConfig.ruby, exe, "top", "--interval", "0.3", "--redis-url",
                 "unix://#{redis_server.socket}") do |stdin, stdout, stderr, thread|
      stdin.close
      output = +""
      eventually(timeout: 20, what: "three frames") do
        output << stdout.readpartial(65_536) if stdout.wait_readable(0.5)
        output.scan("\e[H\e[2J").size >= 3
      end
      Process.kill(:INT, thread.pid)
      output << stdout.read
      expect(thread.value.exitstatus).to eq(0), stderr.read
      frames = output.split("\e[H\e[2J").reject(&:empty?)
      expect(frames.size).to be >= 3
      expect(frames).to all(match(/1 process\(es\), busy 0\/2/).and(match(/^\S+\s+\S+\s+#{process.pid}\s+0\/2 /)))
    end

    # A reader that goes away (`sidekiq_rust top | head`) ends it quietly, not as a Redis error.
    Open3.popen3(RbConfig.ruby, exe, "top", "--interval", "0.2", "--redis-url",
                 "unix://#{redis_server.socket}") do |stdin, stdout, stderr, thread|
      stdin.close
      stdout.readpartial(100)
      stdout.close
      expect(thread.value.exitstatus).to eq(0)
      expect(stderr.read).to eq("")
    end
  end

  it "exits 1 with advice when Redis cannot be reached" do
    [["--once"], ["--json"], ["--interval", "1"]].each do |mode|
      out, err, status = sidekiq_rust("top", *mode, "--redis-url", "unix:///nonexistent/redis.sock")
      expect(status.exitstatus).to eq(1), err
      expect(err).to match(/\Asidekiq_rust top: cannot reach Redis \(.*CannotConnectError.*\): check --redis-url or /)
      expect(out).to eq("")
    end
  end

  it "prints its help and exits 0; exits 2 on a usage error" do
    expect(top.run(["--help"])).to eq(0)
    expect(out.string).to include("Usage: sidekiq_rust top", "--limit N")
    expect(top.run(["--limit", "0"])).to eq(2)
    expect(top.run(["--interval", "soon"])).to eq(2)
    expect(top.run(["--interval", "-1"])).to eq(2)
    expect(top.run(["--frobnicate"])).to eq(2)
    expect(top.run(["extra"])).to eq(2)
    expect(err.string).to include("--limit takes a number above 0", "invalid argument: --interval soon",
                                  "invalid option: --frobnicate", 'unexpected argument "extra"',
                                  "Usage: sidekiq_rust top")
  end

  it "stays readable with 200 processes: the largest first, a limit, and a summary of all" do
    rows = Array.new(200) do |i|
      { identity: "host#{i % 20}:#{1000 + i}:abc", hostname: "host#{i % 20}", pid: 1000 + i, busy: i % 3,
        concurrency: 10, rss: (100 + i) * 1024 * 1024, quiet: i == 7, restart_slot: i == 7, pss: nil, uss: nil,
        memory_source: "heartbeat" }
    end.sort_by { |r| -r[:rss] }
    text = top.frame(rows, 50, now: Time.at(0), cgroup: nil)
    lines = text.lines
    expect(lines.size).to eq(1 + 1 + 50 + 1)
    expect(lines.first).to include("200 process(es), busy 199/2000", "RSS 39900MB", "1 quiet", "1 holding a restart slot")
    expect(lines[2]).to include("1199", "299MB", " beat ")
    expect(lines.last).to eq("(150 more not shown: --limit 200)")
    expect(top.report(rows, 50)).to include(not_shown: 150)
    expect(top.frame([], 50)).to include("(no Sidekiq process is alive)")
  end

  it "shows the fleet's first job classes under the processes, with working sets when admission runs" do
    mb = 1024 * 1024
    SidekiqRust::Report.publish("host:1:a", [{ class: "ImportJob", jobs: 40, retained_per_job: 3 * mb,
                                               growth_per_job: nil, allocated_per_job: nil, working_set: 150 * mb,
                                               deferred: 7 },
                                             { class: "PingJob", jobs: 100, retained_per_job: 0, growth_per_job: nil,
                                               allocated_per_job: nil, working_set: 1 * mb, deferred: 0 }], ttl: 60)
    SidekiqRust::Report.publish("host:2:b", [{ class: "ImportJob", jobs: 10, retained_per_job: 3 * mb,
                                               growth_per_job: nil, allocated_per_job: nil, working_set: 160 * mb,
                                               deferred: 2 }], ttl: 60)
    text = run_top("--once")
    expect(text).to match(/^CLASS\s+JOBS\s+RETAINED\/JOB\s+WORKING_SET\s+DEFERRED$/)
    expect(text).to match(/^ImportJob\s+50\s+3\.0MB\s+160\.0MB\s+9$/)
    expect(text).to match(/^PingJob\s+100\s+0B\s+1\.0MB\s+0$/)
    classes = JSON.parse(run_top("--json"))["classes"]
    expect(classes.map { |c| c["class"] }).to eq(%w[ImportJob PingJob])
    # Without admission in the fleet: no working-set columns; with no figures published: no class section.
    expect(top.frame([], 50, now: Time.at(0), cgroup: nil,
                             classes: [{ class: "A", jobs: 1, retained_per_job: nil }]))
      .to include("CLASS                                        JOBS     RETAINED/JOB\nA ")
    expect(top.frame([], 50, now: Time.at(0), cgroup: nil)).not_to include("CLASS")
  end

  it "shows the memory cgroup it runs in: limit, working set, OOM kills and pressure" do
    cgroup = { dir: "/sys/fs/cgroup/kubepods/pod1/worker", version: 2, limit: 512 * 1_048_576,
               usage: 200 * 1_048_576, current: 300 * 1_048_576, oom_kills: 2, group_kill: true,
               pressure_some_avg10: 12.5, pressure_full_avg10: 8.0 }
    line = top.frame([], 50, now: Time.at(0), cgroup: cgroup).lines[1]
    expect(line).to eq("memory cgroup v2 /sys/fs/cgroup/kubepods/pod1/worker: limit 512MB, working set 200MB, " \
                       "OOM kills 2, pressure some 12.50% full 8.00% (avg10)\n")
    # This machine's own, as `top --json` prints it (nil outside a memory cgroup).
    expect(top.report([], 50)[:cgroup]).to be_nil.or(include(:limit, :usage, :oom_kills, :pressure_some_avg10))
  end
end
