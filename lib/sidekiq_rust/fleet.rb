# frozen_string_literal: true

module SidekiqRust
  # Fleet-wide restart slots in Redis, so that at most `max_concurrent_restarts` processes restart at once and
  # never the last serving one. A slot is a key set with SET NX and an expiry; it is released when the
  # restarting process exits, or expires by itself if the process is killed.
  class Fleet
    KEY_PREFIX = Keys::RESTART_SLOT
    # Set (with the loop window as its expiry) when a process of a host restarts for memory.
    MEMORY_RESTART_PREFIX = Keys::MEMORY_RESTART
    RELEASE_SCRIPT = <<~LUA
      if redis.call("GET", KEYS[1]) == ARGV[1] then return redis.call("DEL", KEYS[1]) else return 0 end
    LUA

    # What #acquire answers: `granted` and the slot's `key`, or the `denial` (:no_slot, :sole_process,
    # :redis_unavailable; Native::Guard#slot_denied takes it) and a `text` that says why.
    SlotAnswer = Struct.new(:granted, :key, :denial, :text, keyword_init: true) do
      def self.granted(key)
        new(granted: true, key: key)
      end

      def self.denied(denial, text)
        new(granted: false, denial: denial, text: text)
      end
    end

    attr_reader :held

    # The tags (Sidekiq identities, "hostname:pid:nonce") holding one of the first `count` restart slots, in one MGET, whatever
    # max_concurrent_restarts each process has. A process takes the first free slot, so a slot's number stays
    # below the number of slots held at once: the processes restarting plus the killed ones whose slot has not
    # expired yet. `count` = the fleet's size plus a margin covers them (a SCAN of the keyspace would too, at
    # seconds per call on a Redis with a million keys).
    def self.all_holders(count, adapter = SidekiqAdapter)
      keys = Array.new(count) { |i| "#{KEY_PREFIX}#{i}" }
      adapter.redis { |conn| conn.call("MGET", *keys) }.compact
    end

    def initialize(settings, adapter: SidekiqAdapter, tag: adapter.own_tag, logger: settings.logger || adapter.logger)
      @settings = settings
      @adapter = adapter
      @tag = tag
      @held = nil
      @loop_check = FailureNotice.new(logger, failure: "the restart-loop check is off: Redis cannot say whether a " \
                                                       "process of this host restarted for memory, nor keep the note " \
                                                       "that one does",
                                              recovery: "the restart-loop check reads and writes Redis again",
                                              tag: tag)
    end

    def slot_keys
      Array.new(@settings.max_concurrent_restarts) { |i| "#{KEY_PREFIX}#{i}" }
    end

    # Takes a slot if the fleet allows it: returns a SlotAnswer, granted with the slot's key or denied with the
    # reason and a text. Never raises.
    # `peers:` is what the restart needs of the other processes (the core's rule, Native::Guard#restart_request):
    # :any (nothing: the hard limit), :serving (another serving process: the soft limit with
    # require_other_process), :serving_unless_alone (another serving process while any other is live: retained
    # memory in a paused process).
    def acquire(ttl, peers:)
      key = take_slot(ttl)
      unless key
        return SlotAnswer.denied(:no_slot, "all #{slot_keys.size} restart slot(s) are held by restarting processes")
      end

      denial = peers_denial(peers)
      if denial
        release(key)
        return denial
      end
      @held = key
      SlotAnswer.granted(key)
    rescue StandardError => e
      release(key) if key
      SlotAnswer.denied(:redis_unavailable, "Redis is unavailable (#{e.class}: #{e.message})")
    end

    # Lets go of the held slot (only if it is still ours). Never raises.
    def release(key = @held)
      return unless key

      @adapter.redis { |conn| conn.call("EVAL", RELEASE_SCRIPT, 1, key, @tag) }
      @held = nil if key == @held
    rescue StandardError
      nil # the slot expires by itself
    end

    # Notes that a process of this host restarts for memory, for `ttl` seconds (the loop window). Never raises.
    def mark_memory_restart(ttl)
      return unless ttl.positive?

      @adapter.redis { |conn| conn.call("SET", memory_restart_key, @tag, "EX", ttl.ceil) }
      @loop_check.succeeded
    rescue StandardError => e
      @loop_check.failed(e) # without the mark, the next process of this host skips the restart-loop check
    end

    # Whether a process of this host restarted for memory within the loop window: a process that starts now
    # most likely replaces it. Never raises (false when Redis cannot say, and the log says the check is off).
    def memory_restart_recent?
      recent = @adapter.redis { |conn| conn.call("EXISTS", memory_restart_key) }.to_i.positive?
      @loop_check.succeeded
      recent
    rescue StandardError => e
      @loop_check.failed(e)
      false
    end

    # Tags of the processes holding a slot (one MGET: a slot key of another type reads as nil, not an error).
    def holders
      @adapter.redis { |conn| conn.call("MGET", *slot_keys) }.compact
    end

    # Other live processes that are neither quiet, stopping nor holding a slot.
    def serving_others
      held_by = holders
      live_others.reject { |process| process.stopping? || held_by.include?(@adapter.tag_of(process)) }
    end

    # The other processes of the fleet Sidekiq lists as live.
    def live_others
      @adapter.processes.reject { |process| @adapter.tag_of(process) == @tag }
    end

    private

    # nil when the other processes allow the restart (`peers`, see #acquire), else the denial that says why not.
    def peers_denial(peers)
      return nil if peers == :any || serving_others.any?
      return nil if peers == :serving_unless_alone && live_others.empty?

      if peers == :serving_unless_alone
        SlotAnswer.denied(:sole_process, "no other live Sidekiq process is serving now (the others restart, stop or " \
                                         "start): this one waits for one to serve, then restarts")
      else
        SlotAnswer.denied(:sole_process, "no other live Sidekiq process is serving; this one is the only one (set " \
                                         "require_other_process = false to allow it; the hard limit restarts it " \
                                         "anyway)")
      end
    end

    def memory_restart_key
      "#{MEMORY_RESTART_PREFIX}#{@adapter.hostname}"
    end

    # The first free slot, or nil. A slot key without an expiry was not set by a guard (each sets the key and its
    # expiry in one SET): garbage that would hold the slot forever, so it is deleted and the slot tried again.
    def take_slot(ttl)
      @adapter.redis do |conn|
        slot_keys.find do |k|
          next true if claim(conn, k, ttl)

          conn.call("TTL", k).to_i == -1 && conn.call("DEL", k).to_i.positive? && claim(conn, k, ttl)
        end
      end
    end

    def claim(conn, key, ttl)
      conn.call("SET", key, @tag, "NX", "EX", ttl.ceil) == "OK"
    end
  end
end
