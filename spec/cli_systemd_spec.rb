# frozen_string_literal: true

require "spec_helper"
require "sidekiq_rust/cli"

RSpec.describe SidekiqRust::CLI::Systemd do
  let(:out) { StringIO.new }
  let(:err) { StringIO.new }
  let(:command) { described_class.new(out: out, err: err) }

  def unit_for(*argv)
    expect(command.run(argv)).to eq(0), err.string
    out.string
  end

  it "prints a unit for one process, with a TimeoutStopSec the doctor accepts" do
    unit = unit_for("--working-directory", "/srv/app", "--user", "deploy", "-t", "30")
    expect(unit.lines.map(&:chomp)).to include(
      "[Unit]", "After=network.target", "[Service]", "Type=simple", "WorkingDirectory=/srv/app",
      "ExecStart=/usr/bin/env bundle exec sidekiq -t 30", "User=deploy", "Restart=always", "RestartSec=1",
      "KillSignal=SIGTERM", "TimeoutStopSec=50", "[Install]", "WantedBy=multi-user.target"
    )
    stop_sec = Integer(unit[/^TimeoutStopSec=(\d+)$/, 1])
    expect(SidekiqRust::Doctor.timeouts(nil, 30.0, stop_sec).status).to eq(:pass)
  end

  it "never stops sooner than the guard's kill_after, and keeps absolute commands as given" do
    unit = unit_for("--kill-after", "90", "--exec-start", "/opt/app/bin/sidekiq -C config/sidekiq.yml")
    expect(unit).to include("TimeoutStopSec=95\n", "ExecStart=/opt/app/bin/sidekiq -C config/sidekiq.yml\n")
  end

  it "adds Environment= lines: given ones, MALLOC_ARENA_MAX, or the bundled jemalloc" do
    unit = unit_for("--environment", "RAILS_ENV=production", "--malloc-arena-max", "2")
    expect(unit).to include("Environment=RAILS_ENV=production\n", "Environment=MALLOC_ARENA_MAX=2\n")
    jemalloc = described_class.new(out: out2 = StringIO.new, err: err2 = StringIO.new)
    expect(jemalloc.run(["--jemalloc", "--malloc-arena-max", "2"])).to eq(0)
    expect(out2.string).to include("Environment=LD_PRELOAD=#{SidekiqRust.jemalloc_path}\n")
    expect(out2.string).not_to include("MALLOC_ARENA_MAX")
    expect(err2.string).to include("--malloc-arena-max ignored")
  end

  it "prints a template unit for N instances, with how to enable them" do
    unit = unit_for("--instances", "4", "--name", "worker")
    expect(unit).to start_with("# Save as /etc/systemd/system/worker@.service")
    expect(unit).to include("systemctl enable --now worker@{1..4}", "Description=Sidekiq %i (memory guard")
  end

  it "exits 2 on usage errors" do
    expect(command.run(["--instances", "0"])).to eq(2)
    expect(command.run(["--environment", "no-equals"])).to eq(2)
    expect(command.run(["--bogus"])).to eq(2)
    expect(err.string).to include("--instances takes a number above 0", "KEY=VALUE", "invalid option: --bogus")
  end

  it "passes systemd-analyze verify" do
    skip "systemd-analyze is not installed" unless system("which systemd-analyze > /dev/null 2>&1")

    Dir.mktmpdir do |dir|
      [["sidekiq.service", []], ["sidekiq@.service", ["--instances", "2"]]].each do |name, extra|
        text = described_class.new(out: StringIO.new).unit(command.parse(["--working-directory", dir] + extra))
        path = File.join(dir, name)
        File.write(path, text)
        target = name.include?("@") ? path.sub("@.service", "@1.service") : path
        FileUtils.ln_s(path, target) unless target == path
        output, status = Open3.capture2e("systemd-analyze", "verify", target)
        expect(output).not_to match(/#{Regexp.escape(name)}:\d+:/) # no complaint about a line of the unit
        expect(status.success?).to be(true), output
      end
      broken = File.join(dir, "broken.service")
      File.write(broken, "[Service]\nExecStart=bundle exec sidekiq\nRestart=sometimes\n")
      # It complains about a bad line by file and line number (often with exit status 0): what the check above looks for.
      output, = Open3.capture2e("systemd-analyze", "verify", broken)
      expect(output).to match(/broken\.service:3:/)
    end
  end
end
