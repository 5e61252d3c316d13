# frozen_string_literal: true

require "spec_helper"
require "sidekiq/api"
require "sidekiq_rust/metrics"
require "sidekiq_rust/web/page"

# End to end, real redis-server and three supervised `sidekiq` processes (spec/e2e/app.rb, started again when
# they exit): a job that takes any process over the hard limit is a poison pill. Without the quarantine it would
# be requeued at every TERM and walk through the fleet forever; with quarantine_after = 2 the restarts stop after
# two, the job is in the dead set with the reason, and every other job is done.
RSpec.describe "the quarantine of a poison-pill job (Sidekiq #{Sidekiq::VERSION})" do
  include E2E

  LIGHT_JOBS = 60

  it "stops the restarts after quarantine_after, sends the job to the dead set with the reason, loses nothing" do
    guard = { "max_rss" => 150, "grace_time" => 600, "hard_max_rss" => 200, "quarantine_after" => 2,
              "shutdown_wait" => 10 }
    fleet = supervise(3, guard)
    wait_for_fleet(3)
    push("GrowJob", 400, 10, 300) # past 200 MB within 2 s wherever it runs: the poison pill
    push("LightJob", 0.2, count: LIGHT_JOBS)

    dead = eventually(timeout: 120, what: "the poison job in the dead set") { Sidekiq::DeadSet.new.to_a.first }
    eventually(timeout: 60, what: "every light job done") { done_count == LIGHT_JOBS }
    sleep 8 # long enough for another restart to begin, were the job requeued
    fleet.stop

    expect(dead.klass).to eq("GrowJob")
    expect(dead["error_class"]).to eq("SidekiqRust::Quarantined")
    expect(dead["error_message"]).to match(/\AGrowJob \(jid #{dead.jid}\) exceeded the memory limit in 2 processes: /)
    expect(dead["error_message"]).to include("in flight at 2 memory restarts (quarantine_after = 2)")
    expect(Sidekiq::DeadSet.new.size).to eq(1)
    expect(redis_call("EXISTS", SidekiqRust::Quarantine.key(dead.jid))).to eq(0) # a retry counts from 0 again
    expect(fleet.count(/restarting: quiet/)).to eq(2)
    expect(fleet.count(/quarantined 1 job\(s\) in flight at 2 .*quarantined=GrowJob\(jid #{dead.jid}, /))
      .to eq(1)
    expect(fleet.count(/quarantined job ended: GrowJob/)).to eq(1)
    event = fleet.processes.flat_map(&:events).find { |e| e["event"] == "quarantine" }
    expect(event).to include("reason" => "hard_max_rss")
    expect(event["quarantined"])
      .to contain_exactly(include("class" => "GrowJob", "jid" => dead.jid, "restarts" => 2))
    expect(done_count).to eq(LIGHT_JOBS) # the poison job never finished
    expect(redis_call("LLEN", "queue:default")).to eq(0)
    expect(Sidekiq::RetrySet.new.size).to eq(0)
    expect(fleet.killed).to be_empty
    expect(fleet.min_serving).to be >= 1, fleet.empty_report
    # What the team sees: the Memory tab's timeline and the metrics.
    timeline = SidekiqRust::History.events(count: 200).find { |e| e[:type] == "quarantine" }
    expect(SidekiqRust::Web::Page.new.details(timeline))
      .to eq("sent to the dead set, not requeued again (in flight at 2 memory restarts): GrowJob #{dead.jid}")
    families = Prometheus.parse(SidekiqRust::Metrics.text)
    expect(Prometheus.samples(families, "sidekiq_rust_quarantined_jobs_total").sum { |s| s["value"] }).to eq(1.0)
  end

  it "requeues as before with quarantine_after = 0 (off): the job is still there after two restarts" do
    guard = { "max_rss" => 150, "grace_time" => 600, "hard_max_rss" => 200, "quarantine_after" => 0,
              "shutdown_wait" => 10 }
    fleet = supervise(2, guard)
    wait_for_fleet(2)
    push("GrowJob", 400, 10, 300)
    eventually(timeout: 120, what: "a third memory restart") { fleet.count(/restarting: quiet/) >= 3 }
    fleet.stop
    expect(Sidekiq::DeadSet.new.size).to eq(0)
    expect(fleet.logs).not_to include("quarantined")
    expect(fleet.killed).to be_empty
  end
end
