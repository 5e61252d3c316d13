# frozen_string_literal: true

require_relative "../../spec/support/sidekiq_process"

# A real `sidekiq` process of bench/fleet_compare.rb: bench/support/fleet_app.rb under one strategy's environment
# (FLEET_GUARD, FLEET_KILLER, LD_PRELOAD). Started once its :startup event has run (the guard, if any, started).
class FleetProcess < SidekiqProcess
  APP = File.expand_path("fleet_app.rb", __dir__)

  def start
    env = { "REDIS_SOCKET" => @redis.socket }.merge(@env)
    @pid = Process.spawn(env, *command, out: @log_path, err: [:child, :out])
    wait_for_log(/fleet: strategy/, timeout: 60)
    self
  rescue StandardError
    stop # not listed by the supervisor yet: nobody else would
    raise
  end

  def command
    [RbConfig.ruby, "-rbundler/setup", Gem.bin_path("sidekiq", "sidekiq"), "-r", APP, "-c", @concurrency.to_s,
     "-t", @timeout.to_s, "-q", "default"]
  end

  def killed?
    !@status.nil? && @status.signaled? && @status.termsig == Signal.list.fetch("KILL")
  end
end
