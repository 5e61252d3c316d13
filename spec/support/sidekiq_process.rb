# frozen_string_literal: true

require "json"
require "timeout"

# A real `sidekiq` process running spec/e2e/app.rb, under the Sidekiq version Bundler selected for the suite;
# with `embedded: true`, a plain Ruby process running the same app in an embedded Sidekiq (spec/e2e/embed_host.rb).
class SidekiqProcess
  APP = File.expand_path("../e2e/app.rb", __dir__)
  EMBED_HOST = File.expand_path("../e2e/embed_host.rb", __dir__)

  attr_reader :name, :pid, :log_path, :events_path, :status

  # `prefix`: a command that runs the process's command (RealCgroup#wrapper puts it into a memory cgroup).
  def initialize(name, redis:, dir:, guard: {}, concurrency: 2, timeout: 5, env: {}, embedded: false, prefix: [])
    @name = name
    @redis = redis
    @log_path = File.join(dir, "#{name}.log")
    @events_path = File.join(dir, "#{name}.events")
    @guard = guard
    @concurrency = concurrency
    @timeout = timeout
    @env = env
    @embedded = embedded
    @prefix = prefix
    @status = nil
  end

  def start
    env = {
      "REDIS_SOCKET" => @redis.socket, "E2E_NAME" => @name, "E2E_EVENTS" => @events_path,
      "SIDEKIQ_RUST_CONFIG" => JSON.generate(@guard), "E2E_CONCURRENCY" => @concurrency.to_s,
      "E2E_TIMEOUT" => @timeout.to_s
    }.merge(@env)
    @pid = Process.spawn(env, *@prefix, *command, out: @log_path, err: [:child, :out])
    wait_for_log(/guard started/, timeout: 30)
    self
  end

  def command
    return [RbConfig.ruby, "-rbundler/setup", EMBED_HOST] if @embedded

    [RbConfig.ruby, "-rbundler/setup", Gem.bin_path("sidekiq", "sidekiq"), "-r", APP, "-c", @concurrency.to_s,
     "-t", @timeout.to_s, "-q", "default"]
  end

  def log
    File.exist?(@log_path) ? File.read(@log_path) : ""
  end

  # Sidekiq's identity of this process (hostname:pid:nonce), as the guard logged it at startup.
  def identity
    log[/guard started identity=(\S+)/, 1]
  end

  def wait_for_log(pattern, timeout: 30)
    Timeout.timeout(timeout) do
      loop do
        return true if log.match?(pattern)
        raise "#{@name} exited (#{@status.inspect}) before logging #{pattern.inspect}:\n#{log}" unless alive?

        sleep 0.1
      end
    end
  rescue Timeout::Error
    raise "#{@name} did not log #{pattern.inspect} within #{timeout}s:\n#{log}"
  end

  def alive?
    return false if @status

    _, status = Process.waitpid2(@pid, Process::WNOHANG)
    @status = status
    status.nil?
  end

  # Waits for the process to exit by itself; returns its Process::Status.
  def wait_exit(timeout: 60)
    Timeout.timeout(timeout) { sleep 0.1 while alive? }
    @status
  rescue Timeout::Error
    raise "#{@name} did not exit within #{timeout}s:\n#{log}"
  end

  def events
    return [] unless File.exist?(@events_path)

    File.readlines(@events_path).map { |line| JSON.parse(line) }
  end

  # Stops it if still running (TERM, then KILL).
  def stop
    return unless @pid && alive?

    Process.kill(:TERM, @pid)
    begin
      wait_exit(timeout: 20)
    rescue RuntimeError
      Process.kill(:KILL, @pid)
      wait_exit(timeout: 10)
    end
  rescue Errno::ESRCH
    nil
  end
end
