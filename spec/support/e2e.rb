# frozen_string_literal: true

require "fileutils"
require "sidekiq"
Redis.silence_deprecations = true if defined?(Redis) && Redis.respond_to?(:silence_deprecations=)

# Helpers of the end-to-end specs: one real redis-server for the suite, real Sidekiq processes per example.
module E2E
  class << self
    def redis
      @redis ||= begin
        server = RedisServer.new.start
        Sidekiq.configure_client { |config| config.redis = { path: server.socket } }
        Sidekiq.logger.level = Logger::WARN
        server
      end
    end

    def shutdown
      @redis&.cleanup
      @redis = nil
    end
  end

  def redis_server
    E2E.redis
  end

  # Starts a Sidekiq process (stopped after the example).
  def sidekiq(name, **options)
    process = SidekiqProcess.new(name, redis: redis_server, dir: @e2e_dir, **options)
    @e2e_processes << process
    process.start
  end

  # A Supervisor of `size` processes started again whenever they exit (stopped after the example).
  def supervise(size, guard, concurrency: 2)
    supervise_with(size) do |name|
      SidekiqProcess.new(name, redis: redis_server, dir: @e2e_dir, guard: guard, concurrency: concurrency)
    end
  end

  # A Supervisor of `size` processes built by the block from a name (each stopped after the example).
  def supervise_with(size)
    supervisor = Supervisor.new(size) do |name|
      process = yield(name)
      @e2e_processes << process
      process
    end
    @e2e_supervisors << supervisor
    supervisor.start
  end

  # The example's temporary directory (logs, event files).
  def e2e_dir
    @e2e_dir
  end

  def push(klass, *args, count: 1)
    count.times { Sidekiq::Client.push("class" => klass, "args" => args, "queue" => "default") }
  end

  def redis_call(*command)
    Sidekiq.redis { |conn| conn.call(*command) }
  end

  # Resolved guard settings (limit 200 MB) for an in-process SidekiqRust::History.
  def guard_settings(check_interval:, hard_max_rss: nil, logger: nil)
    config = SidekiqRust::Configuration.new
    config.max_rss = 200
    config.hard_max_rss = hard_max_rss
    config.check_interval = check_interval
    config.logger = logger
    config.resolve
  end

  # Every key of this gem in Redis (SCAN, as an operator would).
  def sidekiq_rust_keys
    keys = []
    cursor = "0"
    loop do
      cursor, batch = redis_call("SCAN", cursor, "MATCH", "sidekiq_rust:*", "COUNT", 1000)
      keys.concat(batch)
      break if cursor == "0"
    end
    keys
  end

  # The most RSS (VmRSS, sampled every 50 ms) any of `fleet`'s processes had while the block ran, in bytes.
  def peak_rss(fleet)
    peak = 0
    sampling = true
    sampler = Thread.new do
      while sampling
        fleet.processes.each do |process|
          status = File.read("/proc/#{process.pid}/status") rescue next # rubocop:disable Style/RescueModifier
          peak = [peak, status[/^VmRSS:\s+(\d+) kB/, 1].to_i * 1024].max
        end
        sleep 0.05
      end
    end
    yield
    peak
  ensure
    sampling = false
    sampler&.join
  end

  def done_count
    redis_call("GET", "e2e:done").to_i
  end

  def live_processes
    require "sidekiq/api"
    Sidekiq::ProcessSet.new.to_a
  end

  def eventually(timeout: 60, interval: 0.2, what: "the condition")
    deadline = Process.clock_gettime(Process::CLOCK_MONOTONIC) + timeout
    loop do
      value = yield
      return value if value
      raise "#{what} did not hold within #{timeout}s" if Process.clock_gettime(Process::CLOCK_MONOTONIC) > deadline

      sleep interval
    end
  end

  # E2E_KEEP_LOGS=DIR: a failed example's whole temporary directory (every process's log) is copied there.
  def keep_logs(dir)
    return unless ENV["E2E_KEEP_LOGS"]

    target = File.join(ENV["E2E_KEEP_LOGS"], "#{File.basename(dir)}-#{Process.pid}")
    FileUtils.mkdir_p(target)
    FileUtils.cp_r(Dir.glob(File.join(dir, "*")), target)
    warn "e2e: the example's logs copied to #{target}"
  end

  def wait_for_fleet(size)
    eventually(timeout: 30, what: "#{size} processes in Sidekiq's ProcessSet") { live_processes.size >= size }
  end

  def self.included(base)
    return unless base.respond_to?(:around) # an RSpec group (bench/cgroup_oom.rb includes it in a plain class)

    base.around do |example|
      Dir.mktmpdir("sidekiq_rust-e2e") do |dir|
        @e2e_dir = dir
        @e2e_processes = []
        @e2e_supervisors = []
        redis_server.start unless redis_server.running?
        redis_server.flushall
        begin
          example.run
        ensure
          @e2e_supervisors.each(&:stop)
          @e2e_processes.each(&:stop)
          if example.exception
            @e2e_processes.each { |p| warn "---- #{p.name} log:\n#{p.log.lines.last(60).join}" }
            keep_logs(dir)
          end
        end
      end
    end
  end
end

# (bench/cgroup_oom.rb uses these helpers outside RSpec.)
if defined?(RSpec)
  RSpec.configure do |config|
    config.after(:suite) { E2E.shutdown }
  end
end
