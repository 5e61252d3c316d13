# frozen_string_literal: true

require "spec_helper"

# Issue 19's workload in a real Sidekiq process at concurrency 5: a leaker keeping three 1 MiB strings a job, a
# churner building 200,000 short strings and dropping them, a ping, each sleeping 0.3 s, interleaved for about a
# minute with a measuring reclaim every second. The leaker must lead with its retained within 25% of the truth
# and the other two at 0, and the restart line name it with its evidence; bin/attribution_runs repeats it and counts.
RSpec.describe "the leaker named within a minute (Sidekiq #{Sidekiq::VERSION})", allocator: true do
  include E2E

  LEAK_STRINGS = 3
  LEAK_BYTES = LEAK_STRINGS * 1024 * 1024
  # bin/attribution_runs --minutes N --measure-interval S: the same workload for longer, measured less often
  # (the default interval is 60 s; the leaker then keeps about 1 GB a minute).
  MINUTES = Float(ENV.fetch("ATTRIBUTION_MINUTES", "1"))
  MEASURE_INTERVAL = Float(ENV.fetch("ATTRIBUTION_MEASURE_INTERVAL", "1"))
  ROUNDS = (300 * MINUTES).round
  KEPT_MB = ROUNDS * LEAK_STRINGS
  # bin/attribution_runs --order shuffled: the same jobs in a seeded random order (issue 28) rather than in turn.
  ORDER = ENV.fetch("ATTRIBUTION_ORDER", "turns")
  SEED = Integer(ENV.fetch("ATTRIBUTION_SEED", "28"))
  CHURNER = ENV.fetch("ATTRIBUTION_CHURNER", "StringChurnJob")
  JOBS = [["StringLeakJob", LEAK_STRINGS, 0.3], [CHURNER, 200_000, 0.3], ["PingJob", 0.3]].freeze

  def push_rounds
    jobs = JOBS * ROUNDS
    jobs = jobs.shuffle(random: Random.new(SEED)) if ORDER == "shuffled"
    jobs.each { |job| push(*job) }
  end

  # When the figure first spoke (the leader, within 25%, the others 0), seconds after the first push.
  def right?(rows)
    leak, *others = rows
    leak && leak[:class] == "StringLeakJob" && leak[:retained_per_job] &&
      (leak[:retained_per_job] - LEAK_BYTES).abs <= 0.25 * LEAK_BYTES &&
      others.size == 2 && others.all? { |r| r[:retained_per_job]&.zero? }
  end

  # Every run must show that no other class is ever named, and that the leader, when named, is not far off.
  # How often the figure is right (the leader within 25%, the others at 0) and how soon, and how often the
  # restart names the leaker, bin/attribution_runs counts over runs (README: "How soon it speaks").
  it "never names another class than the leaker, within about a minute and at the restart" do
    # The jobs keep about 900 MB a minute: under the limit, and (for a minute) under brake_at (0.9 of it); the
    # last leaker's 700 MB take the process over it. Longer runs keep more than brake_at: no brake there.
    guard = { "max_rss" => KEPT_MB + 700, "hard_max_rss" => KEPT_MB + 3100, "check_interval" => 1,
              "measure_interval" => MEASURE_INTERVAL, "require_other_process" => false }
    guard["brake"] = false if MINUTES > 1
    worker = sidekiq("minute", concurrency: 5, guard: guard)
    started = Process.clock_gettime(Process::CLOCK_MONOTONIC)
    push_rounds
    first_right = nil
    eventually(timeout: 240 * MINUTES, what: "all #{3 * ROUNDS} jobs done") do
      rows = SidekiqRust::Report.fleet
      first_right ||= Process.clock_gettime(Process::CLOCK_MONOTONIC) - started if right?(rows)
      done_count == 3 * ROUNDS
    end
    work = Process.clock_gettime(Process::CLOCK_MONOTONIC) - started
    rows = eventually(timeout: 30 + (2 * MEASURE_INTERVAL), what: "the figures of every job") do
      rows = SidekiqRust::Report.fleet
      rows if rows.sum { |r| r[:jobs] } == 3 * ROUNDS
    end
    summary = rows.map { |r| [r[:class], r[:retained_per_job], r[:retained_error], r[:windows]] }
    leader = rows.find { |r| r[:retained_per_job]&.positive? }
    record = { first_right: first_right, work: work, rows: summary, right: right?(rows), named: nil,
               other_led: !leader.nil? && leader[:class] != "StringLeakJob" }
    if leader
      expect(leader[:class]).to eq("StringLeakJob"), summary.inspect
      expect(leader[:retained_per_job]).to be_within(0.5 * LEAK_BYTES).of(LEAK_BYTES), summary.inspect
    end

    # One more leaker, of 700 MB, takes the process over its limit: the restart names the leaker (or no class),
    # with how strong the evidence is, in the log line and in on_restart.
    push("StringLeakJob", 700, 0.3)
    expect(worker.wait_exit(timeout: 90).exitstatus).to eq(0)
    line = worker.log[/.*restarting: quiet.*/]
    warn "restart: #{line}" if ENV["VERBOSE"]
    named = line[/top_retained=(\w+)\(/, 1]
    record[:named] = named
    expect([nil, "StringLeakJob"]).to include(named), line
    # No figure but the tested retained one names a class in the restart line (the RSS growth figure, which
    # named the churner first at 13-18 MB a job on a shuffled order, is not in it).
    expect(line).not_to include("top_growth")
    expect(line[/top_retained=.*/].scan(/(\w+Job)\(/).flatten - ["StringLeakJob"]).to be_empty, line
    expect(line).not_to match(/verdict="leak in (StringChurnJob|PingJob)/)
    event = worker.events.first
    if named
      expect(line).to match(%r{top_retained=StringLeakJob\(\d+\.\dMB/job ±\d+(\.\d)?[KM]B, \d+ jobs, \d+ windows\)})
      verdict = %r{verdict="leak in StringLeakJob: \d+\.\dMB/job ±\S+, \d+ jobs, \d+ windows \(\d+MB retained in all\)}
      expect(line).to match(verdict)
      expect(event["suspect"]).to include("class" => "StringLeakJob", "retained_error" => be_positive,
                                          "windows" => be >= 5)
      expect(event["verdict"]).to start_with("leak in StringLeakJob: ")
    else
      expect(event["suspect"]).to be_nil
    end
  ensure
    report_run(**record) if record
  end

  # One line per run, for bin/attribution_runs (ATTRIBUTION_RUNS_LOG) and VERBOSE.
  def report_run(first_right:, work:, rows:, right:, named:, other_led:)
    allocator = ENV.fetch("LD_PRELOAD", "").include?("jemalloc") ? "jemalloc" : "glibc"
    line = JSON.generate(sidekiq: Sidekiq::VERSION, allocator: allocator, order: ORDER, seed: SEED,
                         churner: CHURNER, minutes: MINUTES, measure_interval: MEASURE_INTERVAL, right: right,
                         other_led: other_led, restart_named: named == "StringLeakJob",
                         restart_other: !named.nil? && named != "StringLeakJob",
                         first_right_s: first_right&.round(1), work_s: work.round(1), rows: rows)
    File.write(ENV["ATTRIBUTION_RUNS_LOG"], "#{line}\n", mode: "a") if ENV["ATTRIBUTION_RUNS_LOG"]
    warn "attribution: #{line}" if ENV["VERBOSE"]
  end
end
