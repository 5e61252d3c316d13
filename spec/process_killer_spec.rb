# frozen_string_literal: true

require "spec_helper"
require "logger"
require "stringio"

# The middleware and the guard in this process, without Redis: dry-run settings, so nothing is signalled.
RSpec.describe SidekiqRust::ProcessKiller do
  let(:log) { StringIO.new }
  let(:on_restart) { ->(_event) { raise "the team's callback is broken" } }
  let(:guard) { SidekiqRust.guard }

  around do |example|
    SidekiqRust.configure do |c|
      c.max_rss = 10 # this Ruby is far above: every check is over the limit
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
    described_class.new.call(Object.new, { "class" => klass }, "default", &block)
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

  it "records which job class grew memory, named by ActiveJob's wrapped class when there is one" do
    guard.check # a baseline reading
    kept = nil
    run_job { kept = "g" * (30 * 1024 * 1024) }
    described_class.new.call(Object.new, { "class" => "ActiveJob::QueueAdapters::SidekiqAdapter::JobWrapper",
                                           "wrapped" => "ReportJob" }, "default") { :ok }
    report = SidekiqRust.report
    grow = report.find { |r| r[:class] == "GrowJob" }
    expect(grow).to include(count: 1)
    expect(grow[:total_growth]).to be >= 25 * 1024 * 1024
    expect(grow[:max_growth]).to eq(grow[:total_growth])
    expect(report.map { |r| r[:class] }).to include("ReportJob")
    expect(report.first[:class]).to eq("GrowJob")
    expect(kept.bytesize).to eq(30 * 1024 * 1024)
  end

  it "keeps the guard's own failures (a broken on_restart) out of the job, and logs them" do
    expect(run_job { :fine }).to eq(:fine)
    deadline = Time.now + 10
    sleep 0.05 until log.string.include?("on_restart") || Time.now > deadline
    expect(log.string).to include("dry run: would restart").and include("reason=soft_limit")
    expect(log.string).to include("error in on_restart: RuntimeError: the team's callback is broken")
  end

  it "does nothing before the guard starts (and in client processes)" do
    SidekiqRust.stop_guard
    expect(run_job { 42 }).to eq(42)
  end
end
