# frozen_string_literal: true

require "fileutils"

# Runs commands (jobs) a few at a time, each writing its output to a file of its own (LOG_DIR/NAME.log) that is
# printed whole when the job ends, so that the output of jobs running side by side never interleaves. The summary
# at the end has each job's exit status, time and RSpec's closing line ("N examples, M failures"). A job added
# with `alone: true` starts only when no other job runs, and nothing starts beside it.
class SpecJobs
  LOG_DIR = File.expand_path("../tmp/spec-jobs", __dir__)
  RSPEC_TOTALS = /^\d+ examples?, \d+ failures?.*$/
  FAILURE_LINES = 80

  Job = Struct.new(:name, :env, :command, :alone, :log, :pid, :started, :status, :seconds, keyword_init: true) do
    def success?
      status&.success?
    end

    def totals
      File.read(log).scan(RSPEC_TOTALS).last || "(no RSpec totals)"
    end

    # RSpec's "Failures:" section (cut at FAILURE_LINES lines) and its "Failed examples:" list, so that the end of
    # the run's output names what failed.
    def failures
      text = File.read(log)
      section = text[/^Failures:\n.*?(?=^Finished in )/m].to_s.lines.first(FAILURE_LINES).join
      examples = text.scan(/^rspec \.\/spec\S+.*$/)
      [section, examples.join("\n")].reject(&:empty?).join("\n")
    end
  end

  def initialize(at_once:, out: $stdout)
    @at_once = [at_once, 1].max
    @out = out
    @jobs = []
  end

  # `env` is the job's whole environment (nothing else of this process's is passed on).
  def add(name, env, *command, alone: false)
    @jobs << Job.new(name: name, env: env, command: command, alone: alone,
                     log: File.join(LOG_DIR, "#{name.tr(':', '-')}.log"))
  end

  # Runs every job in the order added, at most `at_once` at a time (a job `alone` by itself); true when all
  # exited 0.
  def run
    FileUtils.mkdir_p(LOG_DIR)
    waiting = @jobs.dup
    running = {}
    until waiting.empty? && running.empty?
      start(waiting.shift, running) while !waiting.empty? && room_for?(waiting.first, running)
      finish(running)
    end
    summary
    @jobs.all?(&:success?)
  ensure
    running&.each_key { |pid| stop(pid) }
  end

  private

  def room_for?(job, running)
    return running.empty? if job.alone

    running.size < @at_once && running.each_value.none?(&:alone)
  end

  def start(job, running)
    beside = job.alone ? "alone" : "#{running.size + 1} running"
    @out.puts "---- #{job.name} started (#{beside}): #{job.command.join(' ')}"
    job.started = monotonic
    job.pid = Process.spawn(job.env, *job.command, out: job.log, err: %i[child out], in: File::NULL,
                                        unsetenv_others: true)
    running[job.pid] = job
  end

  # Waits for any job to end and prints its output.
  def finish(running)
    pid, status = Process.wait2(-1)
    job = running.delete(pid)
    return unless job

    job.status = status
    job.seconds = monotonic - job.started
    @out.puts "==== #{job.name}: #{outcome(job)}, #{job.command.join(' ')}"
    @out.write File.read(job.log)
    @out.puts "==== end of #{job.name} (#{File.basename(job.log)} in #{LOG_DIR})"
    @out.flush
  end

  # A job still running when the run is interrupted.
  def stop(pid)
    Process.kill(:TERM, pid)
  rescue Errno::ESRCH
    nil
  end

  def summary
    @out.puts "\n==== spec jobs (#{@at_once} at a time)"
    @jobs.each do |job|
      @out.puts format("%-20s %-30s %s", job.name, outcome(job), job.totals)
    end
    @jobs.select { |job| job.status && !job.success? }.each do |job|
      @out.puts "\n==== what failed in #{job.name}\n#{job.failures}"
    end
    @out.flush
  end

  def outcome(job)
    state = if job.success? then "ok"
            elsif job.status.signaled? then "FAILED (signal #{job.status.termsig})"
            else "FAILED (exit #{job.status.exitstatus})"
            end
    "#{state} in #{format('%d min %02d s', job.seconds / 60, job.seconds % 60)}"
  end

  def monotonic
    Process.clock_gettime(Process::CLOCK_MONOTONIC)
  end
end
