# frozen_string_literal: true

require "spec_helper"

# The one-line verdict a restart logs (leak, fragmentation or live memory), the evidence a figure carries, and
# the fragmentation figures read off this very process (its GC.stat and its allocator).
RSpec.describe SidekiqRust::Verdict do
  let(:mb) { 1024 * 1024 }

  def row(klass, jobs, retained, error: 50 * 1024, windows: 40)
    { class: klass, jobs: jobs, retained_per_job: retained, growth_per_job: nil, allocated_per_job: nil,
      retained_error: error, windows: windows }
  end

  let(:tight) do
    { rss: 500 * mb, live: 450 * mb, allocator: "glibc", allocator_free: 50 * mb, heap_fragmentation: 0.1 }
  end

  it "names a leak in the class that explains the most retained memory, with its evidence" do
    rows = [row("BigJob", 10, 8 * mb), row("LeakJob", 100, 3 * mb), row("PingJob", 900, 0)]
    line = described_class.line(rows: rows, fragmentation: tight)
    expect(line).to eq("leak in LeakJob: 3.0MB/job ±50KB, 100 jobs, 40 windows (300MB retained in all)")
    expect(SidekiqRust::Report.strongest(rows)[:class]).to eq("LeakJob")
  end

  it "never names a class the figures cannot tell from zero, nor one that explains little of the memory" do
    expect(SidekiqRust::Report.strongest([row("PingJob", 900, 0), row("NewJob", 1, nil)])).to be_nil
    small = [row("CacheJob", 10, 1 * mb)] # 10 MB of 450 MB live
    expect(described_class.line(rows: small, fragmentation: tight))
      .to start_with("live memory: 450MB in use and 0MB of Ruby's heap, no class's retained explains it")
    expect(described_class.line(rows: [], fragmentation: tight)).to include("no class has a retained figure yet")
  end

  it "says fragmentation when the allocator or Ruby's heap holds the memory, with what the last reclaim gave back" do
    glibc = { rss: 600 * mb, live: 120 * mb, allocator: "glibc", allocator_free: 480 * mb, heap_fragmentation: 0.2,
              ruby_heap: 50 * mb }
    line = described_class.line(rows: [row("PingJob", 10, 0)], fragmentation: glibc,
                                last_reclaim: { before: 600 * mb, after: 450 * mb })
    expect(line).to eq("fragmentation: the allocator holds 480MB free (80% of RSS), Ruby's heap is 20% empty " \
                       "slots (10MB); the last reclaim gave back 25%: #{described_class::JEMALLOC_HINT}")
    jemalloc = glibc.merge(allocator: "jemalloc")
    expect(described_class.line(rows: [], fragmentation: jemalloc)).to end_with(described_class::DECAY_HINT)
    heap = { rss: 300 * mb, live: 130 * mb, allocator: "glibc", allocator_free: 20 * mb, heap_fragmentation: 0.6,
             ruby_heap: 150 * mb }
    expect(described_class.line(rows: [], fragmentation: heap))
      .to include("Ruby's heap is 60% empty slots (90MB): GC.compact")
    # Empty slots of a small heap are no fragmentation of a process whose memory is live (a 1.6 GB leak, say).
    leaky = { rss: 1600 * mb, live: 1550 * mb, allocator: "glibc", allocator_free: 23 * mb, heap_fragmentation: 0.65,
              ruby_heap: 20 * mb }
    expect(described_class.line(rows: [], fragmentation: leaky)).to start_with("live memory: 1550MB in use")
  end

  describe SidekiqRust::Fragmentation do
    it "reads this process's Ruby heap and allocator figures" do
      figures = described_class.read
      expect(figures[:rss]).to be > 10 * mb
      expect(figures[:heap_fragmentation]).to be_between(0.0, 1.0)
      expect(figures[:heap_live_slots]).to be_between(1, figures[:heap_slots])
      expect(figures[:allocator]).to eq(SidekiqRust::Allocator.name)
      expect(figures[:live]).to be_between(1 * mb, figures[:rss])
      expect(figures[:allocator_free]).to be_between(0, figures[:rss])
      expect(figures[:ruby_heap]).to be_between(GC::INTERNAL_CONSTANTS[:HEAP_PAGE_SIZE], figures[:rss])
    end

    it "sees Ruby's heap empty out when most of its objects die" do
      GC.start
      before = described_class.ruby_heap[:heap_fragmentation]
      # Every 20th object survives: the pages that held the other 19 stay, mostly empty. Made in a thread, whose
      # stack goes with it: Ruby 3.4 marks the machine stack conservatively, and a stale pointer to the temporary
      # array left there kept all 400,000 alive.
      kept = Thread.new do
        survivors = []
        Array.new(400_000) { |i| "s#{i}" }.each_with_index { |s, i| survivors << s if (i % 20).zero? }
        survivors
      end.value
      GC.start
      after = described_class.ruby_heap[:heap_fragmentation]
      expect(after).to be > before
      expect(after).to be > 0.3
      expect(kept.size).to eq(20_000)
    end
  end
end
