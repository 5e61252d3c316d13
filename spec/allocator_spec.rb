# frozen_string_literal: true

require "spec_helper"
require "json"

RSpec.describe SidekiqRust::Allocator, allocator: true do
  def child_json(code, env)
    JSON.parse(ruby_output("require 'json'; #{code}", env: env).lines.last, symbolize_names: true)
  end

  describe "detection" do
    it "finds glibc in a plain Ruby" do
      info = child_json("puts SidekiqRust::Allocator.info.to_json", Allocators::GLIBC_ENV)
      expect(info).to include(name: "glibc", source: "system")
      expect(info[:version]).to match(/\A2\.\d+/)
      expect(info[:library]).to include("libc.so")
    end

    it "finds jemalloc preloaded with LD_PRELOAD, with its real version" do
      info = child_json("puts SidekiqRust::Allocator.info.to_json", Allocators.jemalloc_env)
      expect(info).to include(name: "jemalloc", source: "preloaded", library: File.realpath(Allocators::DEBIAN_JEMALLOC))
      expect(info[:version]).to match(/\A5\.\d+\.\d+-\d+-g\h+/)
    end

    it "names an allocator it does not know and refuses stats and purge with NotSupported" do
      skip "libtcmalloc-minimal4 is not installed (bin/setup installs it)" unless Allocators::TCMALLOC

      code = <<~RUBY
        out = { info: SidekiqRust::Allocator.info }
        %i[stats purge].each do |m|
          SidekiqRust::Allocator.public_send(m)
        rescue SidekiqRust::Error => e
          out[m] = [e.class.name, e.message]
        end
        puts out.to_json
      RUBY
      out = child_json(code, "LD_PRELOAD" => Allocators::TCMALLOC)
      expect(out[:info]).to include(name: "unknown", source: "preloaded")
      expect(out[:stats].first).to eq("SidekiqRust::NotSupported")
      expect(out[:stats].last).to include("tcmalloc").and include("glibc malloc or jemalloc")
      expect(out[:purge].first).to eq("SidekiqRust::NotSupported")
    end

    # The guard under tcmalloc: GC runs, no purge can, and the reclaim's answer and its log line say why.
    it "has the guard's reclaim say why there was no purge under a preloaded tcmalloc" do
      skip "libtcmalloc-minimal4 is not installed (bin/setup installs it)" unless Allocators::TCMALLOC

      code = <<~RUBY
        require "logger"
        require "stringio"
        config = SidekiqRust::Configuration.new
        config.max_rss = 10_000
        settings = config.resolve(cgroup: nil)
        native = SidekiqRust::Native::Guard.new(SidekiqRust::Guard.native_settings(settings, kill_after: 40.0))
        answer = native.reclaim(false)
        log = StringIO.new
        history = Object.new
        def history.event(*, **); end
        guard_log = SidekiqRust::Guard::Log.new(settings, logger: Logger.new(log), tag: "tcmalloc:1")
        SidekiqRust::Guard::Reclaimer.new(native, log: guard_log, history: history).reclaim(:reclaim_soft)
        puts({ answer: answer, log: log.string }.to_json)
      RUBY
      out = child_json(code, "LD_PRELOAD" => Allocators::TCMALLOC)
      expect(out[:answer]).to include(purged: false, purge_error: include("this process's malloc is unknown")
                                                               .and(include("tcmalloc")))
      expect(out[:log]).to match(/reclaimed \d+MB \(GC \+ no purge\): .*purge_error="the purge needs glibc malloc or jemalloc, but this process's malloc is unknown \(\S*tcmalloc\S*\); run Sidekiq on glibc or preload jemalloc/)
    end
  end

  describe ".stats" do
    # Allocates ~100 MB of strings, reads stats around it, then frees, collects and purges.
    let(:plausibility) do
      <<~RUBY
        GC.start
        before = SidekiqRust::Allocator.stats
        strings = Array.new(10_000) { "s" * 10_000 }
        during = SidekiqRust::Allocator.stats
        rss_held = SidekiqRust::Memory.rss
        strings = nil
        3.times { GC.start }
        purge = SidekiqRust::Allocator.purge
        puts({ before: before, during: during, rss_held: rss_held, purge: purge }.to_json)
      RUBY
    end

    it "sees 100 MB of strings in glibc's in_use and gives it back on purge" do
      r = child_json(plausibility, Allocators::GLIBC_ENV)
      expect(r[:during].keys).to include(:arena, :mmapped, :in_use, :free, :releasable, :arenas, :arena_max,
                                         :fragmentation)
      expect(r[:during][:in_use] - r[:before][:in_use]).to be >= 80 * 1024 * 1024
      expect(r[:during][:arenas]).to be >= 1
      expect(r[:purge][:rss_after]).to be < r[:rss_held]
      expect(r[:purge][:released]).to be >= 0
    end

    it "sees 100 MB of strings in jemalloc's allocated and gives it back on purge" do
      r = child_json(plausibility, Allocators.jemalloc_env)
      expect(r[:during].keys).to include(:allocated, :active, :metadata, :resident, :mapped, :retained, :narenas,
                                         :dirty_decay_ms, :muzzy_decay_ms, :background_thread, :fragmentation)
      expect(r[:during][:allocated] - r[:before][:allocated]).to be >= 80 * 1024 * 1024
      expect(r[:during][:resident]).to be >= r[:during][:allocated]
      expect(r[:purge][:rss_after]).to be < r[:rss_held]
    end

    it "reports the arena limit glibc was given" do
      r = child_json("puts SidekiqRust::Allocator.stats.to_json", Allocators::GLIBC_ENV.merge("MALLOC_ARENA_MAX" => "2"))
      expect(r[:arena_max]).to eq(2)
    end
  end

  describe ".purge on the fragmentation workload" do
    # How far RSS grows depends on how the threads land on the allocator's arenas (on Ruby 3.4 under jemalloc,
    # one run in three stays under 100 MB): the workload runs again until the growth the spec needs is there.
    let(:workload) do
      <<~RUBY
        require #{Allocators::WORKLOAD.inspect}
        GC.start
        base = SidekiqRust::Memory.rss
        kept = []
        5.times do
          kept.concat(FragmentationWorkload.run(per_thread: 30_000))
          3.times { GC.start }
          break if SidekiqRust::Memory.rss - base > #{100 * 1024 * 1024}
        end
        purge = SidekiqRust::Allocator.purge
        puts({ base: base, purge: purge, live: FragmentationWorkload.live_bytes(kept) }.to_json)
      RUBY
    end

    # The growth holds the kept strings (30-60 MB of live data, which no purge can give back) and what the
    # allocator hoards around them; the purge must give back at least half of the hoard. (Against the whole
    # growth, jemalloc on Ruby 3.4 released 43-56% in six runs: a coin toss on a threshold of half.)
    %w[glibc jemalloc].each do |allocator|
      it "releases at least half of what the allocator hoards (RSS growth less the live data) under #{allocator}" do
        env = allocator == "glibc" ? Allocators::GLIBC_ENV : Allocators.jemalloc_env
        r = child_json(workload, env)
        growth = r[:purge][:rss_before] - r[:base]
        expect(growth).to be > 100 * 1024 * 1024
        hoarded = growth - r[:live]
        expect(hoarded).to be > 0
        expect(r[:purge][:released]).to be >= hoarded / 2
        expect(r[:purge][:released]).to eq(r[:purge][:rss_before] - r[:purge][:rss_after])
      end
    end

    it "lets other Ruby threads run while it purges" do
      code = <<~RUBY
        require #{Allocators::WORKLOAD.inspect}
        kept = FragmentationWorkload.run(per_thread: 30_000)
        3.times { GC.start }
        counter = 0
        ticker = Thread.new { loop { counter += 1 } }
        sleep 0.05
        before = counter
        purge = SidekiqRust::Allocator.purge
        during = counter - before
        ticker.kill
        puts({ during: during, seconds: purge[:seconds], kept: kept.size }.to_json)
      RUBY
      r = child_json(code, Allocators::GLIBC_ENV)
      expect(r[:seconds]).to be > 0
      expect(r[:during]).to be > 0
    end
  end
end
