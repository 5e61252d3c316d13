# frozen_string_literal: true

require "json"

module SidekiqRust
  # What a guarded process's history adds from its memory cgroup at each reading: the memory pressure (PSI), the
  # cgroup's OOM-kill counter and the jobs in flight, and the report of an OOM kill.
  #
  # The kernel's OOM killer SIGKILLs a process of the cgroup: nothing of it runs to say so, and with Sidekiq's
  # basic fetch its jobs in flight vanish. The counter (v2 memory.events oom_kill, v1 memory.oom_control
  # oom_kill) is what tells: whichever guarded process of the same cgroup sees it go up (a survivor of the fleet,
  # or the process the supervisor started in the killed one's place, which compares with the count the cgroup's
  # processes last wrote to Redis) reports the kill once for the fleet, naming the killed process (a guarded
  # process of this host and cgroup that is gone) and the jobs its last reading had in flight: an :oom_kill event
  # in the history (the Memory tab's timeline, on_restart is not called) and an ERROR log line.
  class CgroupWatch
    COUNT_PREFIX = Keys::CGROUP_OOM
    CLAIM_PREFIX = Keys::OOM_REPORTED
    # Seconds after a rise of the counter spent looking for the killed process (seen gone) before the kill is
    # reported with the process unknown.
    PATIENCE = 10
    TTL = Keys::HISTORY_TTL
    # The count is written again at least this often (seconds) while it stays the same.
    STORE_EVERY = 600
    # Sidekiq's heartbeat of a process outlives its last beat by this long.
    HEARTBEAT_EXPIRY = 60

    def initialize(history, logger:, adapter:, in_flight:, interval:)
      @history = history
      @logger = logger
      @adapter = adapter
      @in_flight = in_flight
      @interval = interval
      @baseline = nil
      @baseline_at = nil
      @pending_since = nil
      @stored_count = nil
      @stored_at = nil
      @read_failed = false
      @check_failed = false
    end

    # The fields this reading adds to the process's hash in Redis (String values; "" when unknown).
    def fields
      @oom = Memory.cgroup_oom
      pressure = Memory.pressure
      {
        "pressure_some_avg10" => pressure&.fetch(:some_avg10), "pressure_full_avg10" => pressure&.fetch(:full_avg10),
        "oom_kills" => @oom&.fetch(:oom_kills), "cgroup" => @oom&.fetch(:dir),
        "in_flight" => JSON.generate(in_flight_now)
      }.transform_values(&:to_s)
    rescue StandardError => e
      @oom = nil
      @logger.warn("sidekiq_rust: could not read the memory cgroup's counters: #{e.class}: #{e.message}") unless
        @read_failed
      @read_failed = true
      {}
    end

    # After the reading was written: reports an OOM kill the counter shows. Never raises.
    def check(now)
      count = @oom && @oom[:oom_kills]
      return unless count

      key = "#{COUNT_PREFIX}#{@adapter.hostname}:#{@oom[:dir]}"
      redis do |conn|
        establish_baseline(conn, key, count, now) if @baseline.nil?
        if count > @baseline
          report(conn, count, now)
        else
          @baseline_at = now
        end
        store(conn, key, [count, @baseline].max, now)
      end
    rescue StandardError => e
      # Said once: Redis being down must not flood the log from every reading (the history says so too).
      @logger.warn("sidekiq_rust: could not check the memory cgroup's OOM kills: #{e.class}: #{e.message}") unless
        @check_failed
      @check_failed = true
    end

    private

    # Writes the count for the cgroup's next process when it changed, and often enough to keep the key alive:
    # not a round trip per reading.
    def store(conn, key, count, now)
      return if @stored_count == count && now - @stored_at < STORE_EVERY

      conn.call("SET", key, JSON.generate("count" => count, "at" => now), "EX", TTL)
      @stored_count = count
      @stored_at = now
    end

    def in_flight_now
      Array(@in_flight.call)
    rescue StandardError
      []
    end

    def redis(&block)
      @adapter.redis(&block)
    end

    # The count the cgroup's processes last wrote (a process starting after an OOM kill compares with it), else
    # the count now.
    def establish_baseline(conn, key, count, now)
      stored = conn.call("GET", key)
      data = stored && JSON.parse(stored)
      @baseline = data ? [data["count"].to_i, count].min : count
      @baseline_at = data ? data["at"].to_f : now
    rescue JSON::ParserError
      @baseline = count
      @baseline_at = now
    end

    # Reports each kill the counter rose by, once for the fleet (the first process to claim it); waits a few
    # readings for the killed process to be seen gone.
    def report(conn, count, now)
      victims = gone_processes(conn)
      @pending_since ||= now
      return if victims.empty? && now - @pending_since < PATIENCE

      ((@baseline + 1)..count).each do |n|
        next unless conn.call("SET", "#{CLAIM_PREFIX}#{@adapter.hostname}:#{@oom[:dir]}:#{n}", @history.identity,
                              "NX", "EX", TTL)

        killed = victims.select { |v| conn.call("SET", "#{CLAIM_PREFIX}#{v[:identity]}", "1", "NX", "EX", TTL) }
        announce(n, killed, now)
      end
      @baseline = count
      @baseline_at = now
      @pending_since = nil
    end

    # The guarded processes of this host and cgroup that died without stopping: their pid is gone (or a zombie,
    # or this process's own, a replacement reusing it), yet Sidekiq still lists them (a process that stops,
    # for a restart or a deploy, takes itself off Sidekiq's `processes` set; a SIGKILLed one cannot), and their
    # last reading is at most a heartbeat's expiry older than the last count seen unchanged.
    def gone_processes(conn)
      since = @baseline_at - HEARTBEAT_EXPIRY
      History.processes(limit: 200, adapter: @adapter).select do |p|
        p[:identity] != @history.identity && p[:hostname] == @adapter.hostname && p[:cgroup] == @oom[:dir] &&
          p[:at] >= since && dead?(p[:pid]) && listed?(conn, p[:identity])
      end
    end

    def listed?(conn, identity)
      [1, true].include?(conn.call("SISMEMBER", "processes", identity))
    end

    def dead?(pid)
      return true if pid == ::Process.pid

      state = File.read("/proc/#{pid}/stat")[/\) (\S)/, 1]
      %w[Z X].include?(state)
    rescue SystemCallError
      true
    end

    def announce(count, killed, now)
      jobs = killed.flat_map { |p| p[:in_flight] }
      names = killed.map { |p| "#{p[:identity]} (pid #{p[:pid]})" }
      @history.event(:oom_kill, now: now, oom_kills: count, cgroup: @oom[:dir], killed: names, in_flight: jobs)
      jobs_text = jobs.empty? ? "none recorded" : jobs.map { |j| "#{j['class']}(jid #{j['jid']})" }.join(", ")
      who = names.empty? ? "a process this guard does not know (not a guarded Sidekiq process?)" : names.join(", ")
      @logger.error("sidekiq_rust: the kernel's OOM killer killed #{who} in the memory cgroup #{@oom[:dir]} " \
                    "(OOM kill #{count} of the cgroup); jobs in flight at its last reading, lost with basic fetch " \
                    "unless requeued: #{jobs_text}; set max_rss below the cgroup limit (e.g. \"80%\") so the " \
                    "guard restarts first identity=#{@history.identity}")
    end
  end
end
