# frozen_string_literal: true

require "spec_helper"
require_relative "../bench/support/redis_load"

# What a guarded process's checks cost Redis, by Redis's own counters (INFO commandstats) on a real redis-server:
# at most what Sidekiq's own heartbeat costs per beat (measured in the same run, from a real `sidekiq` process
# without the guard), and every key still expiring: after the first check, and after Redis lost everything
# (FLUSHALL) mid-run. docs/redis.md has the figures.
RSpec.describe "Redis commands per check (Sidekiq #{Sidekiq::VERSION})" do
  include E2E

  let(:interval) { 5 }
  let(:settings) { guard_settings(check_interval: interval) }
  let(:identity) { "host-1:#{rand(1 << 30)}:spec" }
  let(:history) { SidekiqRust::History.new(settings, identity: identity) }

  # The per-class figures after `jobs` jobs: new figures at every check, as a busy process's.
  def rows(jobs)
    [{ class: "GrowJob", jobs: jobs, retained_per_job: 1_048_576, growth_per_job: 2_097_152, allocated_per_job: nil,
       retained_error: 1024, windows: 3 }]
  end

  # What the monitor does at each check: the reading (History#record) and the per-class figures (Guard#publish).
  def check(at, jobs)
    history.record(150 * 1_048_576, :serving, brake: { paused: false, seconds: 0.0 }, now: at)
    SidekiqRust::Report.publish(identity, rows(jobs), ttl: 3 * interval, now: at)
  end

  def expect_every_key_expires
    keys = sidekiq_rust_keys
    expect(keys).to include(SidekiqRust::History::READINGS_PREFIX + identity,
                            SidekiqRust::History::PROCESS_PREFIX + identity, SidekiqRust::History::INDEX,
                            SidekiqRust::Report::KEY_PREFIX + identity, SidekiqRust::Report::INDEX_KEY)
    expect(keys.to_h { |key| [key, redis_call("TTL", key)] }).to all(satisfy { |_, ttl| ttl.positive? })
  end

  it "sends fewer commands per check than Sidekiq's heartbeat per beat, and every key expires, even after a FLUSHALL" do
    now = Time.now.to_f
    check(now, 1)
    expect_every_key_expires

    # An hour of checks (two of them after Redis lost every key), each key's expiry refreshed every REFRESH_EVERY.
    checks = 3600 / interval
    before = RedisLoad.commandstats
    (1..checks).each do |i|
      redis_call("FLUSHALL") if i == checks / 2
      check(now + (i * interval), i + 1)
      expect_every_key_expires if i == checks / 2
    end
    counts = RedisLoad.delta(before, RedisLoad.commandstats)
    ours = RedisLoad.total(counts, except: %w[info flushall scan ttl]).fdiv(checks)

    # The same Redis, a real `sidekiq` process without the guard: its heartbeat's commands per beat.
    redis_server.flushall
    pid = RedisLoad.spawn_plain(redis_server.socket, log: File.join(e2e_dir, "plain.log"))
    begin
      RedisLoad.wait_for_processes(1, timeout: 60)
      beat = RedisLoad.heartbeat(beats: 3)
    ensure
      RedisLoad.stop([pid])
    end

    warn format("commands per check: sidekiq_rust %<ours>.2f (%<counts>s), Sidekiq's heartbeat %<beat>.2f per beat " \
                "(%<commands>s)", ours: ours, counts: counts.except("info", "flushall", "scan", "ttl"),
                                  beat: beat[:per_beat], commands: beat[:commands])
    expect(ours).to be <= beat[:per_beat]
    # A check: RPUSH, LTRIM, HSET, ZADD and SET XX; the expiries once a minute.
    expect(ours).to be < 6
  end
end
