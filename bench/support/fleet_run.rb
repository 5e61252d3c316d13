# frozen_string_literal: true

require "sidekiq/api"
require_relative "../../spec/support/supervisor"
require_relative "fleet_process"

# One strategy's run of bench/fleet_compare.rb: a supervised fleet (restarted at exit, as systemd would) of real
# `sidekiq` processes, the workload pushed at a steady pace in its fixed order, every process's RSS read from
# /proc every SAMPLE seconds, until every job is done (or dead, or in the retry set) or the time cap; then the
# fleet is stopped and Redis counted.
class FleetRun
  SAMPLE = 0.5

  # `twice`: jobs that finished a second time (their jid was already done).
  Result = Struct.new(:strategy, :samples, :pushed, :done, :twice, :dead, :retries, :queued, :restarts, :sigkills,
                      :elapsed, :latencies, :capped, keyword_init: true) do
    def lost
      pushed - done - dead - retries - queued
    end

    def rss_values
      samples.map(&:last)
    end
  end

  # `strategy`: key, env (of every process), cron (seconds between restarts of a process, or nil).
  # `workload`: [class, args] in push order, pushed evenly over `seconds`; `cap`: seconds after the first push.
  def initialize(strategy, redis:, dir:, workload:, seconds:, cap:, processes:, concurrency:, timeout: 10)
    @strategy = strategy
    @redis = redis
    @dir = dir
    @workload = workload
    @seconds = seconds
    @cap = cap
    @size = processes
    @concurrency = concurrency
    @timeout = timeout
    @samples = []
  end

  def run
    @redis.flushall
    fleet = Supervisor.new(@size, prefix: @strategy.key) do |name|
      FleetProcess.new(name, redis: @redis, dir: @dir, env: @strategy.env, concurrency: @concurrency,
                             timeout: @timeout)
    end
    fleet.start
    @started = Time.now.to_f
    threads = [Thread.new { sample(fleet) }]
    threads << Thread.new { cron(fleet) } if @strategy.cron
    push
    capped = !wait_until_accounted
    @running = false
    threads.each(&:join)
    finish(fleet, capped)
  rescue StandardError, Interrupt
    @running = false
    fleet&.stop
    fleet&.processes&.each(&:stop)
    raise
  end

  private

  def now
    Time.now.to_f - @started
  end

  def redis_call(*command)
    Sidekiq.redis { |conn| conn.call(*command) }
  end

  # Job i is pushed at i * seconds / jobs.
  def push
    @running = true
    interval = @seconds.fdiv(@workload.size)
    @workload.each_with_index do |(klass, args), i|
      delay = (i * interval) - now
      sleep delay if delay.positive?
      Sidekiq::Client.push("class" => klass, "args" => args, "queue" => "default")
    end
  end

  def accounted
    redis_call("SCARD", "fleet:done") + Sidekiq::DeadSet.new.size + Sidekiq::RetrySet.new.size
  end

  def wait_until_accounted
    loop do
      return true if accounted >= @workload.size
      return false if now > @cap

      sleep 0.5
    end
  end

  # [seconds since the first push, slot (0-based), RSS MB] for every live process.
  def sample(fleet)
    while @running
      t = now
      fleet.processes.each do |process|
        next if process.status

        rss = SidekiqRust::Memory.rss(process.pid) rescue nil # rubocop:disable Style/RescueModifier
        @samples << [t, slot_of(process), rss / 1_048_576.0] if rss&.positive?
      end
      sleep SAMPLE
    end
  end

  def slot_of(process)
    Integer(process.name[/(\d+)-\d+\z/, 1]) - 1
  end

  # The cron approach: each process is sent TERM every `cron` seconds, the processes staggered evenly over it.
  def cron(fleet)
    every = @strategy.cron
    due = Array.new(@size) { |slot| every * (slot + 1) / @size }
    while @running
      due.each_with_index do |at, slot|
        next if now < at

        due[slot] = at + every
        current = fleet.processes.select { |p| slot_of(p) == slot }.last
        terminate(current) if current && current.status.nil?
      end
      sleep 0.2
    end
  end

  def terminate(process)
    Process.kill("TERM", process.pid)
  rescue Errno::ESRCH
    nil # it exited meanwhile
  end

  def finish(fleet, capped)
    last = finished_lines.map(&:first).max
    elapsed = last ? last - @started : now
    fleet.stop
    restarts = fleet.processes.size - @size
    fleet.processes.map { |p| Thread.new { p.stop } }.each(&:join)
    Result.new(strategy: @strategy, samples: @samples, pushed: @workload.size, done: redis_call("SCARD", "fleet:done"),
               twice: redis_call("GET", "fleet:twice").to_i, dead: Sidekiq::DeadSet.new.size, retries: Sidekiq::RetrySet.new.size,
               queued: redis_call("LLEN", "queue:default"), restarts: restarts,
               sigkills: fleet.processes.count(&:killed?), elapsed: elapsed,
               latencies: finished_lines.map(&:last), capped: capped)
  end

  def finished_lines
    redis_call("LRANGE", "fleet:finished", 0, -1).map { |line| line.split.map(&:to_f) }
  end
end
