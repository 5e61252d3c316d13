# frozen_string_literal: true

require "spec_helper"
require "logger"
require "stringio"

# The middleware and the guard in this process, without Redis: dry-run settings, so nothing is signalled.
RSpec.describe SidekiqRust::Middleware do
  let(:log) { StringIO.new }
  let(:on_restart) { ->(_event) { raise "the team's callback is broken" } }
  let(:guard) { SidekiqRust.guard }

  let(:max_rss) { 10 } # this Ruby is far above: every check is over the limit

  around do |example|
    SidekiqRust.configure do |c|
      c.max_rss = max_rss
      c.hard_max_rss = nil # the soft limit's path (:auto would put this Ruby over a hard limit too)
      c.grace_time = 0
      c.reclaim = false
      c.dry_run = true
      c.loop_window = 0 # a fresh process over its limit is a restart loop otherwise
      c.on_restart = on_restart
      c.logger = Logger.new(log)
    end
    SidekiqRust.start_guard
    example.run
  ensure
    SidekiqRust.reset_configuration
  end

  def run_job(klass = "GrowJob", &block)
    described_class.new.call(Object.new, { "class" => klass, "jid" => "jid-#{klass}" }, "default", &block)
  end

  it "returns the job's value and counts it in and out" do
    busy_inside = nil
    expect(run_job { busy_inside = guard.busy; :result }).to eq(:result)
    expect(busy_inside).to eq(1)
    expect(guard.busy).to eq(0)
  end

  it "lets the job's own exception through unchanged and still counts it out" do
    error = Class.new(StandardError)
    expect { run_job { raise error, "job failed" } }.to raise_error(error, "job failed")
    expect(guard.busy).to eq(0)
  end

  it "names a job by ActiveJob's wrapped class when there is one, and lists the jobs in flight" do
    inside = nil
    described_class.new.call(Object.new, { "class" => "ActiveJob::QueueAdapters::SidekiqAdapter::JobWrapper",
                                           "wrapped" => "ReportJob", "jid" => "abc123" }, "default") do
      sleep 0.05
      inside = guard.in_flight
    end
    expect(inside.size).to eq(1)
    expect(inside.first).to include(class: "ReportJob", jid: "abc123")
    expect(inside.first[:running_s]).to be >= 0.0
    expect(guard.in_flight).to eq([])
    expect(SidekiqRust.report).to match([include(class: "ReportJob", jobs: 1)])
  end

  it "keeps the guard's own failures (a broken on_restart) out of the job, and logs them" do
    expect(run_job { :fine }).to eq(:fine)
    deadline = Time.now + 10
    sleep 0.05 until log.string.include?("on_restart") || Time.now > deadline
    expect(log.string).to include("dry run: would restart").and include("reason=max_rss")
    expect(log.string).to include("error in on_restart: RuntimeError: the team's callback is broken")
  end

  context "with room under the limit", allocator: true do
    let(:max_rss) { 100_000 }
    let(:on_restart) { nil }
    let(:mb) { 1024 * 1024 }

    # Windows with varied mixes of a leaking and a light class, each closed by a measuring reclaim.
    it "fits retained and growth per job for each class, and allocated per job under jemalloc" do
      kept = []
      15.times do |i|
        (1 + (i % 3)).times { run_job("LeakJob") { kept << ("l" * ((2 * mb) - 1)) } }
        (1 + ((i * 2) % 5)).times { run_job("LightJob") { :ok } }
        sleep 0.03 # the next job's end reads RSS: a growth window
        run_job("LightJob") { :ok }
        expect(guard.measure(force: true)).to be(true)
      end
      rows = SidekiqRust.report
      expect(rows.map { |r| r[:class] }).to eq(%w[LeakJob LightJob])
      leak, light = rows
      expect(leak[:jobs]).to eq(30)
      expect(leak[:retained_per_job]).to be_within(0.3 * 2 * mb).of(2 * mb)
      expect(leak[:growth_per_job]).to be_within(0.3 * 2 * mb).of(2 * mb)
      expect(light[:retained_per_job]).to be < 256 * 1024
      if SidekiqRust::Allocator.name == "jemalloc"
        expect(leak[:allocated_per_job]).to be_within(0.1 * 2 * mb).of(2 * mb)
        expect(light[:allocated_per_job]).to be < 100 * 1024
      else
        expect(leak[:allocated_per_job]).to be_nil
      end
    end
  end

  it "does nothing before the guard starts (and in client processes)" do
    SidekiqRust.stop_guard
    expect(run_job { 42 }).to eq(42)
  end
end
