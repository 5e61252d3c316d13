# frozen_string_literal: true

require "spec_helper"

# End to end: a real redis-server and real `sidekiq` processes running spec/e2e/app.rb.
RSpec.describe "the memory guard in real Sidekiq processes (Sidekiq #{Sidekiq::VERSION})" do
  include E2E

  # Far above anything these processes reach.
  let(:roomy) { { "max_rss" => 8000 } }
  # Below what any Sidekiq process needs to boot: over the limit from the start.
  let(:tiny) { { "max_rss" => 10 } }

  it "registers the middleware once even when configured twice" do
    a = sidekiq("a", guard: roomy)
    a.wait_for_log(/Middleware registered 1 time\(s\)/)
    expect(a.log.scan("guard started").size).to eq(1)
  end

  it "logs the doctor's warnings at boot with doctor_on_boot" do
    a = sidekiq("a", guard: roomy.merge("doctor_on_boot" => true), env: { "MALLOC_ARENA_MAX" => nil, "LD_PRELOAD" => nil })
    a.wait_for_log(/sidekiq_rust doctor: WARN allocator: glibc .* -- threaded Sidekiq bloats on glibc/)
  end

  # The soft limit's restart (without the brake, which would restart it for retained memory at brake_at first).
  it "restarts the process pushed over its limit: it quiets, finishes its job, exits 0; no job is lost" do
    bloated = sidekiq("bloated", guard: { "max_rss" => 150, "shutdown_wait" => 20, "brake" => false })
    steady = sidekiq("steady", guard: roomy)
    wait_for_fleet(2)
    push("BloatJob", 10, 0.3, count: 40)

    status = bloated.wait_exit(timeout: 90)
    expect(status.exitstatus).to eq(0)
    expect(bloated.log).to match(/restarting: quiet \(TSTP\).*reason=max_rss in_flight=\S.* top_retained=\S/)
    expect(bloated.log).not_to include("top_growth")
    expect(bloated.log).to match(/restarting: stop \(TERM\)/)
    expect(bloated.log).not_to include("sending KILL")
    expect(bloated.events.size).to eq(1)
    expect(bloated.events.first).to include("event" => "restart", "reason" => "max_rss", "dry_run" => false)

    eventually(timeout: 90, what: "all 40 jobs done") { done_count == 40 }
    expect(steady.alive?).to be(true)
    done_by = redis_call("LRANGE", "e2e:done_by", 0, -1)
    expect(done_by.size).to eq(40)
    expect(done_by.map { |d| d.split(":").first }.uniq.sort).to eq(%w[bloated steady])
  end

  # The soft limit's rule (the brake, which would restart a paused idle process for retained memory, is off).
  it "does not restart a sole process over its limit, and warns" do
    alone = sidekiq("alone", guard: tiny.merge("brake" => false))
    alone.wait_for_log(/over the limit but not restarting: no other live Sidekiq process is serving/)
    sleep 2
    expect(alone.alive?).to be(true)
    expect(alone.log).not_to include("restarting: quiet")
    # Passing max_rss is said once, with what follows and when.
    over = "sidekiq_rust: over max_rss: now: a graceful restart, while another process serves " \
           "(require_other_process); no hard_max_rss set"
    expect(alone.log.scan(over).size).to eq(1)
  end

  it "never quiets two processes at once with max_concurrent_restarts = 1" do
    first = sidekiq("first", guard: tiny)
    second = sidekiq("second", guard: tiny)
    third = sidekiq("third", guard: roomy)
    wait_for_fleet(3)

    # One of the two restarts; the other waits for the slot, then restarts after the first has gone.
    quiet_times = {}
    eventually(timeout: 90, what: "both bloated processes restarted") do
      [first, second].each do |p|
        quiet_times[p.name] ||= Time.now if p.log.include?("restarting: quiet")
      end
      !first.alive? && !second.alive?
    end
    expect(third.alive?).to be(true)
    expect(first.status.exitstatus).to eq(0)
    expect(second.status.exitstatus).to eq(0)
    waited = [first, second].find { |p| p.log.include?("restart slot(s) are held") }
    expect(waited).not_to be_nil
    # The one that waited quieted only after the other had exited.
    other = ([first, second] - [waited]).first
    expect(quiet_times.fetch(waited.name)).to be > quiet_times.fetch(other.name)
    expect(waited.log[/.*restarting: quiet.*/]).not_to be_nil
  end

  it "catches an idle process over its limit with the monitor" do
    idle = sidekiq("idle", guard: tiny)
    sidekiq("helper", guard: roomy)
    wait_for_fleet(2)
    expect(idle.wait_exit(timeout: 60).exitstatus).to eq(0)
    expect(idle.log).to match(/restarting: quiet/)
    expect(done_count).to eq(0)
  end

  it "keeps a process whose memory falls under the limit after reclaim", allocator: true do
    # The check after the job is the trigger (the monitor waits 60 s): the job's garbage is all there, and it is
    # all garbage by then. A monitor reading in the middle of the job would reclaim while the job still allocates.
    reclaimer = sidekiq("reclaimer", guard: { "max_rss" => 250, "reclaim" => true, "check_interval" => 60 })
    sidekiq("helper", guard: roomy)
    wait_for_fleet(2)
    push("GarbageJob", 20_000)
    eventually(timeout: 60, what: "the garbage job done") { done_count == 1 }
    reclaimer.wait_for_log(/reclaimed \d+MB \(GC \+ purge\): back under the limit, no restart/)
    sleep 2
    expect(reclaimer.alive?).to be(true)
    expect(reclaimer.log).not_to include("restarting: quiet")
  end

  it "only logs in dry-run mode" do
    dry = sidekiq("dry", guard: tiny.merge("dry_run" => true))
    sidekiq("helper", guard: roomy)
    wait_for_fleet(2)
    dry.wait_for_log(/dry run: would restart/)
    sleep 2
    expect(dry.alive?).to be(true)
    expect(dry.events.first).to include("dry_run" => true, "reason" => "max_rss")
  end

  it "KILLs a process whose job hangs past kill_after" do
    push("HangJob")
    hung = sidekiq("hung", guard: tiny.merge("require_other_process" => false, "shutdown_wait" => 1,
                                             "kill_after" => 4), timeout: 1)
    hung.wait_for_log(/HangJob started/)
    status = hung.wait_exit(timeout: 60)
    expect(status.termsig).to eq(9)
    expect(hung.log).to match(/still alive 4(\.0)?s after TERM, sending KILL/)
    expect(redis_call("LLEN", "queue:default")).to eq(1) # Sidekiq pushed the hung job back: not lost
  end

  it "does not restart while Redis is down, and the running job is unaffected" do
    marker = File.join(@e2e_dir, "job-finished")
    push("SleepJob", 4, marker)
    patient = sidekiq("patient", guard: tiny.merge("require_other_process" => false, "grace_time" => 1.5))
    patient.wait_for_log(/SleepJob started/)
    redis_server.stop
    patient.wait_for_log(/not restarting: Redis is unavailable/, timeout: 30)
    eventually(timeout: 30, what: "the job finished") { File.exist?(marker) }
    expect(patient.alive?).to be(true)
    expect(patient.log).not_to include("restarting: quiet")
  end
end
