# frozen_string_literal: true

require "spec_helper"

RSpec.describe "the bundled jemalloc", allocator: true do
  let(:path) { SidekiqRust.jemalloc_path }
  let(:mb) { 1024 * 1024 }

  describe "SidekiqRust.jemalloc_path" do
    it "is the absolute path of the library that rake compile builds beside the extension" do
      expect(path).to eq(File.join(File.realpath(ChildRuby::LIB), "sidekiq_rust", "sidekiq_rust_jemalloc.so"))
      expect(File.file?(path)).to be(true)
    end

    it "raises NotSupported, saying what to do, when the library is missing" do
      Dir.mktmpdir("sidekiq_rust-nojemalloc") do |dir|
        FileUtils.cp_r(ChildRuby::LIB, dir)
        File.delete(File.join(dir, "lib", "sidekiq_rust", "sidekiq_rust_jemalloc.so"))
        env = ChildRuby::UNBUNDLED_ENV
        code = "begin; SidekiqRust.jemalloc_path; rescue SidekiqRust::NotSupported => e; puts e.message; end"
        out, err, status = Open3.capture3(env, RbConfig.ruby, "-I", File.join(dir, "lib"), "-rsidekiq_rust", "-e", code)
        expect(status).to be_success, err
        expect(out).to include("sidekiq_rust_jemalloc.so", "is not built", "rake compile", "reinstall")
      end
    end
  end

  describe "the library file" do
    let(:exported) do
      out, err, status = Open3.capture3("nm", "-D", "--defined-only", path)
      raise "nm failed: #{err}" unless status.success?

      out.lines.map { |line| line.split.last }
    end

    it "exports the malloc family and the control API under their plain names" do
      expect(exported).to include(
        "malloc", "calloc", "realloc", "free", "posix_memalign", "aligned_alloc", "memalign", "valloc",
        "malloc_usable_size", "mallctl", "mallctlnametomib", "mallctlbymib", "malloc_stats_print"
      )
    end

    it "also exports pvalloc and jemalloc's *allocx API, so no call reaches another allocator" do
      expect(exported).to include("pvalloc", "mallocx", "rallocx", "xallocx", "sallocx", "dallocx", "sdallocx",
                                  "nallocx")
    end

    it "keeps jemalloc's prefixed internals hidden (only its options string is visible)" do
      expect(exported.grep(/\A_rjem_/)).to eq(["_rjem_malloc_conf"])
    end

    it "needs no libruby, so it can be preloaded into any process" do
      out, = Open3.capture2("objdump", "-p", path)
      needed = out.lines.grep(/NEEDED/).map { |line| line.split.last }
      expect(needed).to include(a_string_starting_with("libc.so"))
      expect(needed.grep(/ruby/)).to be_empty
    end
  end

  describe "preloaded into a child Ruby" do
    it "puts mallctl in the global scope and reports jemalloc's version through it" do
      out = probe_output('puts mallctl_string("version")', preload: path)
      expect(out.chomp).to match(/\A5\.\d+\.\d+-\d+-g\h+\z/)
    end

    it "wins the global scope for every allocation entry point (each name resolves to this library)" do
      names = %w[malloc calloc realloc free posix_memalign aligned_alloc memalign valloc pvalloc malloc_usable_size
                 mallocx rallocx xallocx sallocx dallocx sdallocx nallocx mallctl]
      code = <<~RUBY
        library = Fiddle::Handle.new(#{path.inspect})
        #{names.inspect}.each { |name| puts "\#{name} \#{Fiddle::Handle::DEFAULT[name] == library[name]}" }
      RUBY
      expect(probe_output(code, preload: path).lines.map(&:chomp)).to eq(names.map { |name| "#{name} true" })
    end

    it "runs C libraries that allocate and free on Ruby's behalf, and Sidekiq, without a crash" do
      code = <<~'RUBY'
        require "zlib"
        require "openssl"
        require "socket"
        require "etc"
        require "json"
        require "ripper"
        require "sidekiq"
        data = JSON.generate(Array.new(20_000) { |i| { "id" => i, "name" => "job#{i}" * 3 } })
        raise "zlib" unless Zlib::Inflate.inflate(Zlib::Deflate.deflate(data)) == data
        cipher = OpenSSL::Cipher.new("aes-256-cbc").encrypt
        cipher.key = OpenSSL::Random.random_bytes(32)
        (cipher.update(data) + cipher.final).bytesize.positive? || raise("openssl")
        OpenSSL::Digest::SHA256.hexdigest(data)
        Addrinfo.getaddrinfo("localhost", 80).size.positive? || raise("getaddrinfo")
        Etc.getpwnam("root").dir
        File.realpath("/proc/self/exe")
        Ripper.sexp("def f(a) = [a, { b: a * 2 }]\n" * 2_000) || raise("ripper")
        Array.new(8) { Thread.new { 500.times { |i| ("é" * i).encode("UTF-16LE").encode("UTF-8") } } }.each(&:join)
        GC.start
        GC.compact if GC.respond_to?(:compact)
        puts Sidekiq::VERSION
      RUBY
      expect(probe_output(code, preload: path).chomp).to match(/\A\d+\.\d+/)
    end

    it "starts with the shipped options" do
      code = <<~'RUBY'
        puts mallctl_read("opt.narenas", "L", 4), mallctl_read("opt.dirty_decay_ms", "q", 8),
             mallctl_read("opt.muzzy_decay_ms", "q", 8), mallctl_read("opt.background_thread", "C", 1),
             mallctl_read("config.stats", "C", 1)
      RUBY
      expect(probe_output(code, preload: path).split).to eq(%w[2 1000 0 1 1])
    end

    it "takes run-time options from _RJEM_MALLOC_CONF, key by key" do
      code = 'puts mallctl_read("opt.narenas", "L", 4), mallctl_read("opt.dirty_decay_ms", "q", 8)'
      out = probe_output(code, preload: path, env: { "_RJEM_MALLOC_CONF" => "narenas:3" })
      expect(out.split).to eq(%w[3 1000])
    end

    it "serves Ruby's own allocations (stats.allocated grows with a 64 MB string)" do
      code = <<~'RUBY'
        mallctl_refresh
        before = mallctl_read("stats.allocated", "J", 8)
        blob = "x" * (64 * 1024 * 1024)
        mallctl_refresh
        puts mallctl_read("stats.allocated", "J", 8) - before, blob.bytesize
      RUBY
      grown, = probe_output(code, preload: path).split.map(&:to_i)
      expect(grown).to be > 60 * mb
    end

    it "gives freed memory back to the OS within seconds, with no call from Ruby" do
      code = <<~'RUBY'
        blob = "y" * (256 * 1024 * 1024)
        full = SidekiqRust::Memory.rss
        blob = nil
        GC.start
        deadline = Process.clock_gettime(Process::CLOCK_MONOTONIC) + 10
        sleep 0.2 while SidekiqRust::Memory.rss > full - 200 * 1024 * 1024 &&
                        Process.clock_gettime(Process::CLOCK_MONOTONIC) < deadline
        puts full, SidekiqRust::Memory.rss
      RUBY
      full, after = probe_output(code, preload: path).split.map(&:to_i)
      expect(full).to be > 256 * mb
      expect(full - after).to be > 200 * mb
    end

    it "keeps working in a forked child, threads and background purging included" do
      code = <<~'RUBY'
        threads = 4.times.map { Thread.new { 2_000.times.map { |i| "z" * (i * 7) }.size } }
        threads.each(&:join)
        pid = fork do
          Array.new(4) { Thread.new { 2_000.times { |i| ("w" * (i * 11)).upcase } } }.each(&:join)
          mallctl_refresh
          exit!(mallctl_read("stats.allocated", "J", 8).positive? ? 0 : 3)
        end
        Process.wait(pid)
        puts $?.exitstatus
      RUBY
      expect(probe_output(code, preload: path).chomp).to eq("0")
    end
  end

  describe "without it" do
    it "a child Ruby has no mallctl (this Ruby is not linked with jemalloc)" do
      expect(RbConfig::CONFIG["MAINLIBS"].to_s + RbConfig::CONFIG["LIBS"].to_s).not_to include("-ljemalloc")
      out = probe_output('puts Fiddle::Handle::DEFAULT["mallctl"] rescue puts "absent"', preload: nil)
      expect(out.chomp).to eq("absent")
    end
  end

  it "is the allocator of this very process exactly when LD_PRELOAD names it (rake spec:preload)" do
    preloaded = ENV["LD_PRELOAD"].to_s.split(/[:\s]+/).include?(path)
    require "fiddle"
    resolvable = begin
      Fiddle::Handle::DEFAULT["mallctl"]
      true
    rescue Fiddle::DLError
      false
    end
    expect(resolvable).to eq(preloaded)
  end
end
