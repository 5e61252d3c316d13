# frozen_string_literal: true

require "spec_helper"

# SidekiqRust::Metrics and `sidekiq_rust metrics` against a real redis-server, parsed by prometheus_client.
RSpec.describe SidekiqRust::Metrics do
  include E2E

  let(:settings) { guard_settings(check_interval: 1) }

  # The command as a user runs it, in a process of its own.
  def cli(*args)
    out, err, status = Open3.capture3(RbConfig.ruby, "-I", ChildRuby::LIB,
                                      File.expand_path("../exe/sidekiq_rust", __dir__), "metrics", *args)
    [status.exitstatus, out, err]
  end

  it "escapes label values so that any job class name parses" do
    history = SidekiqRust::History.new(settings, identity: "web-1:9")
    history.record(123 * 1_048_576, :serving)
    odd = "Odd\"Job\\With\nNewline"
    SidekiqRust::Report.publish("web-1:9", [{ class: odd, jobs: 2, retained_per_job: 512, growth_per_job: -100,
                                              allocated_per_job: nil }], ttl: 60)

    families = Prometheus.parse(described_class.text)
    retained = Prometheus.samples(families, "sidekiq_rust_class_retained_per_job_bytes")
    expect(retained).to eq([{ "name" => "sidekiq_rust_class_retained_per_job_bytes", "labels" => { "class" => odd },
                              "value" => 512.0 }])
    expect(Prometheus.samples(families, "sidekiq_rust_class_growth_per_job_bytes").first["value"]).to eq(-100.0)
    expect(Prometheus.samples(families, "sidekiq_rust_class_allocated_per_job_bytes")).to be_empty
    expect(Prometheus.samples(families, "sidekiq_rust_up")).to eq(
      [{ "name" => "sidekiq_rust_up", "labels" => { "identity" => "web-1:9" }, "value" => 1.0 }]
    )
    # What the process's own allocator and Ruby heap hold, recorded with the reading (Fragmentation).
    live = Prometheus.samples(families, "sidekiq_rust_live_bytes").first["value"]
    expect(live).to be_between(1_048_576, SidekiqRust::Memory.rss)
    expect(Prometheus.samples(families, "sidekiq_rust_allocator_free_bytes").first["value"]).to be >= 0
    expect(Prometheus.samples(families, "sidekiq_rust_ruby_heap_fragmentation_ratio").first["value"])
      .to be_between(0.0, 1.0)
    # HELP and TYPE for every family even without samples: a scrape of an empty fleet parses too.
    expect(families.size).to eq(described_class::FAMILIES.size)
  end

  it "writes a file for the textfile collector with --output, and says what is wrong otherwise" do
    SidekiqRust::History.new(settings, identity: "web-2:9").record(1, :serving)
    path = File.join(redis_server.dir, "sidekiq_rust.prom")
    status, out, = cli("--output", path, "--redis-url", "unix://#{redis_server.socket}")
    expect(status).to eq(0)
    expect(out).to eq("")
    expect(Prometheus.samples(Prometheus.parse(File.read(path)), "sidekiq_rust_memory_bytes").size).to eq(1)
    expect(Dir.children(redis_server.dir).grep(/\.tmp\z/)).to be_empty

    status, _, err = cli("--output", "/nonexistent-dir/x.prom", "--redis-url", "unix://#{redis_server.socket}")
    expect(status).to eq(1)
    expect(err).to include("cannot write /nonexistent-dir/x.prom", "check that the directory exists")

    status, _, err = cli("--redis-url", "redis://127.0.0.1:1")
    expect(status).to eq(1)
    expect(err).to include("cannot reach Redis")

    status, _, err = cli("--bogus")
    expect(status).to eq(2)
    expect(err).to include("invalid option: --bogus", "Usage: sidekiq_rust metrics")
  end

  it "serves 503 with the reason from the Rack app when Redis is down" do
    redis_server.stop
    status, headers, body = described_class::App.call({})
    expect(status).to eq(503)
    expect(headers["content-type"]).to start_with("text/plain")
    expect(body.join).to include("cannot read Redis")
  end
end
