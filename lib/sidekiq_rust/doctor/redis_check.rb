# frozen_string_literal: true

module SidekiqRust
  module Doctor
    # The `redis` check: reachable, its round trip, and maxmemory-policy noeviction (else Redis may evict
    # jobs).
    module RedisCheck
      module_function

      def check
        rtts = []
        policy = nil
        SidekiqAdapter.redis do |conn|
          5.times do
            started = Process.clock_gettime(Process::CLOCK_MONOTONIC)
            conn.call("PING")
            rtts << (Process.clock_gettime(Process::CLOCK_MONOTONIC) - started)
          end
          policy = begin
            reply = conn.call("CONFIG", "GET", "maxmemory-policy")
            # RESP3 (redis-client) answers a Hash, RESP2 (redis-rb 4) a flat [name, value] Array.
            reply.is_a?(Hash) ? reply["maxmemory-policy"] : Array(reply)[1]
          rescue StandardError
            nil
          end
        end
        rtt = format("%.2fms", rtts.min * 1000)
        case policy
        when "noeviction"
          Check.new(name: "redis", status: :pass, saw: "reachable, round trip #{rtt}, maxmemory-policy noeviction")
        when nil
          Check.new(name: "redis", status: :warn, saw: "reachable, round trip #{rtt}, maxmemory-policy unreadable",
                    todo: "CONFIG GET is disabled here: make sure the policy is noeviction")
        else
          Check.new(name: "redis", status: :fail, saw: "reachable, round trip #{rtt}, maxmemory-policy #{policy}",
                    todo: "Redis may evict Sidekiq's jobs under memory pressure: set maxmemory-policy noeviction")
        end
      rescue StandardError => e
        Check.new(name: "redis", status: :fail, saw: "unreachable: #{e.class}: #{e.message}",
                  todo: "check REDIS_URL / Sidekiq's redis configuration and that the server runs")
      end
    end
  end
end
