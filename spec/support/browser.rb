# frozen_string_literal: true

require "fileutils"
require "json"
require "net/http"
require "socket"
require "timeout"
require "tmpdir"
require_relative "terminate"

# A real headless Chromium (Debian's chromium + chromium-driver), driven through chromedriver's W3C WebDriver HTTP
# API with net/http: no gem. Started per use, stopped (chromedriver and the browser) by #quit.
class Browser
  CHROMEDRIVER = ENV.fetch("CHROMEDRIVER", "/usr/bin/chromedriver")
  CHROMIUM = ENV.fetch("CHROMIUM", "/usr/bin/chromium")
  # Headless, no sandbox (root in a container), and none of the background connections this closed network refuses.
  ARGS = %w[--headless --no-sandbox --disable-gpu --disable-quic --no-first-run --disable-background-networking
            --disable-component-update --disable-sync --disable-dev-shm-usage].freeze

  def self.available?
    File.executable?(CHROMEDRIVER) && File.executable?(CHROMIUM)
  end

  # width x height: the viewport (a 1,400 px desktop by default; 390 x 844 is a phone's).
  def initialize(width: 1400, height: 1800)
    @profile = Dir.mktmpdir("sidekiq_rust-chromium")
    @port = free_port
    @log = File.join(@profile, "chromedriver.log")
    # The browser is the tool, not the code under test: it runs without the suite's LD_PRELOAD (`rake
    # spec:preload`), since Chromium's renderer dies under a preloaded malloc (it has its own, PartitionAlloc).
    @pid = Process.spawn({ "LD_PRELOAD" => nil }, CHROMEDRIVER, "--port=#{@port}", out: @log, err: [:child, :out])
    Timeout.timeout(30) do
      sleep 0.1 until ready?
    end
    # CHROMIUM_ARGS: more switches, e.g. "--force-dark-mode --blink-settings=preferredColorScheme=0" (a dark theme).
    args = ARGS + ENV.fetch("CHROMIUM_ARGS", "").split +
           ["--window-size=#{[width, 500].max},#{height}", "--user-data-dir=#{@profile}/data"]
    options = { binary: CHROMIUM, args: args }
    # A window is at least 500 px wide: narrower, the page gets a phone's viewport (Chromium's device emulation).
    if width < 500
      options[:mobileEmulation] = { deviceMetrics: { width: width, height: height, pixelRatio: 1, touch: true,
                                                     mobile: true } }
    end
    capabilities = { browserName: "chrome", "goog:chromeOptions": options }
    @session = request(:post, "/session", capabilities: { alwaysMatch: capabilities })["sessionId"]
  end

  def visit(url)
    request(:post, "/session/#{@session}/url", url: url)
  end

  # Runs `script` (a function body; `arguments` holds args) in the page and returns its value.
  def execute(script, *args)
    request(:post, "/session/#{@session}/execute/sync", script: script, args: args)
  end

  # Resizes the window (a desktop's: at least 500 px wide).
  def resize(width, height)
    request(:post, "/session/#{@session}/window/rect", width: width, height: height)
  end

  def text
    execute("return document.body.innerText")
  end

  # Saves a PNG of the window (its directory made first).
  def screenshot(path)
    FileUtils.mkdir_p(File.dirname(path))
    File.binwrite(path, request(:get, "/session/#{@session}/screenshot").unpack1("m")) # base64
  end

  def quit
    request(:delete, "/session/#{@session}") if @session
  rescue StandardError
    nil
  ensure
    stop_driver
    FileUtils.rm_rf(@profile)
  end

  private

  def stop_driver
    Terminate.child(@pid) if @pid
    @pid = nil
  end

  def free_port
    server = TCPServer.new("127.0.0.1", 0)
    server.addr[1]
  ensure
    server&.close
  end

  def ready?
    request(:get, "/status")["ready"]
  rescue SystemCallError, EOFError, RuntimeError
    false
  end

  # One WebDriver command; returns its "value", raises with WebDriver's error message.
  def request(method, path, body = nil)
    http = Net::HTTP.new("127.0.0.1", @port)
    http.read_timeout = 120
    req = { get: Net::HTTP::Get, post: Net::HTTP::Post, delete: Net::HTTP::Delete }.fetch(method).new(path)
    if body
      req["Content-Type"] = "application/json"
      req.body = JSON.generate(body)
    end
    response = http.request(req)
    value = JSON.parse(response.body)["value"]
    raise "WebDriver #{method.upcase} #{path}: #{value['error']}: #{value['message']}" if value.is_a?(Hash) && value["error"]

    value
  end
end
