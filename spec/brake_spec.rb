# frozen_string_literal: true

require "spec_helper"

# The brake's gate, in one process (threads, no Redis): a thread whose job admission held waits for room, and
# only a running job's end, a reading or a reclaim (#wake) lets it look again, not another thread handing its
# permit back (else held threads wake each other and fetch the held job again and again).
RSpec.describe SidekiqRust::Brake do
  let(:settings) { SidekiqRust::Configuration.new.tap { |c| c.max_rss = 10_000 }.resolve(cgroup: nil) }
  let(:native) do
    SidekiqRust::Native::Guard.new(SidekiqRust::Guard.native_settings(settings, kill_after: 40.0, concurrency: 2))
  end
  let(:log) { SidekiqRust::Guard::Log.new(settings, logger: Logger.new(nil), tag: "spec") }
  let(:brake) do
    described_class.new(native, settings: settings, log: log, history: nil, adapter: SidekiqRust::SidekiqAdapter,
                                tag: "spec", concurrency: 2)
  end

  def waits(mark)
    started = Process.clock_gettime(Process::CLOCK_MONOTONIC)
    thread = Thread.new { brake.wait_for_room(mark) }
    yield if block_given?
    thread.join(described_class::HELD_WAIT + 5)
    Process.clock_gettime(Process::CLOCK_MONOTONIC) - started
  end

  it "wakes a held thread at a job's end, not when another thread hands its permit back" do
    mark = brake.room_mark
    expect(brake.admit).to be(true)
    elapsed = waits(mark) do
      sleep 0.2
      brake.release
      sleep 0.5
      brake.wake
    end
    expect(elapsed).to be_between(0.6, described_class::HELD_WAIT - 1)
  end

  it "does not miss a wake between the hold and the wait" do
    mark = brake.room_mark
    brake.wake
    expect(waits(mark)).to be < 1
  end
end
