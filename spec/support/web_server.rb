# frozen_string_literal: true

require "logger"
require "rack"
require "securerandom"
require "webrick"
# Rack 3 moved the session middleware and the server handlers into gems of their own (rack-session, rackup).
RACK3 = Gem::Version.new(Rack::RELEASE) >= Gem::Version.new("3")
if RACK3
  require "rack/session"
  require "rackup"
end

# A real Rack server (WEBrick) on a free loopback port, in a thread of this process: Sidekiq's Web UI at /sidekiq
# (with the Memory tab) and SidekiqRust::Metrics::App at /metrics, as a Rails app would mount them.
# Used by the Web UI specs and `bin/demo --web`.
class WebServer
  attr_reader :url

  # The Rack app: a session (Sidekiq 6/7's CSRF protection wants one), then the two mounts.
  def self.app
    require "sidekiq/web"
    require "sidekiq_rust/web"
    require "sidekiq_rust/metrics"
    Rack::Builder.new do
      use Rack::Session::Cookie, secret: SecureRandom.hex(32), same_site: true, max_age: 86_400
      map("/metrics") { run SidekiqRust::Metrics::App }
      map("/sidekiq") { run Sidekiq::Web }
    end
  end

  def initialize(app = self.class.app)
    @app = app
    @server = nil
    @thread = nil
  end

  def start
    @server = WEBrick::HTTPServer.new(BindAddress: "127.0.0.1", Port: 0, Logger: WEBrick::Log.new(File::NULL),
                                      AccessLog: [])
    @server.mount("/", RACK3 ? Rackup::Handler::WEBrick : Rack::Handler::WEBrick, @app)
    port = @server.listeners.first.addr[1]
    @url = "http://127.0.0.1:#{port}"
    @thread = Thread.new { @server.start }
    self
  end

  def stop
    @server&.shutdown
    @thread&.join(10)
    @server = nil
  end
end
