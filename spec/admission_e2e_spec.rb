# frozen_string_literal: true

require "spec_helper"
require "sidekiq/api"
require "sidekiq_rust/metrics"

# The client's view of spec/e2e/app.rb's DeclaredJob: Sidekiq's client merges its sidekiq_options (memory:)
# into the payload, as an app's `DeclaredJob.perform_async` does.
class DeclaredJob
  include Sidekiq::Worker
  sidekiq_options memory: "140MB"
end

# End to end, real redis-server and real `sidekiq` processes (spec/e2e/app.rb): with admission on, a fetched job
# starts only when its class's working set fits under brake_at; else it goes back to the front of its queue.
RSpec.describe "admission in real Sidekiq processes (Sidekiq #{Sidekiq::VERSION})", e2e: true, allocator: true do
  include E2E

  # A backlog whose heavy class needs 140 MB (more than a third of max_rss 400 MB) at 5 threads: at most two fit
  # under brake_at (360 MB) beside the process's own memory, never three; nothing declared (the first job of
  # each class runs alone and measured), then the same with the class declared.
  it "never runs more of a heavy class at once than fits, and does every job exactly once" do
    guard = { "max_rss" => 400, "hard_max_rss" => 800, "grace_time" => 30, "reclaim" => true, "admission" => true,
              "check_interval" => 1, "shutdown_wait" => 10 }
    fleet = supervise(2, guard, concurrency: 5)
    wait_for_fleet(2)
    peak = peak_rss(fleet) do
      12.times do
        push("WorkingSetJob", 140, 1.5)
        push("LightJob", 0.2, count: 2)
      end
      6.times { DeclaredJob.perform_async(140, 1.5) }
      eventually(timeout: 240, interval: 0.5, what: "every job done") { done_count >= 42 }
    end
    jids = redis_call("LRANGE", "e2e:jids", 0, -1)
    # Pairs (RESP3, Sidekiq 7+) or a flat list (6.4).
    scores = redis_call("ZRANGE", "e2e:at_once", 0, -1, "WITHSCORES").flatten
    at_once = scores.each_slice(2).to_h { |member, score| [member, score.to_i] }
    logs = fleet.logs
    warn format("admission e2e (Sidekiq %<v>s, %<a>s): at once %<o>s, peak RSS %<p>dMB, restarts %<r>d",
                v: Sidekiq::VERSION, a: SidekiqRust::Allocator.name, o: at_once, p: peak / SidekiqRust::Units::MB,
                r: fleet.count(/restarting: quiet/))
    expect(jids.size).to eq(18)
    expect(jids.uniq.size).to eq(18)
    expect(at_once.values.max).to be <= 2
    expect(done_count).to eq(42)
    expect(logs).to match(/admission: WorkingSetJob is not measured yet: its first job runs alone and measured/)
    expect(logs).to match(/admission: WorkingSetJob waits \(needs \d+MB: \d+MB with the running jobs, over brake_at 360MB\)/)
    expect(logs).not_to match(/admission: DeclaredJob is not measured yet/)
    expect(logs).not_to include("sidekiq_rust: error")
    expect(fleet.killed).to be_empty

    families = eventually(timeout: 20, what: "the working sets in the metrics") do
      parsed = Prometheus.parse(SidekiqRust::Metrics.text)
      parsed if Prometheus.samples(parsed, "sidekiq_rust_class_working_set_bytes").size >= 3
    end
    sets = Prometheus.samples(families, "sidekiq_rust_class_working_set_bytes").to_h do |s|
      [s["labels"]["class"], s["value"]]
    end
    expect(sets["WorkingSetJob"]).to be_between(120 * SidekiqRust::Units::MB, 260 * SidekiqRust::Units::MB)
    expect(sets["DeclaredJob"]).to eq(140.0 * SidekiqRust::Units::MB)
    expect(sets["LightJob"]).to be < 30 * SidekiqRust::Units::MB
    deferred = Prometheus.samples(families, "sidekiq_rust_admission_deferred_total")
    expect(deferred.find { |s| s["labels"]["class"] == "WorkingSetJob" }["value"]).to be > 0
  end
end
