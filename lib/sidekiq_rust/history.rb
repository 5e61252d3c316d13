# frozen_string_literal: true

require "json"

module SidekiqRust
  # The memory history of one guarded process, and the fleet's guard events, in Redis: what the Web UI's Memory tab
  # and the Prometheus metrics read. Every key expires and stays bounded:
  #
  # - `sidekiq_rust:history:IDENTITY`: a list of readings "unix_seconds bytes", the newest last, trimmed to the last
  #   hour (ceil(3600 / check_interval) + 1 entries, at most MAX_READINGS); one write per check_interval at most.
  # - `sidekiq_rust:process:IDENTITY`: a hash: hostname, pid, started_at, at (the last reading's time), memory,
  #   metric, max_rss, hard_max_rss, allocator, phase, interval, brake ("paused", "fetching" or "" without the brake),
  #   brake_seconds (paused so far), the memory cgroup's pressure_some_avg10, pressure_full_avg10 (PSI, percent),
  #   oom_kills (its counter), cgroup (its directory), live, allocator_free, heap_fragmentation and ruby_heap
  #   (Fragmentation, every 30 s) and the in_flight jobs (JSON), and the counters
  #   reclaimed_bytes, restarts:REASON, denials:REASON, quarantined (jobs sent to the dead set).
  # - `sidekiq_rust:processes`: a sorted set of identities scored by their last reading (members older than TTL are
  #   dropped at each refresh), so that readers find the processes without a SCAN.
  # - `sidekiq_rust:events`: a stream of reclaim, restart and denial events, capped at about EVENTS_MAX entries.
  #
  # A reading costs 4 commands in one pipeline (RPUSH, LTRIM, HSET, ZADD): the expiries are refreshed and the index
  # trimmed only at the first reading and then every REFRESH_EVERY seconds, and at once whenever a write's reply
  # says it created its key (Redis restarted or flushed: RPUSH answers 1, HSET counts new fields, ZADD a new
  # member), so that every key expires at all times. Sidekiq's own heartbeat sends 18 a beat on 6.4, about 11 on
  # 7.3 and 8.1 (docs/redis.md).
  #
  # A guarded process writes through an instance (Guard calls #record and #event); the Web UI and the metrics read
  # through the class methods. Writing never raises: Redis being down only costs the history.
  class History
    READINGS_PREFIX = Keys::HISTORY_READINGS
    PROCESS_PREFIX = Keys::HISTORY_PROCESS
    INDEX = Keys::HISTORY_INDEX
    EVENTS = Keys::HISTORY_EVENTS
    # How far back the readings reach.
    KEEP = 3600
    # Readings kept per process whatever check_interval is (0.5 s and up keep the whole hour).
    MAX_READINGS = 7200
    # Every key expires this long after its last refresh (at most REFRESH_EVERY seconds before its last write): a
    # process gone for two hours leaves nothing behind.
    TTL = Keys::HISTORY_TTL
    EVENTS_MAX = Keys::EVENTS_MAX
    EVENTS_TTL = Keys::EVENTS_TTL
    # The expiries are refreshed (and the index trimmed) this often (seconds), far inside TTL.
    REFRESH_EVERY = Keys::REFRESH_EVERY
    # A process without a reading for this many check intervals (and at least GONE_MIN seconds) is gone.
    GONE_INTERVALS = 3
    GONE_MIN = 15

    attr_reader :identity

    # `in_flight` answers the jobs running now ([{class:, jid:, running_s:}]), recorded with each reading so that
    # an OOM kill can be reported with them (CgroupWatch).
    def initialize(settings, identity:, adapter: SidekiqAdapter, in_flight: -> { SidekiqRust.guard&.in_flight })
      @settings = settings
      @identity = identity
      @adapter = adapter
      @logger = settings.logger || adapter.logger
      @interval = settings.check_interval.to_f
      @keep = [(KEEP / @interval).ceil + 1, MAX_READINGS].min
      @started_at = Time.now.to_f
      @last_write = nil
      @refreshed_at = nil
      # A Redis outage must not flood the log from every check: said once, and its end once.
      @write_notice = FailureNotice.new(@logger, failure: "could not write the memory history",
                                                 recovery: "the memory history is written again", tag: identity)
      @cgroup = CgroupWatch.new(self, logger: @logger, adapter: adapter, in_flight: in_flight, interval: @interval)
      @fragmentation = Fragmentation::Sampler.new(
        notice: FailureNotice.new(@logger, failure: "could not read the fragmentation figures (the history keeps " \
                                                    "the last ones read)",
                                           recovery: "the fragmentation figures are read again", tag: identity)
      )
    end

    # One reading (bytes), the guard's phase, its brake ({paused:, seconds:} or nil without one) and the limits in
    # force ({max_rss:, hard_max_rss:}; nil: the configured ones), written at most once per check_interval. Never
    # raises.
    def record(memory, phase, brake: nil, limits: nil, now: Time.now.to_f)
      return if @last_write && now - @last_write < @interval * 0.9

      @last_write = now
      refresh = @refreshed_at.nil? || now - @refreshed_at >= REFRESH_EVERY
      replies = write do |pipe|
        readings = READINGS_PREFIX + @identity
        pipe.call("RPUSH", readings, "#{now.round(3)} #{memory.to_i}")
        pipe.call("LTRIM", readings, -@keep, -1)
        pipe.call("HSET", process_key, *process_fields(now, memory, phase, brake, limits), *@cgroup.fields.flatten,
                  *@fragmentation.fields(now).flatten)
        pipe.call("ZADD", INDEX, now.round(3), @identity)
        refresh_expiries(pipe, now) if refresh
      end
      if replies.nil?
        @refreshed_at = nil # a write failed, maybe after creating a key: the next one refreshes
      elsif refresh
        @refreshed_at = now
      elsif created?(replies)
        # A key this reading created has no expiry yet: it gets one now, not at the next refresh.
        @refreshed_at = write { |pipe| refresh_expiries(pipe, now) } && now
      end
      @cgroup.check(now)
    end

    # Sidekiq's shutdown began (TERM, the guard's restart or anyone's): the process is gone from now on for the
    # readers (the Memory tab, top, the metrics), without waiting GONE_INTERVALS check intervals; its last phase
    # stays as it was. Never raises.
    def stopped(now: Time.now.to_f)
      write do |pipe|
        pipe.call("HSET", process_key, "stopped_at", now.round(3).to_s)
        pipe.call("EXPIRE", process_key, TTL)
      end
    end

    # A guard event: :reclaim (released:, memory:), :restart (the on_restart Hash), :denial (denial: the
    # policy's Symbol, message:, and the on_restart Hash), :quarantine, :pause and :resume (the brake).
    # Appended to the fleet's event stream and counted on the process. Never raises.
    def event(type, now: Time.now.to_f, **fields)
      reason = event_reason(type, fields)
      write do |pipe|
        pipe.call("XADD", EVENTS, "MAXLEN", "~", EVENTS_MAX, "*", "type", type.to_s, "identity", @identity,
                  "at", now.round(3).to_s, "reason", reason.to_s, "data", JSON.generate(event_data(fields)))
        pipe.call("EXPIRE", EVENTS, EVENTS_TTL)
        counter = case type
                  when :reclaim then ["reclaimed_bytes", [fields[:released].to_i, 0].max]
                  when :restart then ["restarts:#{reason}", 1]
                  when :denial then ["denials:#{reason}", 1]
                  when :quarantine then ["quarantined", Array(fields[:quarantined]).size]
                  end
        pipe.call("HINCRBY", process_key, *counter) if counter
        pipe.call("EXPIRE", process_key, TTL)
      end
    end

    def process_key
      PROCESS_PREFIX + @identity
    end

    private

    def refresh_expiries(pipe, now)
      pipe.call("EXPIRE", READINGS_PREFIX + @identity, TTL)
      pipe.call("EXPIRE", process_key, TTL)
      pipe.call("ZREMRANGEBYSCORE", INDEX, "-inf", (now - TTL).round(3))
      pipe.call("EXPIRE", INDEX, TTL)
    end

    # Whether the reading's writes (RPUSH, LTRIM, HSET, ZADD) created a key: the list's first entry, a field new
    # to the hash (a new hash, or a new figure: a refresh too many, which is harmless), a member new to the index.
    def created?(replies)
      replies[0].to_i == 1 || replies[2].to_i.positive? || replies[3].to_i.positive?
    end

    def process_fields(now, memory, phase, brake, limits)
      limits ||= @settings.limits
      {
        "hostname" => @adapter.hostname, "pid" => ::Process.pid, "started_at" => @started_at.round(3),
        "at" => now.round(3), "memory" => memory.to_i, "metric" => @settings.metric,
        "max_rss" => limits[:max_rss], "hard_max_rss" => limits[:hard_max_rss].to_s, "allocator" => Allocator.name,
        "phase" => phase, "interval" => @interval, "brake" => brake ? brake_state(brake) : "",
        "brake_seconds" => brake ? brake[:seconds].round(3) : 0
      }.flat_map { |k, v| [k, v.to_s] }
    end

    def brake_state(brake)
      brake[:paused] ? "paused" : "fetching"
    end

    def event_reason(type, fields)
      case type
      when :restart then fields[:reason] || "unknown"
      when :denial then fields[:denial] || "other"
      else ""
      end
    end

    # What the timeline shows of an event: numbers and names only (no callables, no Settings).
    def event_data(fields)
      fields.reject { |_k, v| v.respond_to?(:call) }
    end

    def write(&block)
      written = @adapter.redis { |conn| conn.pipelined(&block) }
      @write_notice.succeeded
      written
    rescue StandardError => e
      @write_notice.failed(e)
      nil
    end

    class << self
      # How many processes have a history (live and gone within TTL).
      def process_count(adapter = SidekiqAdapter)
        adapter.redis { |conn| conn.call("ZCARD", INDEX) }.to_i
      end

      # The processes, most recently seen first, `offset`/`limit` for paging: Hashes with symbol keys :identity,
      # :hostname, :pid, :started_at, :at, :memory, :metric, :max_rss, :hard_max_rss, :allocator, :phase, :interval,
      # :reclaimed_bytes, :restarts ({reason => n}), :denials ({reason => n}), :quarantined (jobs sent to the dead
      # set), :brake (:paused, :fetching or nil without the brake), :brake_seconds, :pressure_some_avg10,
      # :pressure_full_avg10 (Float, nil: no PSI), :oom_kills (the cgroup's counter, nil: none), :cgroup, :live,
      # :allocator_free, :ruby_heap (bytes), :heap_fragmentation (0..1; each nil: unknown, see Fragmentation),
      # :in_flight ([{"class", "jid", "running_s"}]), :gone (true once its shutdown began, or when no reading came
      # for GONE_INTERVALS check intervals). Processes whose hash expired are left out.
      def processes(limit: 50, offset: 0, now: Time.now.to_f, adapter: SidekiqAdapter)
        identities = adapter.redis { |conn| conn.call("ZREVRANGE", INDEX, offset, offset + limit - 1) }
        hashes = adapter.redis do |conn|
          conn.pipelined { |pipe| identities.each { |id| pipe.call("HGETALL", PROCESS_PREFIX + id) } }
        end
        identities.zip(hashes).filter_map do |identity, hash|
          hash = hash.each_slice(2).to_h if hash.is_a?(Array) # redis-rb 4.8 in a pipeline: a flat Array
          next if hash.nil? || hash.empty?

          process_row(identity, hash, now)
        end
      end

      # One process's row (as `processes` gives them) from its hash in Redis (the Memory tab's reader reads the
      # hashes its own way).
      def process_row(identity, hash, now)
        interval = hash["interval"].to_f
        at = hash["at"].to_f
        {
          identity: identity, hostname: hash["hostname"], pid: hash["pid"].to_i, started_at: hash["started_at"].to_f,
          at: at, memory: hash["memory"].to_i, metric: hash["metric"], max_rss: integer_or_nil(hash["max_rss"]),
          hard_max_rss: integer_or_nil(hash["hard_max_rss"]), allocator: hash["allocator"], phase: hash["phase"],
          interval: interval, reclaimed_bytes: hash["reclaimed_bytes"].to_i,
          restarts: counters(hash, "restarts:"), denials: counters(hash, "denials:"),
          quarantined: hash["quarantined"].to_i, brake: brake_field(hash["brake"]),
          brake_seconds: hash["brake_seconds"].to_f,
          pressure_some_avg10: float_or_nil(hash["pressure_some_avg10"]),
          pressure_full_avg10: float_or_nil(hash["pressure_full_avg10"]),
          oom_kills: integer_or_nil(hash["oom_kills"]), cgroup: hash["cgroup"].to_s,
          live: integer_or_nil(hash["live"]), allocator_free: integer_or_nil(hash["allocator_free"]),
          heap_fragmentation: float_or_nil(hash["heap_fragmentation"]), ruby_heap: integer_or_nil(hash["ruby_heap"]),
          in_flight: Array(parse_json(hash["in_flight"])),
          gone: !hash["stopped_at"].to_s.empty? || now - at > [GONE_INTERVALS * interval, GONE_MIN].max
        }
      end

      # The readings of one process, oldest first: [[unix_seconds Float, bytes Integer], ...].
      def readings(identity, adapter: SidekiqAdapter)
        adapter.redis { |conn| conn.call("LRANGE", READINGS_PREFIX + identity, 0, -1) }.map do |line|
          at, bytes = line.split(" ", 2)
          [at.to_f, bytes.to_i]
        end
      end

      # The newest `count` events, newest first: {id:, type:, identity:, at:, reason:, data: Hash}.
      def events(count: 50, identity: nil, adapter: SidekiqAdapter)
        entries = adapter.redis { |conn| conn.call("XREVRANGE", EVENTS, "+", "-", "COUNT", count) }
        rows = entries.map do |id, fields|
          f = fields.is_a?(Hash) ? fields : fields.each_slice(2).to_h
          { id: id, type: f["type"], identity: f["identity"], at: f["at"].to_f, reason: f["reason"],
            data: parse_json(f["data"]) }
        end
        identity ? rows.select { |row| row[:identity] == identity } : rows
      end

      private

      # :paused, :fetching, or nil for a process without the brake.
      def brake_field(value)
        case value
        when "paused" then :paused
        when "fetching" then :fetching
        end
      end

      def counters(hash, prefix)
        hash.select { |k, _| k.start_with?(prefix) }.to_h { |k, v| [k.delete_prefix(prefix), v.to_i] }
      end

      def integer_or_nil(value)
        value.nil? || value.empty? ? nil : value.to_i
      end

      def float_or_nil(value)
        value.nil? || value.empty? ? nil : value.to_f
      end

      def parse_json(text)
        text ? JSON.parse(text) : {}
      rescue JSON::ParserError
        {}
      end
    end
  end
end

require_relative "cgroup_watch"
