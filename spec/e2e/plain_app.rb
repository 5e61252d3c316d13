# frozen_string_literal: true

# A Sidekiq application without sidekiq_rust: what Sidekiq alone sends to Redis (its heartbeat), for the Redis
# load specs and bench/redis_load.rb to compare with.
require "sidekiq"
Redis.silence_deprecations = true if defined?(Redis) && Redis.respond_to?(:silence_deprecations=)

redis = { path: ENV.fetch("REDIS_SOCKET") }
Sidekiq.configure_server { |config| config.redis = redis }
Sidekiq.configure_client { |config| config.redis = redis }
