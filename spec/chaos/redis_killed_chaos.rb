# frozen_string_literal: true

require_relative "chaos_helper"

RSpec.describe "chaos: Redis killed while a process quiets, restarted empty (Sidekiq #{Sidekiq::VERSION})" do
  include E2E
  include Chaos

  it "starts no second restart while the first still stops, crashes nothing, and recovers when Redis is back" do
    fleet, = fleet_with_quiet_holder(Chaos::GUARD)
    redis_server.stop # no persistence: it comes back empty, the slot and the queue gone
    sleep 3
    redis_server.start
    restarts = fleet.count(/restarting: quiet/)
    # The jobs pushed before are gone with Redis' data; a second batch must all be done.
    push_bloat(30)
    eventually(timeout: 120, what: "a memory restart after Redis came back") do
      fleet.count(/restarting: quiet/) > restarts
    end
    eventually(timeout: 120, what: "the second batch done") { done_count == 30 }
    fleet.stop
    expect(fleet.max_restarting).to be <= 1
    expect(fleet.min_serving).to be >= 1, fleet.empty_report
    expect(fleet.killed).to be_empty
    expect(fleet.processes.reject(&:alive?).map { |p| p.status.exitstatus }.uniq).to eq([0])
    report_figures(fleet, 30)
  end
end
