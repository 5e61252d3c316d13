# frozen_string_literal: true

require "spec_helper"
require "rack/mock"

# End to end in a real memory cgroup (issue 17): real `sidekiq` processes (spec/e2e/app.rb) in a child of this
# process's own memory cgroup, limited to a few hundred MB, run jobs that each keep 5 MB, more than the limit holds.
# A supervisor (Kubernetes, systemd) starts a process again whenever it exits.
# - Without the guard's restarts (dry_run, so that the guard only watches and reports): the kernel's OOM killer
#   SIGKILLs a process, and its jobs in flight are lost (basic fetch: taken off the queue, never completed,
#   never requeued). A guarded process of the same cgroup sees the OOM-kill counter rise and reports the kill
#   with the jobs the killed process had in flight.
# - With the guard (max_rss "80%" of the cgroup's limit, metric :cgroup): no OOM kill, no job lost, every
#   restart graceful (exit 0).
# The figures go to the README ("What it promises"); bench/cgroup_oom.rb prints them as a table.
RSpec.describe "real memory cgroups: the kernel's OOM killer vs the guard (Sidekiq #{Sidekiq::VERSION})", e2e: true do
  include E2E

  include_context "real memory cgroup"

  def run(size:, limit_mb:, guard:)
    CgroupScenario.new(self, size: size, limit: SidekiqRust::Units::MB * limit_mb, guard: guard).tap do |scenario|
      @cgroup = scenario.cgroup
      scenario.run
    end
  end

  def oom_events
    SidekiqRust::History.events(count: 100).select { |e| e[:type] == "oom_kill" }
  end

  # Every OOM kill reported once, each SIGKILLed process named by one, with the jobs in flight at its last
  # reading (LeakJobs: the killed process is the one that grew).
  def expect_reported(scenario)
    events = eventually(what: "an oom_kill event per OOM kill") do
      found = oom_events
      found if found.size >= scenario.oom_kills
    end
    expect(events.size).to eq(scenario.oom_kills), "oom_kill events: #{events.inspect}"
    scenario.killed.each do |process|
      event = events.find { |e| e[:data]["killed"].any? { |k| k.start_with?("#{process.identity} ") } }
      expect(event).not_to be_nil, "no oom_kill event names #{process.identity}: #{events.inspect}"
      expect(event[:data]["in_flight"].map { |j| j["class"] }.uniq).to eq(["LeakJob"]), event.inspect
    end
  end

  it "without the guard's restarts, one process: the kernel OOM-kills it, and its jobs in flight are lost" do
    s = run(size: 1, limit_mb: 300, guard: CgroupScenario::UNGUARDED)
    expect(s.oom_kills).to be >= 1
    expect(s.killed.size).to be >= 1
    expect(s.killed.map { |p| p.status.termsig }.uniq).to eq([9])
    expect(s.lost).to be >= 1
    # The process started in the killed one's place reports the kill with the jobs it had in flight.
    expect_reported(s)
    expect(s.logs).to match(/the kernel's OOM killer killed \S+ \(pid \d+\) in the memory cgroup .*LeakJob\(jid/)
    # The metrics and the Memory tab show the real cgroup's counter and pressure.
    families = Prometheus.parse(SidekiqRust::Metrics.text)
    kills = Prometheus.samples(families, "sidekiq_rust_cgroup_oom_kills_total").map { |x| x["value"] }
    expect(kills.max).to eq(s.oom_kills.to_f)
    expect(Prometheus.samples(families, "sidekiq_rust_memory_pressure_some_avg10")).not_to be_empty
    web = Rack::MockRequest.new(WebServer.app)
    page = web.get("/sidekiq/memory")
    expect(page.body).to include("sr-event-oom_kill", "OOM killer killed", "LeakJob")
    # Each process's page shows its cgroup's counter and pressure.
    details = SidekiqRust::History.processes.map do |process|
      web.get("/sidekiq/memory", params: { "process" => process[:identity] }).body
    end
    expect(details.flat_map { |body| body.scan(%r{<dd class="sr-oom-kills">(\d+)</dd>}).flatten.map(&:to_i) }.max)
      .to eq(s.oom_kills)
    expect(details.join).to match(%r{<dd class="sr-pressure">\d+\.\d\d%</dd>})
    s.report("1 process, no guard")
  end

  it "with the guard, one process: restarts gracefully before the kernel kills, loses no job" do
    s = run(size: 1, limit_mb: 300, guard: CgroupScenario::SOLE)
    # The guard found the cgroup from inside it (a nested path) and took 80% of its real limit.
    expect(s.processes.first.log).to match(/guard started identity=\S+ metric=cgroup max_rss=240MB hard_max_rss=270MB/)
    expect(s.oom_kills).to eq(0)
    expect(s.killed).to be_empty
    expect(s.lost).to eq(0)
    expect(s.restarts).to be >= 1
    expect(s.exited.map { |p| p.status.exitstatus }.uniq).to eq([0])
    expect(s.logs).to match(/restarting: quiet \(TSTP\).*reason=(max_rss|hard_max_rss|retained)/)
    expect(oom_events).to be_empty
    s.report("1 process, guard")
  end

  it "without the guard's restarts, a 2-process fleet in one cgroup: one is OOM-killed, the survivor reports it" do
    s = run(size: 2, limit_mb: 400, guard: CgroupScenario::UNGUARDED)
    expect(s.oom_kills).to be >= 1
    expect(s.killed.size).to be >= 1
    expect(s.lost).to be >= 1
    # The survivor (or the process started in the killed one's place) reports it.
    expect_reported(s)
    s.report("2 processes, no guard")
  end

  # Two processes share the cgroup's limit: 80% of it between them (CgroupScenario::FLEET).
  it "with the guard, a 2-process fleet in one cgroup: no OOM kill, no job lost, graceful restarts" do
    s = run(size: 2, limit_mb: 400, guard: CgroupScenario::FLEET)
    expect(s.processes.first.log).to match(/guard started identity=\S+ metric=rss max_rss=160MB hard_max_rss=180MB/)
    expect(s.oom_kills).to eq(0)
    expect(s.killed).to be_empty
    expect(s.lost).to eq(0)
    expect(s.restarts).to be >= 1
    expect(s.exited.map { |p| p.status.exitstatus }.uniq).to eq([0])
    # A slot per process: the soft limit restarts one at a time (require_other_process), the hard limit the other
    # one too if it gets there meanwhile.
    expect(s.supervisor.max_restarting).to be <= 2
    s.report("2 processes, guard")
  end
end
