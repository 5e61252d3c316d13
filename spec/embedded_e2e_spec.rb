# frozen_string_literal: true

require "spec_helper"

# End to end: Sidekiq embedded (Sidekiq.configure_embed, Sidekiq 7+) in a plain Ruby process that stands for
# Puma or a console, beside a real `sidekiq` process; a real redis-server.
RSpec.describe "the memory guard in an embedded Sidekiq (Sidekiq #{Sidekiq::VERSION})" do
  include E2E

  before do
    if Sidekiq::VERSION.to_i < 7
      skip "Sidekiq #{Sidekiq::VERSION} has no embedded mode (Sidekiq.configure_embed is 7.0+)"
    end
  end

  # Below what any Sidekiq process needs to boot: over the limit from the start.
  let(:tiny) { { "max_rss" => 10, "shutdown_wait" => 20 } }

  def host_entry(host)
    live_processes.find { |process| process["pid"] == host.pid }
  end

  it "never signals its host: without the embed instance it reclaims, refuses the restart and says why",
     allocator: true do
    host = sidekiq("host", embedded: true, guard: tiny.merge("reclaim" => true))
    steady = sidekiq("steady", guard: { "max_rss" => 8000 })
    wait_for_fleet(2)

    host.wait_for_log(/reclaimed \d+MB \(GC \+ (no )?purge\): still over the limit/)
    host.wait_for_log(/over the limit but not restarting: Sidekiq runs embedded in this process \(pid #{host.pid}\), /)
    expect(host.log).to include("pass the instance of Sidekiq.configure_embed to SidekiqRust.embed")
    # Still serving, never quieted, never signalled: the host lives on and Sidekiq in it takes jobs.
    push("SleepJob", 0.2, count: 20)
    eventually(timeout: 60, what: "all 20 jobs done") { done_count == 20 }
    expect(redis_call("LRANGE", "e2e:done_by", 0, -1)).to include("host:sleep")
    expect(host_entry(host)["quiet"]).to eq("false")
    expect(host.alive?).to be(true)
    expect(steady.alive?).to be(true)
    expect(host.log).not_to match(/sidekiq_rust: (restarting|stopping embedded)/)
    expect(host.events).to eq([])
  end

  it "quiets and stops the embedded Sidekiq through its instance; the host goes on and no job is lost" do
    steady = sidekiq("steady", guard: { "max_rss" => 8000 })
    wait_for_fleet(1)
    host = sidekiq("host", embedded: true, guard: tiny, env: { "E2E_EMBED_HANDLE" => "1" })
    push("SleepJob", 1, count: 12)

    host.wait_for_log(/stopping embedded Sidekiq: quiet, then stop .* this process \(pid #{host.pid}\) goes on/,
                      timeout: 60)
    host.wait_for_log(/stopped embedded Sidekiq/, timeout: 60)
    stopped_at = host.log.length
    eventually(timeout: 30, what: "the host alive after the stop") { host.log[stopped_at..].include?("host: alive") }
    expect(host.alive?).to be(true)
    expect(host.log).not_to include("restarting: quiet (TSTP)")
    expect(host.events.size).to eq(1)
    expect(host.events.first).to include("event" => "restart", "reason" => "max_rss", "pid" => host.pid)

    eventually(timeout: 90, what: "all 12 jobs done") { done_count == 12 }
    eventually(timeout: 30, what: "the host gone from the ProcessSet") { host_entry(host).nil? }
    expect(steady.alive?).to be(true)
    # The slot was given back: the fleet can restart another process.
    expect(SidekiqRust::Fleet.all_holders(1)).to eq([])
  end
end
