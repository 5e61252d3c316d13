# frozen_string_literal: true

# Strategy (b) of bench/fleet_compare.rb: the hand-written killer the blog posts describe, written here from
# that description (no gem): after each job, if the process's RSS is over the limit, GC.start; if it is still
# over, quiet the process (TSTP to itself) and stop it (TERM to itself) a few seconds later, for the supervisor
# to start it again. Racy on purpose, as these middlewares are: every process decides alone (the whole fleet can
# stop at once), nothing waits for the running jobs beyond Sidekiq's own shutdown timeout, and the job threads
# that end while the process quiets each read /proc and run a GC of their own.
class RssKiller
  STOP_AFTER = 5 # seconds between TSTP and TERM

  @stopping = false

  class << self
    attr_accessor :stopping
  end

  def initialize(limit_mb)
    @limit = limit_mb * 1024 * 1024
  end

  def call(_worker, _job, _queue)
    yield
  ensure
    check
  end

  private

  def check
    return if RssKiller.stopping || rss <= @limit

    GC.start
    return if rss <= @limit

    RssKiller.stopping = true
    Sidekiq.logger.warn("killer: RSS #{rss / 1_048_576}MB over #{@limit / 1_048_576}MB after GC.start: stopping")
    Process.kill("TSTP", Process.pid)
    Thread.new do
      sleep STOP_AFTER
      Process.kill("TERM", Process.pid)
    end
  end

  def rss
    File.foreach("/proc/self/status") { |line| return line.split[1].to_i * 1024 if line.start_with?("VmRSS:") }
    0
  end
end
