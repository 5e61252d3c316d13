# frozen_string_literal: true

require "spec_helper"

# End to end in a real memory cgroup (issue 25, item 5): a limit given as a percentage follows the cgroup's limit
# while the process runs. Kubernetes 1.35 resizes a running container's memory limit in place, lowering included:
# the guard reads the limit again with each of its readings and moves max_rss, the hard limit and the brake with it.
RSpec.describe "a percentage limit follows its cgroup's limit (Sidekiq #{Sidekiq::VERSION})", e2e: true do
  include E2E

  let(:mb) { SidekiqRust::Units::MB }

  include_context "real memory cgroup"

  def process_field(process, field)
    identity = process.identity
    identity && redis_call("HGET", "#{SidekiqRust::Keys::HISTORY_PROCESS}#{identity}", field)
  end

  it "moves max_rss and the hard limit when the limit is lowered under a running process, and acts on them" do
    @cgroup = RealCgroup.new(limit: 1000 * mb)
    # 10% of 1000 MB is far above what the process needs; 10% of 200 MB (20 MB) is below it. The brake is off
    # and a sole process may restart, so that the soft limit's restart is what shows the move.
    guard = { "max_rss" => "10%", "hard_max_rss" => "60%", "grace_time" => 0, "reclaim" => false,
              "require_other_process" => false, "brake" => false, "check_interval" => 1 }
    resized = sidekiq("resized", guard: guard, prefix: @cgroup.wrapper)
    resized.wait_for_log(/guard started/)
    eventually(what: "max_rss 100 MB in the process's record") { process_field(resized, "max_rss") == (100 * mb).to_s }
    expect(resized.alive?).to be(true)

    @cgroup.limit = 200 * mb
    resized.wait_for_log(%r{the memory cgroup's limit is now 200MB \(was 1000MB\): max_rss 20MB \(was 100MB\), hard_max_rss 120MB})
    status = resized.wait_exit(timeout: 60)
    expect(status.exitstatus).to eq(0)
    expect(resized.log).to match(/restarting: quiet \(TSTP\).* max_rss=20MB hard_max_rss=120MB reason=max_rss/)
    expect(resized.events.first).to include("reason" => "max_rss", "max_rss" => 20 * mb, "hard_max_rss" => 120 * mb)
    moved = SidekiqRust::History.events(count: 50).find { |e| e[:type] == "limits" }
    expect(moved).not_to be_nil
    expect(moved[:data]).to include("limit" => 200 * mb, "was_limit" => 1000 * mb, "max_rss" => 20 * mb)
  end
end
