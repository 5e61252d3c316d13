# frozen_string_literal: true

require "spec_helper"
require "json"

# End to end in a real Rails 6.1 app (spec/fixtures/rails_app: ActiveRecord on sqlite3, ActiveJob on Sidekiq, the
# README's initializer), copied to a temporary directory and run as a user runs it: `bin/rails runner`, `sidekiq`
# at the app's root, `sidekiq_rust doctor`. The app runs outside this suite's Bundler, on the Sidekiq version of
# the matrix entry and this checkout's lib (as `gem "sidekiq_rust", path:` would).
RSpec.describe "sidekiq_rust in a Rails app (Sidekiq #{Sidekiq::VERSION})" do
  include E2E

  FIXTURE_APP = File.expand_path("fixtures/rails_app", __dir__)
  EXE = File.expand_path("../exe/sidekiq_rust", __dir__)

  # Rails 6.1 comes from Debian's ruby-rails (bin/setup); a matrix entry without it (a newer Ruby) skips these. Ruby
  # 3.4 has Rails 7.2 (bin/setup), whose app is spec/rails72_app_spec.rb's: this fixture is a Rails 6.1 app.
  def self.rails_missing_reason
    out, status = Bundler.with_unbundled_env do
      Open3.capture2e(RbConfig.ruby, "-e", 'gem "railties", "~> 6.1.0"; require "rails"; ' \
                                           'require "active_record/railtie"; require "sqlite3"; print Rails.version')
    end
    status.success? ? nil : "Rails 6.1 cannot be loaded by this Ruby (#{RUBY_VERSION}): #{out.lines.first&.strip}"
  end

  RAILS_MISSING = rails_missing_reason

  before { skip RAILS_MISSING if RAILS_MISSING }

  around do |example|
    Dir.mktmpdir("sidekiq_rust-rails") do |dir|
      @app = File.join(dir, "app")
      FileUtils.cp_r(FIXTURE_APP, @app)
      example.run
    end
  end

  def app_env(extra = {})
    { "SIDEKIQ_VERSION" => Sidekiq::VERSION, "SIDEKIQ_RUST_LIB" => ChildRuby::LIB,
      "REDIS_URL" => "unix://#{redis_server.socket}", "RAILS_ENV" => "development" }.merge(extra)
  end

  # Runs a command in the app's directory, outside this suite's Bundler; returns [output, status].
  def in_app(env, *command)
    Bundler.with_unbundled_env do
      Open3.capture2e(app_env(env), *command, chdir: @app)
    end
  end

  # `sidekiq` at the app's root, as `bundle exec sidekiq` runs it there (it loads config/environment itself).
  def start_sidekiq(env)
    log = File.join(@app, "sidekiq.log")
    launcher = "gem 'sidekiq', ENV.fetch('SIDEKIQ_VERSION'); load Gem.bin_path('sidekiq', 'sidekiq')"
    pid = Bundler.with_unbundled_env do
      Process.spawn(app_env(env), RbConfig.ruby, "-e", launcher, chdir: @app, out: log, err: [:child, :out])
    end
    [pid, log]
  end

  it "runs `rails runner` with a percentage limit and no cgroup limit, or no limit at all, without raising" do
    skip "this machine has a memory cgroup limit" if SidekiqRust::Memory.cgroup&.fetch(:limit)

    out, status = in_app({}, RbConfig.ruby, "bin/rails", "runner",
                         "print [SidekiqRust.configuration.max_rss, Sidekiq::VERSION, Rails.version].join(' ')")
    expect(status.exitstatus).to eq(0), out
    expect(out).to end_with("80% #{Sidekiq::VERSION} 6.1.7.10")
    # An unset variable: max_rss nil, required only where the guard starts.
    out, status = in_app({ "SIDEKIQ_RUST_UNSET" => nil }, RbConfig.ruby, "bin/rails", "runner",
                         'SidekiqRust.configure { |c| c.max_rss = ENV["SIDEKIQ_RUST_UNSET"] }; print :ok')
    expect(status.exitstatus).to eq(0), out
    expect(out).to end_with("ok")
    # The form of a value still fails wherever configure runs.
    out, status = in_app({ "SIDEKIQ_MAX_RSS" => "300 megs" }, RbConfig.ruby, "bin/rails", "runner", "print :ok")
    expect(status.exitstatus).not_to eq(0)
    expect(out).to include('max_rss is "300 megs"')
  end

  it "restarts a sole Sidekiq process over the hard limit (after a reclaim); the job that grew it is done",
     allocator: true do
    out, status = in_app({}, RbConfig.ruby, "bin/rails", "runner", "ReportJob.perform_later(250)")
    expect(status.exitstatus).to eq(0), out
    pid, log = start_sidekiq("SIDEKIQ_MAX_RSS" => "150MB", "SIDEKIQ_HARD_MAX_RSS" => "200MB")
    status = begin
      Timeout.timeout(120) { Process.wait2(pid).last }
    rescue Timeout::Error
      Process.kill(:KILL, pid)
      Process.wait(pid)
      raise "sidekiq did not restart within 120s:\n#{File.read(log)}"
    end
    text = File.read(log)
    expect(status.exitstatus).to eq(0), text
    expect(text).to include("ReportJob kept 250MB")
    expect(text).to match(/reclaimed \d+MB .*still over the limit/)
    expect(text).to match(/restarting: quiet \(TSTP\).*reason=hard_max_rss/)
    expect(text).not_to include("no other live Sidekiq process")
    expect(redis_call("LLEN", "queue:default")).to eq(0)
  end

  # A directory with a `sidekiq` that runs the suite's Sidekiq version, to put first in PATH: the printed start
  # command without `bundle exec` (the fixture app has no Gemfile; its boot.rb picks the gems).
  def sidekiq_on_path
    bin = File.join(@app, "test_bin")
    FileUtils.mkdir_p(bin)
    File.write(File.join(bin, "sidekiq"), <<~RUBY)
      #!#{RbConfig.ruby}
      gem "sidekiq", ENV.fetch("SIDEKIQ_VERSION")
      load Gem.bin_path("sidekiq", "sidekiq")
    RUBY
    File.chmod(0o755, File.join(bin, "sidekiq"))
    "#{bin}:#{ENV.fetch('PATH')}"
  end

  it "`bin/rails generate sidekiq_rust:install` writes the initializer with every key and config/sidekiq.yml, " \
     "says what to do next, and refuses to overwrite either without --force" do
    # Only Rails' generator lookup loads the generator: requiring the gem loads no Rails.
    expect(ruby_output("print defined?(Rails).inspect, defined?(SidekiqRust::Generators).inspect")).to eq("nilnil")
    initializer = File.join(@app, "config/initializers/sidekiq_rust.rb")
    sidekiq_yml = File.join(@app, "config/sidekiq.yml")
    FileUtils.rm([initializer, sidekiq_yml]) # as in a fresh app: neither `rails new` nor Sidekiq writes them
    out, status = in_app({}, RbConfig.ruby, "bin/rails", "generate", "sidekiq_rust:install")
    expect(status.exitstatus).to eq(0), out
    expect(out).to match(%r{create\s+config/initializers/sidekiq_rust\.rb})
    expect(out).to match(%r{create\s+config/sidekiq\.yml})
    expect(out).to include('require "sidekiq_rust/web"', "Rack::Auth::Basic", "authenticate :user",
                           "mount sidekiq_web_auth.call(SidekiqRust::Metrics::App)",
                           "bundle exec sidekiq_rust exec -- sidekiq -C config/sidekiq.yml",
                           "bundle exec sidekiq_rust doctor")
    # Step 2 as printed, pasted into config/routes.rb: both mounts answer 401 without the credentials, the
    # metrics 200 with them.
    printed = out.lines.map(&:chomp)
    first = printed.index { |line| line.include?('require "sidekiq/web"') }
    last = printed.index { |line| line.include?("mount sidekiq_web_auth.call(SidekiqRust::Metrics::App)") }
    snippet = printed[first..last].map { |line| line.delete_prefix("     ") }
    File.write(File.join(@app, "config/routes.rb"),
               "Rails.application.routes.draw do\n#{snippet.map { |l| "  #{l}".rstrip }.join("\n")}\nend\n")
    probe = <<~RUBY
      r = Rack::MockRequest.new(Rails.application)
      get = ->(path, credentials = nil) do
        headers = { "HTTP_HOST" => "localhost" }
        headers["HTTP_AUTHORIZATION"] = "Basic " + [credentials].pack("m0") if credentials
        r.get(path, headers).status
      end
      print [get.("/sidekiq_rust/metrics"), get.("/sidekiq"), get.("/sidekiq_rust/metrics", "ops:wrong"),
             get.("/sidekiq_rust/metrics", "ops:s3cret")].join(" ")
    RUBY
    out, status = in_app({ "SIDEKIQ_WEB_USER" => "ops", "SIDEKIQ_WEB_PASSWORD" => "s3cret" }, RbConfig.ruby,
                         "bin/rails", "runner", probe)
    expect(status.exitstatus).to eq(0), out
    expect(out).to end_with("401 401 401 200")
    out, status = in_app({}, RbConfig.ruby, "bin/rails", "runner", probe.sub("ops:s3cret", "ops:"))
    expect(out).to end_with("401 401 401 401"), out # no credentials set: nobody gets in

    # Sidekiq's own file, its ERB kept for Sidekiq to read: concurrency from RAILS_MAX_THREADS, the default queue.
    yml = File.read(sidekiq_yml)
    expect(yml).to include(%(:concurrency: <%= ENV.fetch("RAILS_MAX_THREADS", 5) %>\n:queues:\n  - default\n))
    [[{}, 5], [{ "RAILS_MAX_THREADS" => "4" }, 4]].each do |env, concurrency|
      out, status = in_app(env.merge("SIDEKIQ_MAX_RSS" => "1GB"), RbConfig.ruby, EXE, "doctor", "--no-redis", "--json")
      expect(status.exitstatus).to eq(0), out
      checks = JSON.parse(out[out.index("{")..])["checks"].to_h { |c| [c["name"], c] }
      expect(checks["sidekiq"]["saw"])
        .to eq("#{sidekiq_yml} (development): concurrency #{concurrency}, timeout not set")
      expect(checks["db pool"]["status"]).to eq("pass")
    end
    text = File.read(initializer)
    # Every key of the Configuration: the limits set from the environment, the others commented with their default.
    commented = text.scan(/^  # c\.(\w+) = (.+)$/).to_h
    keys = SidekiqRust::Configuration.public_instance_methods(false).grep(/\A\w+=\z/).map { |m| m.to_s.chomp("=") }
    expect(commented.keys + %w[max_rss hard_max_rss]).to match_array(keys)
    defaults = SidekiqRust::Configuration.new
    commented.each { |key, value| expect(value).to eq(defaults.public_send(key).inspect), key }
    expect(text).to include('c.max_rss = ENV.fetch("SIDEKIQ_MAX_RSS")', 'c.hard_max_rss = ENV.fetch("SIDEKIQ_HARD_MAX_RSS") { :auto }')

    # It boots the app with no Redis to reach: `rails runner`, and a rake task that loads the environment (as
    # `assets:precompile` does), in production.
    no_redis = { "REDIS_URL" => "redis://127.0.0.1:1/0", "RAILS_ENV" => "production" }
    fallback = SidekiqRust::Memory.cgroup&.fetch(:limit, nil) ? "80%" : "1GB"
    out, status = in_app(no_redis, RbConfig.ruby, "bin/rails", "runner", "print SidekiqRust.configuration.max_rss")
    expect(status.exitstatus).to eq(0), out
    expect(out).to end_with(fallback)
    out, status = in_app(no_redis, RbConfig.ruby, "bin/rails", "middleware")
    expect(status.exitstatus).to eq(0), out
    out, status = in_app(no_redis.merge("SIDEKIQ_MAX_RSS" => "300 megs"), RbConfig.ruby, "bin/rails", "runner", "1")
    expect(status.exitstatus).not_to eq(0)
    expect(out).to include('max_rss is "300 megs"')

    # An app's own config/sidekiq.yml (Sidekiq ran before the gem came) is left as it is and said so; the
    # generator goes on and writes the initializer.
    FileUtils.rm(initializer)
    File.write(sidekiq_yml, ":concurrency: 3\n:queues:\n  - critical\n  - default\n")
    out, status = in_app({}, RbConfig.ruby, "bin/rails", "generate", "sidekiq_rust:install")
    expect(status.exitstatus).to eq(0), out
    expect(out).to match(%r{exist\s+config/sidekiq\.yml \(the app's own, left as it is; --force replaces it\)})
    expect(out).to match(%r{create\s+config/initializers/sidekiq_rust\.rb})
    expect(File.read(sidekiq_yml)).to eq(":concurrency: 3\n:queues:\n  - critical\n  - default\n")
    expect(File.read(initializer)).to eq(text)

    # An existing initializer: the generator refuses and writes nothing without --force; with it, both files are
    # rewritten.
    File.write(initializer, "#{text}# edited by the app\n")
    out, status = in_app({}, RbConfig.ruby, "bin/rails", "generate", "sidekiq_rust:install")
    expect(status.exitstatus).to eq(1), out
    expect(out).to include("config/initializers/sidekiq_rust.rb already exists", "--force")
    expect(File.read(initializer)).to end_with("# edited by the app\n")
    expect(File.read(sidekiq_yml)).to include("critical")
    out, status = in_app({}, RbConfig.ruby, "bin/rails", "generate", "sidekiq_rust:install", "--force")
    expect(status.exitstatus).to eq(0), out
    expect(File.read(initializer)).to eq(text)
    expect(File.read(sidekiq_yml)).to eq(yml)

    # The printed start command, at the app's root (without `bundle exec`: the fixture has no Gemfile), starts
    # Sidekiq on the generated file, under jemalloc, with the guard the initializer configures.
    log = File.join(@app, "sidekiq.log")
    pid = Bundler.with_unbundled_env do
      Process.spawn(app_env("SIDEKIQ_MAX_RSS" => "900MB", "RAILS_MAX_THREADS" => "4", "PATH" => sidekiq_on_path),
                    RbConfig.ruby, EXE, "exec", "--", "sidekiq", "-C", "config/sidekiq.yml",
                    chdir: @app, out: log, err: [:child, :out])
    end
    begin
      Timeout.timeout(60) { sleep 0.2 until File.exist?(log) && File.read(log).include?("guard started") }
      # `exec` replaced itself with Sidekiq (the same pid), whose concurrency is RAILS_MAX_THREADS.
      heartbeat = eventually(timeout: 20, what: "its heartbeat") { live_processes.find { |p| p["pid"] == pid } }
      expect(heartbeat["concurrency"]).to eq(4)
    rescue Timeout::Error
      raise "sidekiq did not start the guard within 60s:\n#{File.read(log)}"
    ensure
      Terminate.child(pid)
    end
    # hard_max_rss :auto: 1.5 x max_rss (at most 90% of the cgroup's limit, where there is one).
    expect(File.read(log)).to match(/guard started .*max_rss=900MB hard_max_rss=\d+MB allocator=jemalloc /)
  end

  it "doctor at the app's root loads the app and reads config/sidekiq.yml" do
    out, status = in_app({ "SIDEKIQ_MAX_RSS" => "1GB" }, RbConfig.ruby, EXE, "doctor", "--no-redis", "--json")
    expect(status.exitstatus).to eq(0), out
    checks = JSON.parse(out[out.index("{")..])["checks"].to_h { |c| [c["name"], c] }
    expect(checks["sidekiq"]["saw"]).to eq("#{@app}/config/sidekiq.yml (development): concurrency 3, timeout 10")
    expect(checks["db pool"]).to include("status" => "pass", "saw" => "ActiveRecord pool 5 >= Sidekiq concurrency 3")
    expect(checks["limits"]["saw"]).to start_with("max_rss 1024MB")
    expect(checks["timeouts"]["saw"]).to start_with("Sidekiq timeout 10.0s, guard kill_after 25.0s")
    out, = in_app({ "SIDEKIQ_MAX_RSS" => "1GB", "RAILS_ENV" => "production" }, RbConfig.ruby, EXE, "doctor",
                  "--no-redis")
    expect(out).to include("config/sidekiq.yml (production): concurrency 4, timeout 10")
  end
end
