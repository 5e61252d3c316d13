# frozen_string_literal: true

require "json"

module SidekiqRust
  # Which job class grew the memory, per class: jobs, retained_per_job, growth_per_job, allocated_per_job
  # (bytes, nil when unknown), retained_error (the standard error of retained_per_job) and windows (the retained
  # windows, between two measuring reclaims, the class's jobs started in: how far to trust the figure). The rows
  # are fitted and built in Rust (ext/sidekiq_rust_core/src/attribution/, Native::Guard#report gives them as
  # Hashes with these keys); this module ranks them, publishes each process's to Redis and merges the fleet's.
  #
  # Each process's guard writes `sidekiq_rust:classes:<identity>`, a JSON String
  # `{"identity":, "at":, "classes": [{"class":, "jobs":, "retained_per_job":, "growth_per_job":,
  # "allocated_per_job":}, ...]}` with an expiry, at most MAX_CLASSES rows, and lists the identity in the sorted
  # set `sidekiq_rust:class_index` (score: when its key expires, give or take REFRESH_EVERY), so readers never scan
  # the keyspace. A publication is one command (SET XX EX, which only replaces the key): the key and the index are
  # written, with their expiries, in one pipeline at the process's first publication, every REFRESH_EVERY seconds,
  # and when SET XX finds the key gone (Redis restarted or flushed).
  module Report
    KEY_PREFIX = Keys::CLASSES
    INDEX_KEY = Keys::CLASS_INDEX
    # Rows one process publishes.
    MAX_CLASSES = 100
    # A process's figures outlive its last publication by at least this long, the memory history's span: after a
    # restart, `report`, the Memory tab and the metrics still count the jobs of the process that restarted.
    KEEP = 3600
    FIGURES = %i[retained_per_job growth_per_job allocated_per_job].freeze
    # The index is written again this often (seconds).
    REFRESH_EVERY = Keys::REFRESH_EVERY
    # identity => when this process last wrote the index.
    @indexed_at = {}

    module_function

    # The class that explains the most retained memory (retained per job times jobs), among those whose
    # figure the windows tell from zero (a figure they cannot is reported as 0); nil when there is none.
    def strongest(rows)
      rows.select { |r| r[:retained_per_job]&.positive? }.max_by { |r| [r[:retained_per_job] * r[:jobs], r[:class]] }
    end

    # "3.0MB/job ±0.1MB, 300 jobs, 58 windows": a retained figure with its evidence.
    def evidence(row)
      error = row[:retained_error] ? " ±#{Units.bytes(row[:retained_error])}" : ""
      "#{Units.bytes(row[:retained_per_job])}/job#{error}, #{row[:jobs]} jobs, #{row[:windows].to_i} windows"
    end

    # Retained per job descending, then growth, then allocated (unknown last), then the name: the order
    # the Rust core gives one process's rows.
    def rank(rows)
      rows.sort_by do |row|
        FIGURES.flat_map { |f| row[f].nil? ? [1, 0] : [0, -row[f]] } + [row[:class]]
      end
    end

    # The `limit` classes with the largest `figure` (known and above zero).
    def top(rows, figure, limit = 5)
      rows.select { |r| r[figure]&.positive? }.sort_by { |r| -r[figure] }.first(limit)
    end

    # Writes one process's rows under its identity, with an expiry of `ttl` seconds.
    def publish(identity, rows, ttl:, adapter: SidekiqAdapter, now: Time.now.to_f)
      ttl = [ttl.ceil, KEEP].max
      classes = rows.first(MAX_CLASSES).map { |row| row.transform_keys(&:to_s) }
      payload = JSON.generate("identity" => identity, "at" => now, "classes" => classes)
      indexed_at = @indexed_at[identity]
      adapter.redis do |conn|
        due = indexed_at.nil? || now - indexed_at >= REFRESH_EVERY
        next unless due || conn.call("SET", "#{KEY_PREFIX}#{identity}", payload, "EX", ttl, "XX").nil?

        index(conn, identity, payload, ttl, now: now)
        @indexed_at[identity] = now
      end
    end

    # The key and its entry in the index, with the index's expiry, in one pipeline. The entry outlives the key by
    # up to REFRESH_EVERY (readers skip a key gone), never the other way round.
    def index(conn, identity, payload, ttl, now: Time.now.to_f)
      conn.pipelined do |pipe|
        pipe.call("SET", "#{KEY_PREFIX}#{identity}", payload, "EX", ttl)
        pipe.call("ZADD", INDEX_KEY, (now + ttl + REFRESH_EVERY).to_s, identity)
        pipe.call("EXPIRE", INDEX_KEY, ttl + REFRESH_EVERY)
      end
    end

    # Every process's published figures, live or gone within KEEP: [{identity:, at:, classes: [rows]}].
    def processes(adapter: SidekiqAdapter, now: Time.now.to_f)
      payloads = adapter.redis do |conn|
        conn.call("ZREMRANGEBYSCORE", INDEX_KEY, "-inf", now.to_s)
        identities = conn.call("ZRANGE", INDEX_KEY, 0, -1)
        identities.empty? ? [] : conn.call("MGET", *identities.map { |i| "#{KEY_PREFIX}#{i}" })
      end
      payloads.compact.map do |json|
        data = JSON.parse(json)
        { identity: data["identity"], at: data["at"],
          classes: data["classes"].map { |c| c.transform_keys(&:to_sym) } }
      end
    end

    # The fleet's rows: per class, jobs added up and each figure averaged over the processes that know it,
    # weighted by their jobs; ranked like one process's rows.
    def fleet(limit: nil, adapter: SidekiqAdapter)
      merged = merge(processes(adapter: adapter).flat_map { |p| p[:classes] })
      limit ? merged.first(limit) : merged
    end

    def merge(rows)
      merged = rows.group_by { |r| r[:class] }.map do |klass, same|
        row = { class: klass, jobs: same.sum { |r| r[:jobs] } }
        FIGURES.each do |figure|
          known = same.reject { |r| r[figure].nil? }
          weight = known.sum { |r| r[:jobs] }
          row[figure] = weight.positive? ? (known.sum { |r| r[figure] * r[:jobs] }.fdiv(weight)).round : nil
        end
        row[:retained_error] = merged_error(same)
        row[:windows] = same.sum { |r| r[:windows].to_i }
        admission(row, same)
      end
      rank(merged)
    end

    # With admission on in any process: the largest working set any process knows (nil: none does) and the jobs
    # sent back to wait, added up.
    def admission(row, same)
      with = same.select { |r| r.key?(:deferred) }
      return row if with.empty?

      row[:working_set] = with.filter_map { |r| r[:working_set] }.max
      row[:deferred] = with.sum { |r| r[:deferred].to_i }
      row
    end

    # The standard error of the jobs-weighted mean of the processes' retained figures (independent fits).
    def merged_error(rows)
      known = rows.reject { |r| r[:retained_error].nil? || r[:retained_per_job].nil? }
      weight = known.sum { |r| r[:jobs] }
      return nil unless weight.positive?

      Math.sqrt(known.sum { |r| (r[:retained_error] * r[:jobs])**2 }).fdiv(weight).round
    end
  end
end
