# frozen_string_literal: true

require "json"
require "spec_helper"

# SidekiqRust::Fleet's restart slots against a real redis-server: what #acquire answers.
RSpec.describe SidekiqRust::Fleet do
  include E2E

  let(:settings) { guard_settings(check_interval: 5) }

  def fleet(tag)
    described_class.new(settings, tag: tag, logger: Logger.new(File::NULL))
  end

  it "answers a granted slot with its key, and a refusal with its denial and why" do
    sole = fleet("web-2:1").acquire(60, peers: :serving) # no other process serves: the slot it took goes back
    expect(sole).to have_attributes(granted: false, key: nil, denial: :sole_process,
                                    text: include("no other live Sidekiq process is serving"))

    granted = fleet("web-1:1").acquire(60, peers: :any)
    expect(granted).to have_attributes(granted: true, key: start_with(described_class::KEY_PREFIX), denial: nil,
                                       text: nil)

    (settings.max_concurrent_restarts - 1).times { |i| fleet("web-3:#{i}").acquire(60, peers: :any) }
    full = fleet("web-4:1").acquire(60, peers: :any)
    expect(full).to have_attributes(granted: false, denial: :no_slot, text: include("restart slot(s) are held"))
  end

  # A live process as Sidekiq's heartbeat lists it (the set `processes` and the process's hash).
  def live_process(identity, quiet: false)
    info = { "identity" => identity, "hostname" => identity.split(":").first, "pid" => 1,
             "started_at" => Time.now.to_f, "queues" => ["default"], "labels" => [], "concurrency" => 1, "tag" => "" }
    redis_call("SADD", "processes", identity)
    redis_call("HSET", identity, "info", JSON.generate(info), "busy", "0", "beat", Time.now.to_f.to_s,
               "quiet", quiet.to_s)
    redis_call("EXPIRE", identity, 60)
  end

  it "lets a process alone in the fleet restart for retained memory, and one whose peers all stop wait" do
    alone = fleet("web-1:1").acquire(60, peers: :serving_unless_alone)
    expect(alone.granted).to be(true)
    fleet("web-1:1").release(alone.key)

    live_process("web-2:1", quiet: true) # quiet: restarting or stopping
    waiting = fleet("web-1:1").acquire(60, peers: :serving_unless_alone)
    expect(waiting).to have_attributes(granted: false, denial: :sole_process, text: include("waits for one to serve"))

    live_process("web-3:1")
    expect(fleet("web-1:1").acquire(60, peers: :serving_unless_alone).granted).to be(true)
  end

  it "answers :redis_unavailable when Redis is down" do
    redis_server.stop
    answer = fleet("web-5:1").acquire(60, peers: :any)
    expect(answer).to have_attributes(granted: false, denial: :redis_unavailable,
                                      text: start_with("Redis is unavailable"))
  ensure
    redis_server.start
  end
end
