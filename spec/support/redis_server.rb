# frozen_string_literal: true

require "socket"
require "timeout"
require_relative "terminate"

# A real redis-server for the suite, on a unix socket in a temporary directory; stopped and removed after.
class RedisServer
  attr_reader :socket, :dir

  def self.binary
    ENV.fetch("REDIS_SERVER", "redis-server")
  end

  def initialize
    @dir = Dir.mktmpdir("sidekiq_rust-redis")
    @socket = File.join(@dir, "redis.sock")
    @pid = nil
  end

  def start
    @pid = Process.spawn(self.class.binary, "--port", "0", "--unixsocket", @socket, "--unixsocketperm", "700",
                         "--save", "", "--appendonly", "no", "--dir", @dir,
                         out: File.join(@dir, "redis.log"), err: [:child, :out])
    Timeout.timeout(20) do
      sleep 0.05 until File.socket?(@socket) && ping
    end
    self
  end

  def running?
    !@pid.nil? && Process.waitpid(@pid, Process::WNOHANG).nil?
  rescue Errno::ECHILD
    false
  end

  # Sends one inline command and returns the raw reply line.
  def command(*words)
    UNIXSocket.open(@socket) do |s|
      s.write("#{words.join(' ')}\r\n")
      s.gets
    end
  end

  def ping
    command("PING")&.start_with?("+PONG")
  rescue SystemCallError
    false
  end

  def flushall
    command("FLUSHALL")
  end

  def stop
    return unless @pid

    Terminate.child(@pid)
    @pid = nil
  end

  def cleanup
    stop
    FileUtils.rm_rf(@dir)
  end
end
