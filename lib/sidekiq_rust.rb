# frozen_string_literal: true

require_relative "sidekiq_rust/version"
require_relative "sidekiq_rust/error"
require_relative "sidekiq_rust/native"
require_relative "sidekiq_rust/memory"
require_relative "sidekiq_rust/jemalloc"

# Keeps Sidekiq worker processes' memory under control: exact and cheap memory readings,
# allocator reclaim, and graceful restarts that never lose a job nor stop the last process.
module SidekiqRust
end
