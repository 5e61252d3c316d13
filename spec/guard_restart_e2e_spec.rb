# frozen_string_literal: true

require "spec_helper"

# End to end, real redis-server and real `sidekiq` processes (spec/e2e/app.rb): the restart decisions that a
# Rails app with two Sidekiq processes showed wrong (issue 10).
RSpec.describe "the guard's restart decisions in real Sidekiq processes (Sidekiq #{Sidekiq::VERSION})" do
  include E2E

  let(:roomy) { { "max_rss" => 8000 } }
  let(:tiny) { { "max_rss" => 10 } }
  let(:times_path) { File.join(@e2e_dir, "times") }

  # The wall-clock moments the app recorded: {"quiet" => [t, ...], "term" => [t, ...]}.
  def times
    File.readlines(times_path).map(&:split).group_by(&:first).transform_values { |v| v.map { |(_, t)| Float(t) } }
  end

  def log_line(process, pattern)
    process.log.lines.find { |line| line.match?(pattern) } || raise("#{process.name} never logged #{pattern.inspect}")
  end

  it "restarts a sole process over the hard limit, after a reclaim (require_other_process is for the soft limit)",
     allocator: true do
    alone = sidekiq("alone", guard: { "max_rss" => 10, "hard_max_rss" => 20, "reclaim" => true,
                                      "require_other_process" => true })
    expect(alone.wait_exit(timeout: 60).exitstatus).to eq(0)
    log = alone.log
    expect(log).to match(/reclaimed \d+MB \(GC \+ (purge|no purge)\): still over the limit/)
    expect(log.index("reclaimed")).to be < log.index("restarting: quiet")
    expect(log).to match(/restarting: quiet \(TSTP\).*reason=hard_max_rss/)
    expect(log).not_to include("no other live Sidekiq process")
    expect(alone.events.first).to include("reason" => "hard_max_rss")
  end

  it "counts the settle before TERM from Sidekiq's :quiet event, not from the signal" do
    late = sidekiq("late", guard: tiny, env: { "E2E_QUIET_DELAY" => "4", "E2E_TIMES" => times_path })
    sidekiq("helper", guard: roomy)
    wait_for_fleet(2)
    expect(late.wait_exit(timeout: 90).exitstatus).to eq(0)
    quiet = times.fetch("quiet").first
    term = times.fetch("term").first
    # Sidekiq handled TSTP 4 s late; TERM still came a whole settle after quiet took effect.
    expect(term - quiet).to be >= SidekiqRust::Guard::QUIET_SETTLE
    expect(late.log).to match(/quiet took effect \(Sidekiq's :quiet event\) [4-9]\.\d+s after TSTP/)
  end

  it "says so when Sidekiq never reports quiet, and still stops gracefully" do
    deaf = sidekiq("deaf", guard: tiny, env: { "E2E_QUIET_DELAY" => "never" })
    sidekiq("helper", guard: roomy)
    wait_for_fleet(2)
    expect(deaf.wait_exit(timeout: 90).exitstatus).to eq(0)
    expect(deaf.log).to match(/Sidekiq has not reported quiet \(its :quiet event\) 15s after TSTP; stopping with TERM/)
    expect(deaf.log).to match(/restarting: stop \(TERM\), no job runs/)
  end

  it "stops at once when memory passes the hard limit while quiet, instead of waiting for the job" do
    push("GrowJob", 400, 10, 60) # grows to 400 MB in 4 s, then runs for a minute
    growing = sidekiq("growing", guard: { "max_rss" => 150, "hard_max_rss" => 300, "require_other_process" => false,
                                          "shutdown_wait" => 60 })
    expect(growing.wait_exit(timeout: 60).exitstatus).to eq(0)
    expect(growing.log).to match(/restarting: quiet \(TSTP\).*reason=max_rss/)
    expect(growing.log).to match(/restarting: stop \(TERM\), over the hard limit while quiet/)
    expect(done_count).to eq(0)
    expect(redis_call("LLEN", "queue:default")).to eq(1) # Sidekiq pushed the job back: not lost
  end

  it "detects a restart loop (a process that replaced a memory restart is over the limit right after boot, " \
     "reclaim gives back little) and backs off", allocator: true do
    tight_settings = tiny.merge("reclaim" => true, "loop_window" => 600)
    first = sidekiq("first", guard: tight_settings)
    sidekiq("helper", guard: roomy)
    wait_for_fleet(2)
    # A fresh process over its limit restarts: it may be a fast leak, and nothing says a restart did not help.
    expect(first.wait_exit(timeout: 90).exitstatus).to eq(0)
    expect(first.log).to include("restarting: quiet")
    expect(first.log).not_to include("restart loop")
    # Its replacement (as a supervisor starts it) is over the limit again right after boot: a loop.
    tight = sidekiq("tight", guard: tight_settings)
    tight.wait_for_log(/restart loop: over max_rss 10MB \d+s after boot \(it replaced a process of this host/)
    line = log_line(tight, /restart loop/)
    expect(line).to match(/that restarted for memory\), and reclaim gave back \d+MB of \d+MB/)
    expect(line).to include("No restart for the soft limit until this process is 600s old (loop_window)")
    expect(line).to match(/Raise max_rss to about \d+MB, or lower Sidekiq's concurrency \(now 2\)/)
    sleep 3
    expect(tight.alive?).to be(true)
    expect(tight.log).not_to include("restarting: quiet")
    expect(tight.log.scan("restart loop").size).to eq(1)
  end

  it "logs the reading the restart was decided on: the one after the reclaim", allocator: true do
    bloated = sidekiq("bloated", guard: { "max_rss" => 150, "reclaim" => true, "check_interval" => 60 })
    sidekiq("helper", guard: roomy)
    wait_for_fleet(2)
    push("BloatGarbageJob", 200, 20_000)
    expect(bloated.wait_exit(timeout: 90).exitstatus).to eq(0)
    reclaimed = log_line(bloated, /reclaimed \d+MB .*still over the limit/)
    restarting = log_line(bloated, /restarting: quiet/)
    after_reclaim = reclaimed[/ rss=(\d+MB)/, 1]
    expect(reclaimed[/reclaimed (\d+)MB/, 1].to_i).to be > 20
    expect(restarting[/ rss=(\d+MB)/, 1]).to eq(after_reclaim)
    expect(bloated.events.first["memory"]).to be_within(1024 * 1024).of(after_reclaim.to_i * 1024 * 1024)
  end

  it "resolves what depends on the environment when the Sidekiq server starts: a percentage without a cgroup limit" do
    skip "this machine has a memory cgroup limit" if SidekiqRust::Memory.cgroup&.fetch(:limit)

    expect { sidekiq("percent", guard: { "max_rss" => "80%" }) }
      .to raise_error(/exited .*max_rss is "80%".*needs a memory cgroup with a limit/m)
    # The same configuration in a plain Ruby (a console, rails runner, assets:precompile) configures fine.
    out = ruby_output('require "sidekiq"; SidekiqRust.configure { |c| c.max_rss = "80%" }; print :configured')
    expect(out).to eq("configured")
  end

  it "names a process by Sidekiq's identity in its logs, restart slot and on_restart event" do
    named = sidekiq("named", guard: tiny)
    sidekiq("helper", guard: roomy)
    wait_for_fleet(2)
    identity = live_processes.find { |p| p["pid"] == named.pid }["identity"]
    expect(identity).to match(/\A.+:#{named.pid}:\h{12}\z/)
    expect(named.wait_exit(timeout: 60).exitstatus).to eq(0)
    expect(log_line(named, /guard started/)).to include("identity=#{identity} ")
    expect(log_line(named, /restarting: quiet/)).to include("identity=#{identity} ")
    expect(named.events.first["identity"]).to eq(identity)
  end
end
