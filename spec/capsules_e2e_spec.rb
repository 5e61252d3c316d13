# frozen_string_literal: true

require "spec_helper"

# End to end: a real `sidekiq` process with a second capsule (Sidekiq 7+) whose middleware chain was copied
# before sidekiq_rust registered, as an earlier initializer does; a real redis-server.
RSpec.describe "the memory guard with Sidekiq capsules (Sidekiq #{Sidekiq::VERSION})" do
  include E2E

  before do
    skip "Sidekiq #{Sidekiq::VERSION} has no capsules (7.0+)" if Sidekiq::VERSION.to_i < 7
  end

  it "counts every capsule's threads in the concurrency the doctor compares with" do
    process = sidekiq("capsuled", guard: { "max_rss" => 8000 }, concurrency: 2, env: { "E2E_CAPSULE" => "3" })
    process.wait_for_log(/e2e: Middleware in 3 of 3 chain\(s\), concurrency 5/)
  end

  it "waits for a job of another capsule before TERM: the busy count covers every capsule" do
    marker = File.join(@e2e_dir, "job-finished")
    capsuled = sidekiq("capsuled", guard: { "max_rss" => 10, "shutdown_wait" => 40 }, timeout: 1,
                                   env: { "E2E_CAPSULE" => "1" })
    Sidekiq::Client.push("class" => "SleepJob", "args" => [15, marker], "queue" => "solo")
    capsuled.wait_for_log(/SleepJob started/)
    # Alone, it may not restart; once another process serves, it quiets and waits for the capsule's job.
    sidekiq("steady", guard: { "max_rss" => 8000 })
    status = capsuled.wait_exit(timeout: 90)
    expect(status.exitstatus).to eq(0)
    expect(File.exist?(marker)).to be(true)
    log = capsuled.log
    expect(log).to match(/restarting: quiet \(TSTP\)/)
    # Without the count, TERM would come 2.5 s after quiet, and Sidekiq (-t 1) would push the job back unfinished.
    expect(log.index("SleepJob elapsed=") || log.index(/SleepJob.*done/)).to be < log.index("restarting: stop (TERM)")
    expect(redis_call("LLEN", "queue:solo")).to eq(0)
  end
end
