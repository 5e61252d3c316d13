# frozen_string_literal: true

require "spec_helper"
require "json"

RSpec.describe SidekiqRust::Doctor do
  include E2E

  let(:mb) { 1024 * 1024 }
  let(:exe) { File.expand_path("../exe/sidekiq_rust", __dir__) }

  def settings(**values)
    config = SidekiqRust::Configuration.new
    config.max_rss = 500
    values.each { |key, value| config.public_send("#{key}=", value) }
    config.resolve(cgroup: { usage: 0, limit: 4096 * mb })
  end

  # Runs exe/sidekiq_rust in a plain Ruby outside Bundler (as a user would, with the app's own gems).
  def sidekiq_rust(*args, env: {})
    Bundler.with_unbundled_env do
      Open3.capture3(env, RbConfig.ruby, exe, *args)
    end
  end

  describe "allocator" do
    it "warns about glibc without an arena limit, passes with one, and passes jemalloc" do
      glibc = ruby_output("require %q(json); puts SidekiqRust::Doctor.allocator(ENV).to_h.to_json", env: Allocators::GLIBC_ENV)
      expect(JSON.parse(glibc)).to include("status" => "warn", "todo" => a_string_including("MALLOC_ARENA_MAX=2"))
      limited = ruby_output("puts SidekiqRust::Doctor.allocator(ENV).status",
                            env: Allocators::GLIBC_ENV.merge("MALLOC_ARENA_MAX" => "2"))
      expect(limited.strip).to eq("pass")
      jemalloc = ruby_output("puts SidekiqRust::Doctor.allocator(ENV).saw", env: Allocators.jemalloc_env)
      expect(jemalloc).to match(/jemalloc 5\.\d+\.\d+.* \(preloaded\)/)
    end

    it "passes a jemalloc preloaded from any path, e.g. Rails 8.1's link /usr/local/lib/libjemalloc.so" do
      Dir.mktmpdir("sidekiq_rust-links") do |dir|
        link = File.join(dir, "libfastmalloc.so")
        File.symlink(Allocators.debian_jemalloc, link)
        out = ruby_output("require %q(json); puts SidekiqRust::Doctor.allocator(ENV).to_h.to_json",
                          env: { "LD_PRELOAD" => link })
        expect(JSON.parse(out)).to include("status" => "pass",
                                           "saw" => a_string_matching(/\Ajemalloc 5\.\S+ \(preloaded\)\z/))
      end
    end

    # The doctor's own Ruby is not what runs the jobs: it judges the app's live guarded processes, from what each
    # recorded in Redis (History's "allocator"), and itself only when none is live, saying which it judged.
    it "judges the app's live guarded processes (real ones, under jemalloc and glibc), itself only when none is live" do
      redis = ["--redis-url", "unix://#{redis_server.socket}", "--json", "--no-app"]
      allocator = lambda do |*args|
        out, err, status = sidekiq_rust("doctor", *args, env: Allocators::GLIBC_ENV) # the doctor itself on glibc
        expect(status.exitstatus).to eq(0), err + out
        JSON.parse(out)["checks"].find { |c| c["name"] == "allocator" }
      end
      guard = { "max_rss" => 8000, "check_interval" => 0.5 }
      jemalloc = sidekiq("jemalloc", guard: guard, env: Allocators.jemalloc_env)
      eventually(timeout: 20, what: "the jemalloc process's record") { SidekiqRust::History.processes.size == 1 }
      expect(allocator.call(*redis)).to eq("name" => "allocator", "status" => "pass", "todo" => nil,
                                           "saw" => "1 live guarded process(es): 1 on jemalloc")

      glibc = sidekiq("glibc", guard: guard, env: Allocators::GLIBC_ENV)
      eventually(timeout: 20, what: "the glibc process's record") { SidekiqRust::History.processes.size == 2 }
      mixed = allocator.call(*redis)
      expect(mixed).to include("status" => "warn", "saw" => "2 live guarded process(es): 1 on glibc, 1 on jemalloc " \
                                                            "(not jemalloc: #{glibc.identity})")
      # The advice's command is the one the generator prints.
      command = SidekiqRust::Doctor::AllocatorCheck::JEMALLOC_COMMAND
      expect(mixed["todo"]).to include("`#{command}`", "MALLOC_ARENA_MAX=2")
      next_steps = File.expand_path("../lib/generators/sidekiq_rust/install/templates/next_steps.txt", __dir__)
      expect(File.read(next_steps)).to include("     #{command}\n")

      # A process gone (no reading for GONE_MIN seconds) is not judged; with none live, the doctor judges itself.
      [jemalloc, glibc].each(&:stop)
      gone_at = Time.now.to_f - SidekiqRust::History::GONE_MIN - 60
      SidekiqRust::History.processes.each do |p|
        redis_call("HSET", SidekiqRust::History::PROCESS_PREFIX + p[:identity], "at", gone_at.to_s)
      end
      alone = allocator.call(*redis)
      expect(alone).to include("status" => "warn",
                               "saw" => a_string_starting_with("this process (no guarded process is live): glibc"))
      expect(alone["todo"]).to include("`#{command}`")
      expect(allocator.call("--no-redis", "--json", "--no-app")["saw"])
        .to start_with("this process (the guarded processes were not read): glibc")
    end
  end

  describe "db pool, against a real ActiveRecord pool (sqlite3)" do
    let(:app) { File.expand_path("fixtures/doctor/ar_app.rb", __dir__) }

    it "fails when the pool is smaller than Sidekiq's concurrency, and explains" do
      out, err, status = sidekiq_rust("doctor", "--require", app, "--concurrency", "10", "--no-redis")
      expect(status.exitstatus).to eq(1), err
      expect(out).to match(/^FAIL db pool +ActiveRecord pool 5 < Sidekiq concurrency 10/)
      expect(out).to include("could not obtain a connection from the pool within 5.000 seconds")
      expect(out).to include("thread your jobs start themselves")
    end

    it "passes when the pool is large enough" do
      out, err, status = sidekiq_rust("doctor", "-r", app, "-c", "5", "--no-redis", "--json")
      expect(status.exitstatus).to eq(0), err + out
      pool = JSON.parse(out)["checks"].find { |c| c["name"] == "db pool" }
      expect(pool).to include("status" => "pass", "saw" => "ActiveRecord pool 5 >= Sidekiq concurrency 5")
    end

    it "skips it when ActiveRecord is not loaded" do
      expect(described_class::DbPoolCheck.check(10).status).to eq(:skip)
    end
  end

  describe "at an app's root: Sidekiq's configuration file and the app, as `sidekiq` reads them" do
    let(:ar_app) { File.expand_path("fixtures/doctor/ar_app.rb", __dir__) }

    # An app directory: config/environment.rb (the ActiveRecord pool of 5 and the guard's initializer) and
    # config/sidekiq.yml with per-environment sections.
    def with_app
      Dir.mktmpdir("sidekiq_rust-doctor-app") do |dir|
        FileUtils.mkdir_p(File.join(dir, "config"))
        File.write(File.join(dir, "config", "environment.rb"), <<~RUBY)
          require #{ar_app.inspect}
          require "sidekiq_rust"
          SidekiqRust.configure { |c| c.max_rss = "1GB" }
        RUBY
        File.write(File.join(dir, "config", "sidekiq.yml"), <<~YAML)
          :concurrency: 3
          :timeout: 10
          production:
            :concurrency: <%= 2 * 5 %>
          staging:
            :concurrency: 4
        YAML
        File.write(File.join(dir, "big.yml"), "concurrency: 8\ntimeout: 30\n")
        yield dir
      end
    end

    def doctor_in(dir, *args, env: {})
      Bundler.with_unbundled_env do
        Open3.capture3(env, RbConfig.ruby, exe, "doctor", "--no-redis", "--json", *args, chdir: dir)
      end
    end

    def checks(out)
      JSON.parse(out)["checks"].to_h { |c| [c["name"], c] }
    end

    it "loads ./config/environment by default and takes concurrency and timeout from config/sidekiq.yml" do
      with_app do |dir|
        out, err, status = doctor_in(dir)
        expect(status.exitstatus).to eq(0), err + out
        found = checks(out)
        expect(found["sidekiq"]["saw"]).to eq("#{dir}/config/sidekiq.yml (development): concurrency 3, timeout 10")
        expect(found["db pool"]).to include("status" => "pass", "saw" => "ActiveRecord pool 5 >= Sidekiq concurrency 3")
        expect(found["limits"]["saw"]).to include("max_rss 1024MB")
        expect(found["timeouts"]["saw"]).to start_with("Sidekiq timeout 10.0s, guard kill_after 25.0s")
      end
    end

    it "applies the environment's section (RAILS_ENV or -e), -C FILE, and lets -c/-t win" do
      with_app do |dir|
        out, _err, status = doctor_in(dir, env: { "RAILS_ENV" => "production" })
        expect(status.exitstatus).to eq(1)
        expect(checks(out)["db pool"]["saw"]).to eq("ActiveRecord pool 5 < Sidekiq concurrency 10")
        expect(checks(doctor_in(dir, "-e", "staging").first)["db pool"]["saw"]).to include("concurrency 4")
        big = checks(doctor_in(dir, "-C", "big.yml").first)
        expect(big["sidekiq"]["saw"]).to eq("big.yml (development): concurrency 8, timeout 30")
        expect(big["timeouts"]["saw"]).to start_with("Sidekiq timeout 30.0s")
        expect(checks(doctor_in(dir, "-c", "2", "-t", "5").first)["timeouts"]["saw"]).to start_with("Sidekiq timeout 5.0s")
        skipped = checks(doctor_in(dir, "--no-app").first)
        expect(skipped["db pool"]["status"]).to eq("skip")
        expect(skipped["limits"]["saw"]).to eq("the guard is not configured")
      end
    end

    it "reports an unreadable sidekiq.yml as a FAIL" do
      with_app do |dir|
        File.write(File.join(dir, "config", "sidekiq.yml"), ":concurrency: [\n")
        out, _err, status = doctor_in(dir)
        expect(status.exitstatus).to eq(1)
        expect(checks(out)["sidekiq"]).to include("status" => "fail",
                                                  "saw" => a_string_including("cannot read Sidekiq's configuration"))
      end
    end

    it "fails the limits when this environment cannot resolve the configuration (a percentage, no cgroup limit)" do
      error = SidekiqRust::ConfigurationError.new('sidekiq_rust: max_rss is "80%"; expected ... has none')
      check = described_class::LimitsCheck.check(error, nil)
      expect(check.status).to eq(:fail)
      expect(check.saw).to include("the guard would not start here", "max_rss is \"80%\"")
    end
  end

  describe "limits against the cgroup limit" do
    let(:fixtures) { File.expand_path("fixtures/cgroup", __dir__) }
    let(:cgroup) do # 1 GiB limit, from a fixture layout
      dir = File.join(fixtures, "v2_limited")
      SidekiqRust::Memory.cgroup(root: File.join(dir, "sys_fs_cgroup"), proc_cgroup: File.join(dir, "proc_self_cgroup"))
    end

    it "passes limits below the container limit and fails the others" do
      expect(described_class::LimitsCheck.check(settings(max_rss: "700MB", hard_max_rss: "900MB"), cgroup).status).to eq(:pass)
      check = described_class::LimitsCheck.check(settings(max_rss: "700MB", hard_max_rss: "2GB"), cgroup)
      expect(check.status).to eq(:fail)
      expect(check.saw).to include("hard_max_rss not below the cgroup limit 1024MB")
      expect(check.todo).to include("OOM")
      expect(described_class::LimitsCheck.check(settings(max_rss: "1GB"), cgroup).saw).to include("max_rss not below")
    end

    it "passes without a cgroup limit and warns without a guard" do
      expect(described_class::LimitsCheck.check(settings, nil).status).to eq(:pass)
      expect(described_class::LimitsCheck.check(nil, cgroup).status).to eq(:warn)
    end
  end

  describe "timeouts" do
    it "fails a kill_after that does not exceed Sidekiq's timeout" do
      check = described_class::TimeoutsCheck.check(settings(kill_after: 20), 25.0, nil)
      expect(check.status).to eq(:fail)
      expect(check.todo).to include("kill_after (20.0s) must exceed Sidekiq's timeout (25.0s)")
    end

    it "fails a systemd TimeoutStopSec too close to Sidekiq's timeout, passes a consistent one" do
      expect(described_class::TimeoutsCheck.check(settings, 25.0, 26).todo).to include("TimeoutStopSec (26s)")
      expect(described_class::TimeoutsCheck.check(settings, 25.0, 40).status).to eq(:pass)
      expect(described_class::TimeoutsCheck.check(nil, 25.0, nil).saw).to eq("Sidekiq timeout 25.0s")
    end
  end

  describe "redis, against a real redis-server" do
    it "passes noeviction, fails another policy, fails when unreachable" do
      expect(described_class::RedisCheck.check).to have_attributes(status: :pass, saw: a_string_matching(/round trip \d/))
      redis_server.command("CONFIG", "SET", "maxmemory-policy", "allkeys-lru")
      failed = described_class::RedisCheck.check
      expect(failed.status).to eq(:fail)
      expect(failed.saw).to include("allkeys-lru")
      expect(failed.todo).to include("noeviction")
      redis_server.stop
      expect(described_class::RedisCheck.check).to have_attributes(status: :fail, saw: a_string_including("unreachable"))
    ensure
      redis_server.start unless redis_server.running?
    end
  end

  describe "brake" do
    def brake_settings(**values)
      config = SidekiqRust::Configuration.new
      config.max_rss = 1000
      values.each { |key, value| config.public_send("#{key}=", value) }
      config.resolve(cgroup: nil)
    end

    it "says where the brake pauses and resumes, and warns when a booted process is above resume_at" do
      mb = 1024 * 1024
      check = SidekiqRust::Doctor::BrakeCheck.check(brake_settings, rss: 300 * mb, concurrency: 5)
      expect(check.status).to eq(:pass)
      expect(check.saw).to eq("pauses fetching at 900MB (brake_at 0.9), fetches again below 800MB (resume_at 0.8), " \
                              "or at memory pressure 20%; this process 300MB, concurrency 5")
      high = SidekiqRust::Doctor::BrakeCheck.check(brake_settings, rss: 850 * mb, concurrency: 5)
      expect(high.status).to eq(:warn)
      expect(high.todo).to include("Raise max_rss")
      expect(SidekiqRust::Doctor::BrakeCheck.check(brake_settings(brake: false), rss: 1, concurrency: 5).status).to eq(:info)
      expect(SidekiqRust::Doctor::BrakeCheck.check(nil, rss: 1, concurrency: 5).status).to eq(:skip)
    end
  end

  describe "container" do
    let(:cgroup) do
      { usage: 100 * mb, current: 150 * mb, inactive_file: 50 * mb, limit: 1000 * mb, version: 2, dir: "/c" }
    end
    let(:oom) { { oom_kills: 0, limit_hits: 0, group_kill: true, kill_disabled: false, version: 2, dir: "/c" } }
    let(:calm) { { some_avg10: 0.5, full_avg10: 0.0, source: "/c/memory.pressure" } }

    def container(settings, cgroup: self.cgroup, oom: self.oom, pressure: calm)
      described_class::ContainerCheck.check(settings, cgroup: cgroup, oom: oom, pressure: pressure)
    end

    it "passes limits under the cgroup's with room for the hard limit, and says whether an OOM kill takes the group" do
      check = container(settings(max_rss: 800, hard_max_rss: 900))
      expect(check.status).to eq(:pass)
      expect(check.saw).to include("limit 1000MB", "working set 100MB (charged 150MB)",
                                   "an OOM kill takes every process of the group (memory.oom.group)",
                                   "0 OOM kill(s) so far", "pressure some avg10 0.50%", "max_rss 800MB, hard 900MB")
      expect(container(settings(max_rss: 800, hard_max_rss: 900), oom: oom.merge(group_kill: false)).saw)
        .to include("an OOM kill takes one process")
    end

    it "passes the default limits in a container: max_rss 80%, hard_max_rss :auto (90% of the limit)" do
      config = SidekiqRust::Configuration.new
      config.max_rss = "80%"
      check = container(config.resolve(cgroup: cgroup))
      expect(check.status).to eq(:pass)
      expect(check.saw).to include("max_rss 800MB, hard 900MB")
    end

    it "fails limits at or over the cgroup's, warns without a hard limit or with too little room under it" do
      expect(container(settings(max_rss: 800, hard_max_rss: 1000)).status).to eq(:fail)
      no_hard = container(settings(max_rss: 800, hard_max_rss: nil))
      expect(no_hard.status).to eq(:warn)
      expect(no_hard.todo).to include('set hard_max_rss "90%"')
      tight = container(settings(max_rss: 800, hard_max_rss: 990))
      expect(tight.status).to eq(:warn)
      expect(tight.todo).to include("leaves 10MB below the cgroup's limit")
    end

    it "warns about OOM kills so far, pressure and a disabled OOM killer" do
      check = container(settings(max_rss: 800, hard_max_rss: 900), oom: oom.merge(oom_kills: 2, kill_disabled: true),
                                                                   pressure: calm.merge(some_avg10: 25.0))
      expect(check.status).to eq(:warn)
      expect(check.todo).to include("OOM-killed 2 process(es)", "memory pressure: tasks stalled on memory 25.0%",
                                    "oom_kill_disable is 1")
    end

    it "skips outside a memory cgroup and reports a cgroup without a limit" do
      expect(container(settings, cgroup: nil).status).to eq(:skip)
      expect(container(settings, cgroup: cgroup.merge(limit: nil)).status).to eq(:info)
    end
  end

  describe "fragmentation" do
    let(:mb) { 1024 * 1024 }
    let(:check) { SidekiqRust::Doctor::FragmentationCheck }

    it "reads the guarded processes' records, and warns about the most fragmented with what to try" do
      processes = [
        { identity: "a:1", memory: 500 * mb, live: 450 * mb, allocator_free: 40 * mb, heap_fragmentation: 0.1,
          allocator: "glibc", gone: false },
        { identity: "b:2", memory: 600 * mb, live: 120 * mb, allocator_free: 480 * mb, heap_fragmentation: 0.2,
          allocator: "glibc", gone: false },
        { identity: "gone:3", memory: 900 * mb, live: 10 * mb, allocator_free: 890 * mb, allocator: "glibc", gone: true }
      ]
      result = check.check(processes: processes)
      expect(result.status).to eq(:warn)
      expect(result.saw).to eq("2 guarded process(es); the most fragmented, b:2: memory 600MB, live 120MB, " \
                               "allocator free 480MB, Ruby's heap 20% empty slots")
      expect(result.todo).to eq(SidekiqRust::Verdict::JEMALLOC_HINT)
      expect(check.check(processes: processes.first(1)).status).to eq(:pass)
    end

    it "describes this process when no guarded process has recorded figures (informative only)" do
      result = check.check(processes: nil)
      expect(result.status).to eq(:info)
      expect(result.saw).to match(/\Ano guarded process has recorded figures yet; this process: memory \d+MB, live \d+MB/)
    end
  end

  describe "gc env" do
    it "reports the variables in effect without judging them" do
      check = described_class::GcEnvCheck.check("RUBY_GC_HEAP_GROWTH_FACTOR" => "1.1", "HOME" => "/root")
      expect(check.status).to eq(:info)
      expect(check.saw).to eq("RUBY_GC_HEAP_GROWTH_FACTOR=1.1")
    end
  end

  describe "the command line" do
    it "prints help, and exits 2 on a usage error" do
      out, _err, status = sidekiq_rust("doctor", "--help")
      expect(status.exitstatus).to eq(0)
      expect(out).to include("Usage: sidekiq_rust doctor")
      _out, err, status = sidekiq_rust("doctor", "--concurrency", "many")
      expect(status.exitstatus).to eq(2)
      expect(err).to include("invalid argument: --concurrency many")
    end

    it "checks a real Redis given by URL and prints JSON" do
      out, err, status = sidekiq_rust("doctor", "--redis-url", "unix://#{redis_server.socket}", "--json",
                                      env: Allocators::GLIBC_ENV.merge("MALLOC_ARENA_MAX" => "2"))
      expect(status.exitstatus).to eq(0), err + out
      checks = JSON.parse(out)["checks"].to_h { |c| [c["name"], c["status"]] }
      expect(checks).to include("allocator" => "pass", "redis" => "pass", "gc env" => "info", "db pool" => "skip")
    end
  end
end
