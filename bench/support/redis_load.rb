# frozen_string_literal: true

require "json"
require "rbconfig"
require_relative "../../spec/support/terminate"
require_relative "../../spec/support/sidekiq_process"
require_relative "../../spec/support/web_server"

# What the guard costs Redis, by Redis's own counters (INFO commandstats), next to what Sidekiq's own heartbeat
# costs: used by spec/redis_commands_spec.rb, spec/fleet50_spec.rb and bench/redis_load.rb. Every Redis call goes
# through Sidekiq's client configuration (Sidekiq.redis), which the caller points at its redis-server.
module RedisLoad
  PLAIN_APP = File.expand_path("../../spec/e2e/plain_app.rb", __dir__)
  # Commands that are not the heartbeat's: fetching (BRPOP), the scheduled-job poller (a script: EVALSHA, and in it
  # ZRANGEBYSCORE (Sidekiq 6) or ZRANGE (7+) and ZREM; the count of processes its pace scales with: SCARD, and the
  # process set's clean-up, SSCAN, HGET, SREM, whose SET NX lock, once a minute, stays counted), connection set-up,
  # and the counting itself (INFO, MEMORY, CONFIG). Subcommands ("script|load") go by their command.
  NOT_HEARTBEAT = %w[brpop blmove brpoplpush bzpopmin zrangebyscore zrange zrem evalsha eval script scard sscan hget
                     srem hello client select auth command info memory config].freeze

  module_function

  def call(*command)
    Sidekiq.redis { |conn| conn.call(*command) }
  end

  # {"rpush" => calls, ...} from INFO commandstats.
  def commandstats
    call("INFO", "commandstats").scan(/^cmdstat_([^:]+):calls=(\d+)/).to_h { |name, calls| [name.downcase, calls.to_i] }
  end

  # The calls between two commandstats readings, per command (those with none left out).
  def delta(before, after)
    after.to_h { |name, calls| [name, calls - before.fetch(name, 0)] }.select { |_, calls| calls.positive? }
  end

  def total(counts, except: [])
    counts.sum { |name, calls| except.include?(name) ? 0 : calls }
  end

  # Sidekiq's heartbeat per beat, from the plain Sidekiq processes that alone use this Redis: commandstats over
  # `beats` beats (each beat RPOPs its signals list once, so the RPOPs count the beats), from just after a beat.
  # Returns {per_beat:, beats:, seconds:, commands: {name => calls per beat}}.
  def heartbeat(beats:, timeout: 120)
    first = wait_for_beats(commandstats, 1, timeout)
    started = monotonic
    last = wait_for_beats(first, beats, timeout)
    counts = delta(first, last)
    seen = counts.fetch("rpop", 0)
    heartbeat = counts.reject { |name, _| NOT_HEARTBEAT.include?(name.split("|").first) }
    { per_beat: total(heartbeat).fdiv(seen), beats: seen, seconds: monotonic - started,
      commands: heartbeat.transform_values { |calls| calls.fdiv(seen).round(2) } }
  end

  def wait_for_beats(from, beats, timeout)
    deadline = monotonic + timeout
    loop do
      now = commandstats
      return now if now.fetch("rpop", 0) - from.fetch("rpop", 0) >= beats
      raise "no heartbeat within #{timeout}s" if monotonic > deadline

      sleep 0.05
    end
  end

  def monotonic
    Process.clock_gettime(Process::CLOCK_MONOTONIC)
  end

  # A `sidekiq` process without sidekiq_rust (spec/e2e/plain_app.rb), concurrency 1, on `socket`; `dyno` is its
  # hostname (Sidekiq 6.4, 7.3 and 8.1 take ENV["DYNO"] over the machine's). Returns the pid.
  def spawn_plain(socket, log:, dyno: nil)
    env = { "REDIS_SOCKET" => socket }
    env["DYNO"] = dyno if dyno
    Process.spawn(env, RbConfig.ruby, "-rbundler/setup", Gem.bin_path("sidekiq", "sidekiq"), "-r", PLAIN_APP,
                  "-c", "1", "-t", "5", "-q", "default", out: log, err: [:child, :out])
  end

  # TERM to every process at once, then each reaped (KILL after 20 s).
  def stop(pids)
    pids.each do |pid|
      Process.kill(:TERM, pid)
    rescue Errno::ESRCH
      nil
    end
    deadline = monotonic + 20
    pids.each do |pid|
      sleep 0.1 while Process.waitpid(pid, Process::WNOHANG).nil? && monotonic < deadline
      Terminate.child(pid, timeout: 5) # KILL if still there
    rescue Errno::ECHILD
      nil
    end
  end

  # Waits for `count` processes in Sidekiq's process set (each has beaten once).
  def wait_for_processes(count, timeout: 180)
    deadline = monotonic + timeout
    sleep 0.5 until call("SCARD", "processes").to_i >= count || monotonic > deadline
    raise "#{count} Sidekiq processes did not beat within #{timeout}s" if call("SCARD", "processes").to_i < count
  end

  # The bytes a guarded process's keys hold after an hour at `check_interval`, from the keys of `identity` now:
  # its process hash and per-class figures as they are (MEMORY USAGE ... SAMPLES 0: exact), its readings list as
  # it will be when capped (a scratch list of that many readings like its newest one, measured, then deleted),
  # and its share of the shared keys (the two indexes, the event stream) among `processes`.
  def bytes_per_process(identity, check_interval:, processes:)
    keep = [(SidekiqRust::History::KEEP / check_interval.to_f).ceil + 1, SidekiqRust::History::MAX_READINGS].min
    newest = call("LRANGE", SidekiqRust::History::READINGS_PREFIX + identity, -1, -1).first || "0.000 0"
    at, bytes = newest.split(" ", 2)
    scratch = "redis_load:scratch"
    call("DEL", scratch)
    (0...keep).each_slice(500) do |slice|
      call("RPUSH", scratch, *slice.map { |i| "#{(at.to_f - (i * check_interval)).round(3)} #{bytes}" })
    end
    list = usage(scratch)
    call("DEL", scratch)
    own = usage(SidekiqRust::History::PROCESS_PREFIX + identity) + usage(SidekiqRust::Report::KEY_PREFIX + identity)
    shared = [SidekiqRust::History::INDEX, SidekiqRust::Report::INDEX_KEY, SidekiqRust::History::EVENTS]
             .sum { |key| usage(key) }
    share = shared.fdiv(processes).round
    { readings: keep, list: list, own: own, shared: share, total: list + own + share }
  end

  def usage(key)
    call("MEMORY", "USAGE", key, "SAMPLES", "0").to_i
  end
end

module RedisLoad
  # A fleet on one redis-server: `processes` real `sidekiq` processes at concurrency 1 spread over `hosts`
  # simulated hostnames (DYNO), first without the guard (Sidekiq's heartbeat alone), then guarded (check_interval
  # `interval`). Returns the figures bench/redis_load.rb prints and spec/fleet50_spec.rb checks.
  class Fleet
    GUARD = { "max_rss" => 2000, "check_interval" => 5, "brake" => false, "loop_window" => 0 }.freeze
    BATCH = 5

    def initialize(redis:, dir:, processes: 50, hosts: 5, interval: 5, window: 60, log: $stderr)
      @redis = redis
      @dir = dir
      @processes = processes
      @hosts = hosts
      @interval = interval
      @window = window
      @log = log
    end

    def run
      results = { processes: @processes, hosts: @hosts, interval: @interval, sidekiq: Sidekiq::VERSION }
      results[:heartbeat] = plain
      @redis.flushall
      results.merge!(guarded(results[:heartbeat][:per_beat]))
      results
    end

    private

    def host(i)
      "host-#{(i % @hosts) + 1}"
    end

    def say(text)
      @log&.puts("redis_load: #{text}")
    end

    # Sidekiq alone: its heartbeat's commands per beat per process, over about `window` seconds.
    def plain
      say("#{@processes} plain sidekiq processes")
      pids = []
      @processes.times.each_slice(BATCH) do |batch|
        batch.each do |i|
          pids << RedisLoad.spawn_plain(@redis.socket, log: File.join(@dir, "plain#{i}.log"), dyno: host(i))
        end
        RedisLoad.wait_for_processes(pids.size)
      end
      beat_seconds = Sidekiq::VERSION.start_with?("6") ? 5 : 10
      beat = RedisLoad.heartbeat(beats: @processes * (@window / beat_seconds), timeout: @window * 3)
      beat.merge(beat_seconds: beat_seconds, per_second: beat[:per_beat] / beat_seconds,
                 sidekiq_keys: sidekiq_bytes)
    ensure
      RedisLoad.stop(pids)
    end

    # Sidekiq's own keys of a process (its heartbeat hash; the workers hash is gone while it is idle).
    def sidekiq_bytes
      identities = RedisLoad.call("SMEMBERS", "processes")
      identities.sum { |id| RedisLoad.usage(id) + RedisLoad.usage("#{id}:workers") }.fdiv(identities.size).round
    end

    # The guarded fleet: our commands (all of them less the heartbeat's, beats counted by RPOP) per check (each
    # check RPUSHes one reading), its keys' bytes, the metrics and the Memory tab.
    def guarded(heartbeat_per_beat)
      say("#{@processes} guarded sidekiq processes")
      fleet = []
      @processes.times.each_slice(BATCH) do |batch|
        started = batch.map do |i|
          SidekiqProcess.new("g#{i}", redis: @redis, dir: @dir, guard: GUARD.merge("check_interval" => @interval),
                                      concurrency: 1, env: { "DYNO" => host(i) })
        end
        fleet.concat(started)
        started.map { |p| Thread.new { p.start } }.each(&:join)
      end
      RedisLoad.wait_for_processes(@processes)
      sleep(@interval * 2) # every process past its first check
      before = RedisLoad.commandstats
      started = RedisLoad.monotonic
      sleep @window
      counts = RedisLoad.delta(before, RedisLoad.commandstats)
      seconds = RedisLoad.monotonic - started
      all = counts.reject { |name, _| NOT_HEARTBEAT.include?(name.split("|").first) }
      ours = RedisLoad.total(all) - (counts.fetch("rpop", 0) * heartbeat_per_beat)
      checks = counts.fetch("rpush", 0)
      {
        ours: { per_check: ours.fdiv(checks), per_second: ours.fdiv(seconds * @processes), checks: checks,
                seconds: seconds, commands: counts.except("info") },
        bytes: RedisLoad.bytes_per_process(RedisLoad.call("ZREVRANGE", SidekiqRust::History::INDEX, 0, 0).first,
                                           check_interval: @interval, processes: @processes),
        hostnames: RedisLoad.call("ZRANGE", SidekiqRust::History::INDEX, 0, -1)
                            .map { |id| id.split(":").first }.uniq.sort,
        metrics: metrics, tab: tab
      }
    ensure
      fleet.each { |p| Process.kill(:TERM, p.pid) if p.pid && p.alive? }
      fleet.each(&:stop)
    end

    # `sidekiq_rust metrics` as an operator runs it (a new Ruby process), and Metrics.text in this one.
    def metrics
      exe = File.expand_path("../../exe/sidekiq_rust", __dir__)
      started = RedisLoad.monotonic
      text = IO.popen([RbConfig.ruby, "-rbundler/setup", exe, "metrics", "--redis-url", "unix://#{@redis.socket}"],
                      &:read)
      cli = RedisLoad.monotonic - started
      raise "sidekiq_rust metrics failed" unless Process.last_status.success?

      inside = median(5) { SidekiqRust::Metrics.text }
      { cli: cli, in_process: inside, processes: text.scan(/^sidekiq_rust_memory_bytes\{/).size }
    end

    # The Memory tab's page rendered by the Rack app (no network): the server side.
    def tab
      app = Rack::MockRequest.new(WebServer.app)
      body = app.get("/sidekiq/memory").body # the views compiled
      seconds = median(5) { body = app.get("/sidekiq/memory").body }
      { seconds: seconds, cards: body.scan(/<div class="sr-card[^"]*" data-identity=/).size }
    end

    def median(count)
      times = Array.new(count) do
        started = RedisLoad.monotonic
        yield
        RedisLoad.monotonic - started
      end
      times.sort[count / 2]
    end
  end
end
