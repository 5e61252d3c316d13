# frozen_string_literal: true

require_relative "chaos_helper"

RSpec.describe "chaos: garbage in the gem's Redis keys (Sidekiq #{Sidekiq::VERSION})" do
  include E2E
  include Chaos

  # Keys of the gem holding the wrong type, no expiry, or a huge value, as a bad deploy or a hand edit leaves them.
  def write_garbage
    redis_call("HSET", "sidekiq_rust:restart_slot:0", "not", "a slot")        # wrong type, no expiry
    redis_call("SET", "sidekiq_rust:restart_slot:1", "x" * 8 * 1024 * 1024)   # 8 MB, no expiry
    redis_call("SET", "sidekiq_rust:class_index", "not a sorted set")
    redis_call("SET", "sidekiq_rust:events", "not a stream")
    redis_call("SET", "sidekiq_rust:processes", "not a sorted set")
    redis_call("LPUSH", "sidekiq_rust:memory_restart:#{SidekiqRust::SidekiqAdapter.hostname}", "a list")
    redis_call("SADD", "sidekiq_rust:restarts_in_flight:chaos-jid", "a set")
  end

  it "logs and ignores it: restarts go on, no exception reaches a job, every job is done" do
    write_garbage
    fleet = supervise(3, Chaos::GUARD)
    wait_for_fleet(3)
    push_bloat
    # The job with the garbage counter key is in flight at a restart: the counter is replaced, not an error.
    Sidekiq::Client.push("class" => "BloatJob", "args" => [5, 3], "queue" => "default", "jid" => "chaos-jid")
    # The jobs are done within seconds; the processes over the limit restart one after another (one slot).
    eventually(timeout: 90, what: "a second restart") { fleet.count(/restarting: quiet/) >= 2 }
    expect_fleet_sound(fleet, jobs: Chaos::BLOAT_JOBS + 1)
    expect(fleet.logs).to include("could not write the memory history") # said once per process, then ignored
  end
end
