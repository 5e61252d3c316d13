# frozen_string_literal: true

# Another program's process (a stand-in for Puma or a console) running Sidekiq embedded (Sidekiq 7+,
# Sidekiq.configure_embed) with spec/e2e/app.rb's jobs and guard. E2E_EMBED_HANDLE=1 hands the instance to the
# guard (SidekiqRust.embed). The host logs "host: alive" every half second until it is signalled.
require_relative "app"

$stdout.sync = true
instance = Sidekiq.configure_embed do |config|
  config.queues = %w[default]
  config.concurrency = Integer(ENV.fetch("E2E_CONCURRENCY"))
  config[:timeout] = Integer(ENV.fetch("E2E_TIMEOUT"))
end
SidekiqRust.embed(instance) if ENV["E2E_EMBED_HANDLE"] == "1"
instance.run
Sidekiq.logger.info("host: embedded Sidekiq running in pid #{Process.pid}")
loop do
  puts "host: alive"
  sleep 0.5
end
