# frozen_string_literal: true

require "spec_helper"

# SidekiqRust::Fleet's restart slots against a real redis-server: what #acquire answers.
RSpec.describe SidekiqRust::Fleet do
  include E2E

  let(:settings) { guard_settings(check_interval: 5) }

  def fleet(tag)
    described_class.new(settings, tag: tag, logger: Logger.new(File::NULL))
  end

  it "answers a granted slot with its key, and a refusal with its denial and why" do
    sole = fleet("web-2:1").acquire(60, require_other: true) # no other process serves: the slot it took goes back
    expect(sole).to have_attributes(granted: false, key: nil, denial: :sole_process,
                                    text: include("no other live Sidekiq process is serving"))

    granted = fleet("web-1:1").acquire(60, require_other: false)
    expect(granted).to have_attributes(granted: true, key: start_with(described_class::KEY_PREFIX), denial: nil,
                                       text: nil)

    (settings.max_concurrent_restarts - 1).times { |i| fleet("web-3:#{i}").acquire(60, require_other: false) }
    full = fleet("web-4:1").acquire(60, require_other: false)
    expect(full).to have_attributes(granted: false, denial: :no_slot, text: include("restart slot(s) are held"))
  end

  it "answers :redis_unavailable when Redis is down" do
    redis_server.stop
    answer = fleet("web-5:1").acquire(60, require_other: false)
    expect(answer).to have_attributes(granted: false, denial: :redis_unavailable,
                                      text: start_with("Redis is unavailable"))
  ensure
    redis_server.start
  end
end
