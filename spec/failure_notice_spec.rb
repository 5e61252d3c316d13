# frozen_string_literal: true

require "spec_helper"
require "logger"
require "stringio"

# A failure that repeats is said once, and its recovery once: the notice itself, then the sites that use it
# against a real redis-server stopped in the middle of the example and started again.
RSpec.describe SidekiqRust::FailureNotice do
  let(:out) { StringIO.new }
  let(:logger) { Logger.new(out) }

  def lines(text)
    out.string.lines.grep(/#{Regexp.escape(text)}/)
  end

  it "says a failure once until it works again, and its recovery once" do
    notice = described_class.new(logger, failure: "could not read X", recovery: "X is read again", tag: "web-1:1")
    notice.succeeded
    expect(out.string).to eq("")
    3.times { |i| notice.failed(IOError.new("closed #{i}")) }
    expect(notice.failing?).to be(true)
    notice.succeeded
    notice.succeeded
    notice.failed("no such file")
    expect(lines("could not read X").map { |l| l[/sidekiq_rust: .*/] })
      .to eq(["sidekiq_rust: could not read X: IOError: closed 0 identity=web-1:1",
              "sidekiq_rust: could not read X: no such file identity=web-1:1"])
    expect(lines("could not read X")).to all(start_with("W, ")) # a warning
    expect(lines("X is read again").size).to eq(1)
    expect(lines("X is read again").first).to start_with("I, ").and include("(after 3 failure(s) in 0s)")
  end

  it "never raises, whatever the logger does" do
    broken = Object.new
    def broken.warn(*) = raise("disk full")
    def broken.info(*) = raise("disk full")
    notice = described_class.new(broken, failure: "f", recovery: "r")
    expect { notice.failed(RuntimeError.new("x")) }.not_to raise_error
    expect { notice.succeeded }.not_to raise_error
  end

  context "at each Redis site, with redis-server stopped and started again" do
    include E2E

    let(:settings) { guard_settings(check_interval: 0.01, logger: logger) }

    def outage
      redis_server.stop
      yield
    ensure
      redis_server.start
    end

    it "History: could not write the memory history, then written again" do
      history = SidekiqRust::History.new(settings, identity: "web-4:1")
      history.record(1, :serving, now: 1.0)
      outage { 3.times { |i| history.record(1, :serving, now: 2.0 + i) } }
      2.times { |i| history.record(1, :serving, now: 10.0 + i) }
      expect(lines("could not write the memory history").size).to eq(1)
      expect(lines("the memory history is written again").size).to eq(1)
      expect(lines("the memory history is written again").first).to include("(after 3 failure(s)")
    end

    it "Fleet: the restart-loop check is off while Redis cannot say, and on again after" do
      fleet = SidekiqRust::Fleet.new(settings, tag: "web-5:1")
      expect(fleet.memory_restart_recent?).to be(false)
      outage do
        expect(fleet.memory_restart_recent?).to be(false)
        fleet.mark_memory_restart(60)
      end
      fleet.mark_memory_restart(60)
      expect(fleet.memory_restart_recent?).to be(true)
      expect(lines("the restart-loop check is off").size).to eq(1)
      expect(lines("the restart-loop check is off").first).to include("identity=web-5:1")
      expect(lines("the restart-loop check reads and writes Redis again").size).to eq(1)
    end

    it "Brake: the paused mark that could not be written, then written again" do
      config = SidekiqRust::Configuration.new
      config.max_rss = 10_000
      native = SidekiqRust::Native::Guard.new(SidekiqRust::Guard.native_settings(config.resolve(cgroup: nil),
                                                                                 kill_after: 40.0, concurrency: 2))
      native.pressure = 50.0
      expect(native.sample(false)[:action]).to eq(:pause)
      log = SidekiqRust::Guard::Log.new(settings, logger: logger, tag: "web-6:1")
      brake = SidekiqRust::Brake.new(native, settings: settings, log: log, history: nil,
                                             adapter: SidekiqRust::SidekiqAdapter, tag: "web-6:1", concurrency: 2)
      outage { 3.times { brake.refresh } }
      brake.refresh
      expect(redis_call("EXISTS", "#{SidekiqRust::Brake::PAUSED_PREFIX}web-6:1")).to eq(1)
      expect(lines("could not mark this process paused in Redis").size).to eq(1)
      expect(lines("this process's paused mark is written to Redis again").size).to eq(1)
    end
  end
end
