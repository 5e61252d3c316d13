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
    expect(SidekiqRust::Doctor::TimeoutsCheck.check(nil, 30.0, stop_sec).status).to eq(:pass)
  end

  it "never stops sooner than the guard's kill_after, and keeps absolute commands as given" do
    unit = unit_for("--kill-after", "90", "--exec-start", "/opt/app/bin/sidekiq -C config/sidekiq.yml")
    expect(unit).to include("TimeoutStopSec=95\n", "ExecStart=/opt/app/bin/sidekiq -C config/sidekiq.yml\n")
    guard = SidekiqRust::Configuration.new
    guard.kill_after = 90.0
    expect(SidekiqRust::Doctor::TimeoutsCheck.check(guard, 25.0, 95).status).to eq(:pass)
  end

  it "runs a relative command through /usr/bin/env, rounds a fractional kill_after up, makes the directory absolute" do
    unit = unit_for("--exec-start", "bin/sidekiq -C config/sidekiq.yml", "--kill-after", "50.5",
                    "--working-directory", "app")
    expect(unit).to include("ExecStart=/usr/bin/env bin/sidekiq -C config/sidekiq.yml\n", "TimeoutStopSec=56\n",
                            "WorkingDirectory=#{File.join(Dir.pwd, 'app')}\n")
  end

  it "adds Environment= lines: given ones, MALLOC_ARENA_MAX, or the bundled jemalloc" do
    unit = unit_for("--environment", "RAILS_ENV=production", "--malloc-arena-max", "2")
    expect(unit).to include("Environment=RAILS_ENV=production\n", "Environment=MALLOC_ARENA_MAX=2\n")
    jemalloc = described_class.new(out: out2 = StringIO.new, err: err2 = StringIO.new)
    expect(jemalloc.run(["--jemalloc", "--malloc-arena-max", "2"])).to eq(0)
    # Through the gem's launcher, not a path that goes stale at the next gem upgrade.
    expect(out2.string).to include("ExecStart=/usr/bin/env bundle exec sidekiq_rust exec -- sidekiq -t 25\n")
    expect(out2.string).not_to include("LD_PRELOAD")
    expect(out2.string).not_to include("MALLOC_ARENA_MAX")
    expect(err2.string).to include("--malloc-arena-max ignored")
  end

  # Issue 26: `systemd --jemalloc` wrote no Environment=SIDEKIQ_MAX_RSS, so the unit ran at the initializer's
  # fallback (1GB), whatever the environment it was written from said.
  it "carries the guard's SIDEKIQ_* variables set here into Environment= lines, an --environment of the same name " \
     "winning, and no other SIDEKIQ_* variable" do
    env = { "SIDEKIQ_MAX_RSS" => "1.5GB", "SIDEKIQ_HARD_MAX_RSS" => "1800MB", "SIDEKIQ_WEB_PASSWORD" => "secret" }
    unit = described_class.new(out: out, err: err, env: env).unit(described_class.new(env: env).parse(["--jemalloc"]))
    expect(unit).to include("ExecStart=/usr/bin/env bundle exec sidekiq_rust exec -- sidekiq -t 25\n" \
                            "Environment=SIDEKIQ_MAX_RSS=1.5GB\nEnvironment=SIDEKIQ_HARD_MAX_RSS=1800MB\n")
    expect(unit).not_to include("secret", "The guard's limits")
    given = described_class.new(env: env).parse(["--environment", "SIDEKIQ_MAX_RSS=2GB"])
    expect(described_class.new(env: env).unit(given).scan(/^Environment=.*$/))
      .to eq(["Environment=SIDEKIQ_MAX_RSS=2GB", "Environment=SIDEKIQ_HARD_MAX_RSS=1800MB"])
    expect(described_class.new(env: {}).unit(described_class.new(env: {}).parse([]))).not_to include("Environment=")
  end

  it "takes the app's configuration with -r: its kill_after, and its limits in a comment, assuming none it lacks" do
    Dir.mktmpdir do |dir|
      File.write(File.join(dir, "init.rb"), <<~RUBY)
        SidekiqRust.configure do |c|
          c.max_rss = ENV.fetch("SIDEKIQ_MAX_RSS", "1GB")
          c.hard_max_rss = ENV["SIDEKIQ_HARD_MAX_RSS"]
          c.kill_after = 70
        end
      RUBY
      unit = unit_for("-r", File.join(dir, "init.rb"), "-t", "30")
      init = File.join(dir, "init.rb")
      expect(unit).to start_with("# The guard's limits, from the app's configuration (-r #{init}): max_rss \"1GB\", " \
                                 "hard_max_rss none.\n\n[Unit]\n")
      expect(unit).to include("TimeoutStopSec=75\n") # the app's kill_after 70 + 5, above 30 + 15
      SidekiqRust.reset_configuration
      File.write(File.join(dir, "share.rb"), "SidekiqRust.configure { |c| c.max_rss = \"80%\" }\n")
      expect(described_class.new(out: StringIO.new, err: err).run(["-r", File.join(dir, "share.rb")])).to eq(0)
      expect(SidekiqRust.configuration.max_rss).to eq("80%")
      expect(described_class.new.unit(command.parse(["-r", File.join(dir, "share.rb")])))
        .to include("add MemoryMax=, or the guard will not start")
      expect(command.run(["-r", File.join(dir, "missing.rb")])).to eq(2)
      expect(err.string).to include("-r #{File.join(dir, 'missing.rb')}: cannot load it")
    ensure
      SidekiqRust.reset_configuration
    end
  end

  it "takes -t from Sidekiq's configuration file, in the section of the unit's environment, as sidekiq would" do
    Dir.mktmpdir do |app|
      FileUtils.mkdir_p(File.join(app, "config"))
      File.write(File.join(app, "config", "sidekiq.yml"),
                 ":concurrency: 3\n:timeout: <%= 4 + 6 %>\nproduction:\n  :timeout: 40\n")
      File.write(File.join(app, "other.yml"), "timeout: 12\n")
      expect(unit_for("--working-directory", app)).to include("sidekiq -t 10\n", "TimeoutStopSec=30\n")
      out.truncate(0)
      out.rewind
      production = unit_for("--working-directory", app, "--environment", "RAILS_ENV=production")
      expect(production).to include("ExecStart=/usr/bin/env bundle exec sidekiq -t 40\n", "TimeoutStopSec=60\n")
      out.truncate(0)
      out.rewind
      expect(unit_for("--working-directory", app, "-C", "other.yml"))
        .to include("ExecStart=/usr/bin/env bundle exec sidekiq -C other.yml -t 12\n")
      out.truncate(0)
      out.rewind
      expect(unit_for("--working-directory", app, "-t", "20")).to include("sidekiq -t 20\n") # -t wins
      expect(command.run(["--working-directory", app, "-C", "missing.yml"])).to eq(2)
      File.write(File.join(app, "config", "sidekiq.yml"), "timeout: [\n")
      expect(command.run(["--working-directory", app])).to eq(1)
      expect(err.string).to include("cannot read Sidekiq's configuration", "sidekiq.yml")
    end
  end

  it "quotes an Environment= value with spaces, quotes or backslashes, and doubles %" do
    unit = unit_for("--environment", "RUBYOPT=-W0 -rjson", "--environment", "A=say \"hi\" \\o/",
                    "--environment", "PCT=50%")
    expect(unit).to include("Environment=\"RUBYOPT=-W0 -rjson\"\n", "Environment=\"A=say \\\"hi\\\" \\\\o/\"\n",
                            "Environment=PCT=50%%\n")
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
    expect(command.run(["-t", "2.5"])).to eq(2) # Sidekiq's -t takes whole seconds
    expect(command.run(["-t", "30", "--kill-after", "30"])).to eq(2)
    expect(command.run(["--name", "my/sidekiq"])).to eq(2)
    expect(command.run(["--exec-start", " "])).to eq(2)
    expect(command.run(["extra"])).to eq(2)
    expect(err.string).to include("--instances takes a number above 0", "KEY=VALUE", "invalid option: --bogus",
                                  "invalid argument: -t 2.5", "--kill-after (30) must exceed --timeout (30)",
                                  "--name takes a unit name", "--exec-start takes a command",
                                  'unexpected argument "extra"', "Usage: sidekiq_rust systemd")
    expect(out.string).to eq("")
  end

  it "prints its help and exits 0" do
    expect(command.run(["--help"])).to eq(0)
    expect(out.string).to include("Usage: sidekiq_rust systemd", "--instances N")
  end

  # systemd-analyze verify names the unit in every complaint about it: "sidekiq.service:9: Invalid environment
  # assignment", "sidekiq.service: Command /x is not executable" (often with exit status 0). In a container it may
  # also complain about other units or the manager, so the check is that it says nothing about this one.
  def verify(dir, name, argv)
    FileUtils.mkdir_p(dir)
    path = File.join(dir, name)
    File.write(path, described_class.new(out: StringIO.new, err: StringIO.new).unit(command.parse(argv)))
    target = path.sub("@.service", "@1.service") # a template is verified through an instance
    FileUtils.ln_s(path, target) unless target == path
    output, = Open3.capture2e("systemd-analyze", "verify", target)
    [output, [name, File.basename(target)].uniq]
  end

  it "passes systemd-analyze verify" do
    unless system("command -v systemd-analyze > /dev/null 2>&1")
      skip "systemd-analyze is not installed (Debian: apt-get install systemd): the units' syntax is not verified"
    end

    Dir.mktmpdir do |dir|
      variants = {
        "plain" => ["sidekiq.service", ["--working-directory", dir]],
        "every option" => ["sidekiq.service", ["--working-directory", dir, "--user", "root", "-t", "30",
                                               "--kill-after", "50", "--environment", "RAILS_ENV=production",
                                               "--environment", "RUBYOPT=-W0 -rjson", "--environment", "PCT=5%",
                                               "--jemalloc"]],
        "template" => ["sidekiq@.service", ["--working-directory", dir, "--instances", "2", "--malloc-arena-max", "2",
                                            "--exec-start", "bundle exec sidekiq -C config/%i.yml"]]
      }
      variants.each do |variant, (name, argv)|
        output, names = verify(File.join(dir, variant.tr(" ", "_")), name, argv)
        names.each { |n| expect(output).not_to include(n), "#{variant}: #{output}" }
      end

      # What a complaint looks like, so that the check above is known to see one.
      broken = File.join(dir, "broken.service")
      File.write(broken, "[Service]\nExecStart=/nonexistent/sidekiq\nRestart=sometimes\nEnvironment=A=1 2\n")
      output, = Open3.capture2e("systemd-analyze", "verify", broken)
      expect(output).to include("broken.service:3:", "broken.service:4:",
                                "broken.service: Command /nonexistent/sidekiq is not executable")
    end
  end
end
