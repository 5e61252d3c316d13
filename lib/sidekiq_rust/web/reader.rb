# frozen_string_literal: true

require "json"
require_relative "../history"

module SidekiqRust
  module Web
    # What the Memory tab reads beyond History's page-at-a-time readers, read only (what the guards write, and
    # how, is History's): every process at once (the fleet's summary and the sort by share of the limit need
    # them all), the readings of many processes in one pipelined round trip, and the whole event stream, so that
    # the tab selects events per kind before it truncates (a burst of brake rows must not push the restarts out).
    module Reader
      # The most processes the tab reads (a fleet's processes within History::TTL).
      MAX_PROCESSES = 2000
      # The stream holds about History::EVENTS_MAX entries (XADD MAXLEN ~ trims whole nodes): read them all.
      MAX_EVENTS = History::EVENTS_MAX * 2

      # The tab's kinds of event, each the event types it stands for (what `?events=KIND` selects).
      KINDS = {
        "restart" => %w[restart],
        "oom_kill" => %w[oom_kill],
        "brake" => %w[pause resume],
        "reclaim" => %w[reclaim],
        "denial" => %w[denial],
        "quarantine" => %w[quarantine],
        "limits" => %w[limits],
        "admission" => %w[admission]
      }.freeze

      module_function

      # Every process with a history (History.processes rows), in History's order (most recently seen first): the
      # index and every process's hash in one reply (300 processes: 30 ms, was 450 ms through a pipeline of
      # HGETALLs), shaped by History's own row code (History.process_row); History.processes on a Redis without
      # scripting.
      def processes(now:, adapter:)
        json = adapter.redis do |conn|
          conn.call("EVAL", PROCESSES_SCRIPT, 1, History::INDEX, MAX_PROCESSES, History::PROCESS_PREFIX)
        end
        entries = JSON.parse(json)
        return [] unless entries.is_a?(Array) # cjson encodes an empty table as {}

        entries.filter_map do |identity, fields|
          next unless fields.is_a?(Array) && !fields.empty? # the hash expired

          History.process_row(identity, fields.each_slice(2).to_h, now)
        end
      rescue StandardError # a Redis without scripting
        History.processes(limit: MAX_PROCESSES, offset: 0, now: now, adapter: adapter)
      end

      # Each key's readings joined by newlines, in one reply: a pipeline of LRANGEs makes redis-rb 4.8 parse a
      # reply per reading (50 processes' hour at check_interval 5: 36,000 of them, half a second); this is one
      # string a process (15 ms). Read only.
      READINGS_SCRIPT = "local out = {} for i, key in ipairs(KEYS) do " \
                        "out[i] = table.concat(redis.call('LRANGE', key, 0, -1), '\\n') end return out"
      # The index's newest ARGV[1] identities, each with its process hash (ARGV[2] is the hash keys' prefix), as one
      # JSON document (cjson). Read only.
      PROCESSES_SCRIPT = "local ids = redis.call('ZREVRANGE', KEYS[1], 0, tonumber(ARGV[1]) - 1) local out = {} " \
                         "for i, id in ipairs(ids) do out[i] = {id, redis.call('HGETALL', ARGV[2] .. id)} end " \
                         "return cjson.encode(out)"
      # The stream's newest ARGV[1] entries as one JSON document (cjson), for the same reason.
      EVENTS_SCRIPT = "return cjson.encode(redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', ARGV[1]))"

      # {identity => [[unix_seconds, bytes], ...]} (oldest first) for `identities`, in one round trip.
      def readings(identities, adapter:)
        identities = identities.uniq
        return {} if identities.empty?

        keys = identities.map { |id| History::READINGS_PREFIX + id }
        lists = begin
          adapter.redis { |conn| conn.call("EVAL", READINGS_SCRIPT, keys.size, *keys) }.map { |text| text.split("\n") }
        rescue StandardError # a Redis without scripting
          adapter.redis { |conn| conn.pipelined { |pipe| keys.each { |key| pipe.call("LRANGE", key, 0, -1) } } }
        end
        identities.zip(lists).to_h do |id, lines|
          [id, Array(lines).map do |line|
            at, bytes = line.split(" ", 2)
            [at.to_f, bytes.to_i]
          end]
        end
      end

      # Every event in the stream, newest first: History.events rows.
      def events(adapter:)
        json = adapter.redis { |conn| conn.call("EVAL", EVENTS_SCRIPT, 1, History::EVENTS, MAX_EVENTS) }
        entries = JSON.parse(json)
        entries = [] unless entries.is_a?(Array) # cjson encodes an empty table (no stream) as {}
        entries.map do |id, fields|
          f = fields.each_slice(2).to_h
          { id: id, type: f["type"], identity: f["identity"], at: f["at"].to_f, reason: f["reason"],
            data: parse_json(f["data"]) }
        end
      rescue StandardError # a Redis without scripting, or a reply this reader does not know
        History.events(count: MAX_EVENTS, adapter: adapter)
      end

      def parse_json(text)
        text ? JSON.parse(text) : {}
      rescue JSON::ParserError
        {}
      end

      # The kind (a KINDS key) of an event row, nil for a type the tab does not know.
      def kind(event)
        KINDS.find { |_kind, types| types.include?(event[:type]) }&.first
      end

      # The newest `per_kind` events of each kind in `kinds` (all kinds when nil), merged newest first: one kind's
      # burst cannot push another's rows out.
      def select(events, per_kind:, kinds: nil)
        wanted = kinds || KINDS.keys
        events.group_by { |e| kind(e) }.slice(*wanted).values
              .flat_map { |rows| rows.sort_by { |e| -e[:at] }.first(per_kind) }
              .sort_by { |e| [-e[:at], e[:id].to_s] }
      end
    end
  end
end
