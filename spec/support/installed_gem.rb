# frozen_string_literal: true

require "json"
require_relative "../../gemfiles/matrix"
require_relative "../../tasks/native_gem"

# Helpers of the packaging specs (spec/install_spec.rb, spec/native_gem_spec.rb): run the sidekiq_rust installed
# in a SidekiqRustPackaging::GemHome from a temporary directory, with nothing pointing into the checkout (no -I,
# RUBYLIB, RUBYOPT or BUNDLE_GEMFILE), on the matrix entry's Ruby and Sidekiq.
module InstalledGem
  CHECKOUT = File.expand_path("../..", __dir__)
  APP = File.expand_path("../fixtures/installed_app.rb", __dir__)
  # Activates the matrix entry's Sidekiq before sidekiq_rust's gem would activate the newest one. (The commands
  # of the gem's bin run with the newest: they do not need the entry's.)
  SIDEKIQ_OF_ENTRY = "gem 'sidekiq', ENV.fetch('SIDEKIQ_VERSION'); "

  # The environment of a command of the installed gem; `path` is its PATH.
  def installed_env(home, path, extra = {})
    home.env.merge("PATH" => path, "REDIS_SOCKET" => redis_server.socket, "SIDEKIQ_VERSION" => Sidekiq::VERSION)
        .merge(extra)
  end

  # Runs a command in the temporary directory; returns [output, status].
  def run_installed(home, path, *command, env: {})
    Open3.capture2e(installed_env(home, path, env), *command, chdir: @installed_dir, stdin_data: "")
  end

  # PATH without the directories that hold cargo or rustc.
  def self.path_without_rust(path = ENV.fetch("PATH"))
    path.split(File::PATH_SEPARATOR).reject do |dir|
      %w[cargo rustc].any? { |tool| File.executable?(File.join(dir, tool)) }
    end.join(File::PATH_SEPARATOR)
  end

  # The paths of `$LOADED_FEATURES` etc. that the installed app (spec/fixtures/installed_app.rb) reports.
  def installed_report(home, path)
    report = File.join(@installed_dir, "report.json")
    out, status = run_installed(home, path, RbConfig.ruby, "-e", "#{SIDEKIQ_OF_ENTRY}require './app'",
                                env: { "INSTALLED_REPORT" => report })
    raise "the installed app failed (#{status}):\n#{out}" unless status.success?

    JSON.parse(File.read(report))
  end

  # `sidekiq -r ./app.rb` of the entry's Sidekiq version; waits for it to exit by itself. Returns [status, log].
  def run_installed_sidekiq(home, path, timeout: 120)
    log = File.join(@installed_dir, "sidekiq.log")
    launcher = "#{SIDEKIQ_OF_ENTRY}load Gem.bin_path('sidekiq', 'sidekiq')"
    pid = Process.spawn(installed_env(home, path), RbConfig.ruby, "-e", launcher, "--", "-r", "./app.rb", "-c", "2",
                        "-t", "5", "-q", "default", chdir: @installed_dir, out: log, err: [:child, :out])
    status = begin
      Timeout.timeout(timeout) { Process.wait2(pid).last }
    rescue Timeout::Error
      Process.kill(:KILL, pid)
      Process.wait(pid)
      raise "sidekiq did not restart within #{timeout}s:\n#{File.read(log)}"
    end
    [status, File.read(log)]
  end
end

# What every install of the gem must do from its GEM_HOME. The including group defines `home` (the GemHome),
# `path` (the commands' PATH) and `extension` (the extension's path inside the installed gem's directory).
RSpec.shared_examples "an installed sidekiq_rust" do
  include E2E
  include InstalledGem

  around do |example|
    Dir.mktmpdir("sidekiq_rust-installed") do |dir|
      @installed_dir = dir
      FileUtils.cp(InstalledGem::APP, File.join(dir, "app.rb"))
      example.run
    end
  end

  it "loads sidekiq_rust and its extension from the GEM_HOME, and nothing from the checkout" do
    report = installed_report(home, path)
    gem_dir = home.gem_dir("sidekiq_rust")
    expect(report["gem_dir"]).to eq(gem_dir)
    checkout = /\A#{Regexp.escape(InstalledGem::CHECKOUT)}/
    expect(report["features"].grep(checkout)).to eq([])
    expect(report["load_path"].grep(checkout)).to eq([])
    # The gem's own files (lib/sidekiq_rust.rb, lib/sidekiq_rust/**): all from the GEM_HOME, the extension too.
    own = report["features"].grep(%r{/lib/sidekiq_rust(\.rb|/)})
    expect(own).to include(File.join(gem_dir, "lib", extension), File.join(gem_dir, "lib/sidekiq_rust.rb"))
    expect(own).to all(start_with("#{gem_dir}/"))
    expect(report["sidekiq"]).to eq(Sidekiq::VERSION)
    expect(report["memory"]).to be > 10 * 1024 * 1024
  end

  it "guards a real Sidekiq process: over the hard limit it reclaims, then restarts it; the job is done" do
    push("KeepJob", 250)
    status, log = run_installed_sidekiq(home, path)
    expect(status.exitstatus).to eq(0), log
    expect(log).to match(/sidekiq_rust: guard started .*max_rss=150MB hard_max_rss=200MB/)
    expect(log).to include("KeepJob kept 250MB")
    expect(log).to match(/reclaimed \d+MB .*still over the limit/)
    expect(log).to match(/restarting: quiet \(TSTP\).*reason=hard_max_rss/)
    expect(redis_call("LLEN", "queue:default")).to eq(0)
  end

  it "runs `sidekiq_rust doctor` from the installed gem's bin" do
    out, status = run_installed(home, path, home.bin("sidekiq_rust"), "doctor", "-r", "./app.rb", "--json")
    expect([0, 1]).to include(status.exitstatus), out
    checks = JSON.parse(out[out.index("{")..])["checks"].to_h { |check| [check["name"], check] }
    expect(checks["limits"]["saw"]).to start_with("max_rss 150MB")
    expect(checks["redis"]).to include("status" => "pass")
  end

  it "runs `sidekiq_rust exec` from the installed gem's bin: the child runs the bundled jemalloc" do
    code = 'require "sidekiq_rust"; print [ENV["LD_PRELOAD"], SidekiqRust::Allocator.name, ' \
           "SidekiqRust::Allocator.source].join(' ')"
    out, status = run_installed(home, path, home.bin("sidekiq_rust"), "exec", "--", RbConfig.ruby, "-e", code)
    expect(status.exitstatus).to eq(0), out
    preload, name, source = out.split
    expect(preload).to start_with("#{home.gem_dir('sidekiq_rust')}/").and end_with("/sidekiq_rust_jemalloc.so")
    expect([name, source]).to eq(%w[jemalloc preloaded])
  end
end
