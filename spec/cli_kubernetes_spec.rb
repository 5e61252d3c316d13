# frozen_string_literal: true

require "spec_helper"
require "sidekiq_rust/cli"
require "yaml"

RSpec.describe SidekiqRust::CLI::Kubernetes do
  let(:out) { StringIO.new }
  let(:err) { StringIO.new }
  let(:command) { described_class.new(out: out, err: err, env: {}) }

  after { SidekiqRust.reset_configuration }

  # The printed Deployment, parsed back (safe_load: no anchors, no Ruby objects).
  def deployment_for(*argv)
    expect(command.run(argv)).to eq(0), err.string
    YAML.safe_load(out.string)
  end

  def container(deployment)
    deployment.dig("spec", "template", "spec", "containers", 0)
  end

  # The header's comment as one line.
  def header
    out.string.lines.take_while { |line| line.start_with?("#") }.map { |line| line.delete_prefix("# ").chomp }.join(" ")
  end

  # The generated initializer's limits (lib/generators/sidekiq_rust/install/templates/initializer.rb.tt through
  # SidekiqRust::OPTIONS), in a file to load with -r.
  def generated_initializer(dir)
    path = File.join(dir, "sidekiq_rust.rb")
    lines = SidekiqRust::OPTIONS.select(&:env).map do |option|
      fallback = option.env_fallback || (option.default.inspect unless option.default.nil?)
      if fallback
        "  c.#{option.key} = ENV.fetch(#{option.env.inspect}) { #{fallback} }"
      else
        "  c.#{option.key} = ENV[#{option.env.inspect}]"
      end
    end
    File.write(path, "SidekiqRust.configure do |c|\n#{lines.join("\n")}\nend\n")
    path
  end

  # Runs the block with these variables in ENV (the app's initializer reads ENV), restored after.
  def with_env(values)
    saved = values.keys.to_h { |k| [k, ENV[k]] }
    values.each { |k, v| ENV[k] = v }
    yield
  ensure
    saved.each { |k, v| ENV[k] = v }
  end

  it "prints a Deployment whose limit, grace period and preStop agree with Sidekiq's timeout and the guard" do
    d = deployment_for("--name", "workers", "--image", "registry.example/app:1", "--memory", "512Mi", "-t", "30",
                       "--shutdown-wait", "20")
    expect(d).to include("apiVersion" => "apps/v1", "kind" => "Deployment", "metadata" => include("name" => "workers"))
    expect(d.dig("spec", "selector", "matchLabels")).to eq("app" => "workers")
    expect(d.dig("spec", "template", "metadata", "labels")).to eq("app" => "workers")
    c = container(d)
    expect(c["image"]).to eq("registry.example/app:1")
    expect(c.dig("resources", "limits", "memory")).to eq("512Mi")
    expect(c["command"]).to eq(%w[bundle exec sidekiq_rust exec -- sidekiq -t 30])
    expect(c.dig("lifecycle", "preStop", "exec", "command")).to eq(["/bin/sh", "-c", "kill -TSTP 1; sleep 20"])
    # preStop's 20 s, then Sidekiq's 30 s after TERM, and the guard's margin: above timeout + shutdown_wait.
    grace = d.dig("spec", "template", "spec", "terminationGracePeriodSeconds")
    expect(grace).to eq(65)
    expect(grace).to be > 30 + 20
    expect(out.string).to start_with("# Sidekiq under sidekiq_rust")
    # No app given: what the generated initializer sets in a container (hard_max_rss :auto, its default).
    expect(header).to include('max_rss "80%", hard_max_rss :auto, shutdown_wait 20, kill_after 45. ' \
                              "From the generated initializer in a container")
    expect(c).not_to have_key("env")
  end

  it "never ends the grace period before the guard's KILL, and runs plain sidekiq with --no-jemalloc" do
    d = deployment_for("--kill-after", "120", "--shutdown-wait", "0", "--no-jemalloc")
    expect(d.dig("spec", "template", "spec", "terminationGracePeriodSeconds")).to eq(125)
    expect(container(d)["command"]).to eq(%w[bundle exec sidekiq -t 25])
    expect(command.run(%w[-C /nonexistent/sidekiq.yml])).to eq(2)
    expect(err.string).to include("--config /nonexistent/sidekiq.yml: no such file")
  end

  it "takes the timeout from Sidekiq's file (production section) and the guard's settings from the app" do
    Dir.mktmpdir do |dir|
      File.write(File.join(dir, "sidekiq.yml"), "timeout: 10\nproduction:\n  timeout: 40\n")
      File.write(File.join(dir, "init.rb"), <<~RUBY)
        SidekiqRust.configure do |c|
          c.max_rss = "70%"
          c.hard_max_rss = "85%"
          c.shutdown_wait = 30
        end
      RUBY
      d = deployment_for("-C", File.join(dir, "sidekiq.yml"), "-r", File.join(dir, "init.rb"))
      expect(container(d)["command"].last(4)).to eq(["-C", File.join(dir, "sidekiq.yml"), "-t", "40"])
      expect(d.dig("spec", "template", "spec", "terminationGracePeriodSeconds")).to eq(30 + 40 + 15)
      expect(header).to include('max_rss "70%", hard_max_rss "85%", shutdown_wait 30, kill_after 55. ' \
                                "From the app's configuration (-r #{File.join(dir, 'init.rb')})")
    end
  end

  # Issue 26: `kubernetes -r ./config/environment` on the generated initializer with SIDEKIQ_MAX_RSS set failed
  # with `hard_max_rss is "90%"; expected a limit above max_rss (1024MB)`: "90%" was the command's own default.
  it "takes the app's limits and SIDEKIQ_* variables as they are, assuming no hard_max_rss the app does not have" do
    Dir.mktmpdir do |dir|
      initializer = generated_initializer(dir)
      with_env("SIDEKIQ_MAX_RSS" => "1GB", "SIDEKIQ_HARD_MAX_RSS" => nil) do
        command = described_class.new(out: out, err: err, env: { "SIDEKIQ_MAX_RSS" => "1GB", "HOME" => "/root" })
        expect(command.run(["-r", initializer, "--memory", "1536Mi"])).to eq(0), err.string
      end
      d = YAML.safe_load(out.string)
      expect(header).to include('max_rss "1GB", hard_max_rss :auto, shutdown_wait 60, kill_after 40. ' \
                                "From the app's configuration (-r #{initializer}).")
      expect(header).not_to include("90%")
      # The pods get the variable the app read here, and nothing it did not set.
      expect(container(d)["env"]).to eq([{ "name" => "SIDEKIQ_MAX_RSS", "value" => "1GB" }])

      # Both limits from the environment, no app: taken as the generated initializer would take them.
      out.truncate(0)
      out.rewind
      command = described_class.new(out: out, err: err, env: { "SIDEKIQ_MAX_RSS" => "600MB",
                                                               "SIDEKIQ_HARD_MAX_RSS" => "800MB",
                                                               "SIDEKIQ_WEB_PASSWORD" => "secret" })
      expect(command.run([])).to eq(0), err.string
      expect(header).to include('max_rss "600MB", hard_max_rss "800MB"')
      # Only the guard's variables: another SIDEKIQ_* may be a secret.
      expect(container(YAML.safe_load(out.string))["env"])
        .to eq([{ "name" => "SIDEKIQ_MAX_RSS", "value" => "600MB" }, { "name" => "SIDEKIQ_HARD_MAX_RSS", "value" => "800MB" }])
      expect(out.string).not_to include("secret")

      # A limit the container cannot hold is refused, naming where it came from.
      SidekiqRust.reset_configuration
      File.write(File.join(dir, "fixed.rb"), "SidekiqRust.configure { |c| c.max_rss = \"1GB\" }\n")
      expect(described_class.new(out: out, err: err, env: {}).run(["-r", File.join(dir, "fixed.rb")])).to eq(2)
      fixed = File.join(dir, "fixed.rb")
      expect(err.string).to include("max_rss (1024MB, from the app's configuration (-r #{fixed})) must be below " \
                                    "--memory (1024MB)")
      # A file that configures no guard.
      SidekiqRust.reset_configuration
      File.write(File.join(dir, "empty.rb"), "")
      expect(described_class.new(out: out, err: err, env: {}).run(["-r", File.join(dir, "empty.rb")])).to eq(2)
      expect(err.string).to include("calls no SidekiqRust.configure")
    end
  end

  it "says what require_other_process means for one replica and for several" do
    deployment_for("--replicas", "1")
    expect(out.string).to include("replicas 1: set require_other_process = false")
    out.truncate(0)
    out.rewind
    expect(deployment_for("--replicas", "3").dig("spec", "replicas")).to eq(3)
    expect(out.string).to include("with one process per pod, another pod's")
  end

  it "refuses settings the container cannot hold, as `systemd` refuses an early KILL" do
    expect(command.run(%w[--max-rss 600 --hard-max-rss 700 --memory 512Mi])).to eq(2)
    expect(err.string).to include("max_rss (600MB, from --max-rss) must be below --memory (512MB)")
    expect(command.run(%w[-t 30 --kill-after 20])).to eq(2)
    expect(err.string).to include("--kill-after (20) must exceed --timeout (30)")
    expect(command.run(%w[--memory lots])).to eq(2)
    expect(err.string).to include("--memory takes a size like 1Gi")
    expect(command.run(%w[--name Bad_Name])).to eq(2)
    expect(err.string).to include("--name takes a DNS label")
  end

  it "is listed by `sidekiq_rust --help`" do
    cli_out = StringIO.new
    SidekiqRust::CLI.new(out: cli_out).run(["--help"])
    expect(cli_out.string).to include("kubernetes")
  end
end
