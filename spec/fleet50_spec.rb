# frozen_string_literal: true

require "spec_helper"
require "rack/mock"
require "sidekiq_rust/metrics"
require_relative "../bench/support/redis_load"

# The 50-process fleet of bench/redis_load.rb (50 real `sidekiq` processes, concurrency 1, 5 simulated hosts, one
# redis-server), checked: the guard's commands per check at most the heartbeat's per beat, a process's keys
# bounded, `sidekiq_rust metrics` under a second and the Memory tab under 300 ms server side. About 5 minutes:
# excluded by default (spec_helper), run with `bundle exec rspec --tag fleet50`.
RSpec.describe "a 50-process fleet's Redis load (Sidekiq #{Sidekiq::VERSION})", fleet50: true do
  include E2E

  it "costs Redis less than Sidekiq's heartbeat, and reads back quickly" do
    r = RedisLoad::Fleet.new(redis: redis_server, dir: e2e_dir).run
    warn "fleet50: #{r.except(:hostnames).inspect}"
    expect(r[:hostnames]).to eq(%w[host-1 host-2 host-3 host-4 host-5])
    expect(r[:ours][:per_check]).to be <= r[:heartbeat][:per_beat]
    expect(r[:bytes][:total]).to be < 64 * 1024
    expect(r[:metrics][:processes]).to eq(50)
    expect(r[:metrics][:cli]).to be < 1.0
    expect(r[:tab][:cards]).to be >= 50
    expect(r[:tab][:seconds]).to be < 0.3
  end
end
