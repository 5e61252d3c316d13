# frozen_string_literal: true

require "spec_helper"
require "sidekiq_rust/cli"

RSpec.describe SidekiqRust::CLI::Exec do
  print_preload = 'puts ENV["LD_PRELOAD"]'

  let(:exe) { File.expand_path("../exe/sidekiq_rust", __dir__) }
  let(:path) { SidekiqRust.jemalloc_path }
  # A real library to stand for a pre-existing LD_PRELOAD entry: the libm this Ruby is linked with.
  let(:libm) { `ldd #{RbConfig.ruby}`[%r{=> (/\S*/libm\.so\.\d+)}, 1] || raise("no libm in ldd #{RbConfig.ruby}") }
  let(:debian_jemalloc) { Allocators.debian_jemalloc }

  # Runs exe/sidekiq_rust with `args`; the child gets exactly `env`'s LD_PRELOAD (nil: none), even when this suite
  # itself runs under the preload.
  def sidekiq_rust(*args, env: {})
    Open3.capture3({ "LD_PRELOAD" => nil, "MALLOC_CONF" => nil, "_RJEM_MALLOC_CONF" => nil }.merge(env),
                   RbConfig.ruby, exe, *args, stdin_data: "")
  end

  describe "sidekiq_rust exec -- COMMAND" do
    it "runs COMMAND with the bundled jemalloc in LD_PRELOAD, once" do
      out, err, status = sidekiq_rust("exec", "--", RbConfig.ruby, "-e", print_preload)
      expect(status.exitstatus).to eq(0), err
      expect(out.chomp).to eq(path)
      expect(err).to eq("")
    end

    it "also takes COMMAND without --, and `ruby` from PATH" do
      out, err, status = sidekiq_rust("exec", "ruby", "-e", print_preload,
                                      env: { "PATH" => "#{RbConfig::CONFIG['bindir']}:#{ENV['PATH']}" })
      expect(status.exitstatus).to eq(0), err
      expect(out.chomp).to eq(path)
    end

    it "keeps a pre-existing LD_PRELOAD entry first and adds jemalloc after it" do
      out, err, status = sidekiq_rust("exec", "--", RbConfig.ruby, "-e", print_preload, env: { "LD_PRELOAD" => libm })
      expect(status.exitstatus).to eq(0), err
      expect(out.chomp).to eq("#{libm}:#{path}")
    end

    it "does not add it twice" do
      out, err, status = sidekiq_rust("exec", "--verbose", "--", RbConfig.ruby, "-e", print_preload,
                                      env: { "LD_PRELOAD" => "#{libm} #{path}" })
      expect(status.exitstatus).to eq(0), err
      expect(out.chomp).to eq("#{libm} #{path}")
      expect(err).to include("LD_PRELOAD already has a jemalloc (#{path})")
    end

    it "leaves another jemalloc in LD_PRELOAD alone and, with --verbose, says why" do
      out, err, status = sidekiq_rust("exec", "--verbose", "--", RbConfig.ruby, "-e", print_preload,
                                      env: { "LD_PRELOAD" => debian_jemalloc })
      expect(status.exitstatus).to eq(0), err
      expect(out.chomp).to eq(debian_jemalloc)
      expect(err).to eq("sidekiq_rust exec: LD_PRELOAD already has a jemalloc (#{debian_jemalloc}): " \
                        "not adding the bundled one\n")
    end

    it "recognises an already preloaded jemalloc from any path, e.g. Rails 8.1's link /usr/local/lib/libjemalloc.so" do
      Dir.mktmpdir("sidekiq_rust-links") do |dir|
        [File.join(dir, "libjemalloc.so"), File.join(dir, "libfastmalloc.so")].each do |link|
          File.symlink(debian_jemalloc, link)
          out, err, status = sidekiq_rust("exec", "--verbose", "--", RbConfig.ruby, "-e", print_preload,
                                          env: { "LD_PRELOAD" => link })
          expect(status.exitstatus).to eq(0), err
          expect(out.chomp).to eq(link)
          expect(err).to eq("sidekiq_rust exec: LD_PRELOAD already has a jemalloc (#{link}): " \
                            "not adding the bundled one\n")
        end
      end
    end

    it "says nothing about a skip without --verbose" do
      _, err, status = sidekiq_rust("exec", "--", RbConfig.ruby, "-e", "", env: { "LD_PRELOAD" => debian_jemalloc })
      expect(status.exitstatus).to eq(0)
      expect(err).to eq("")
    end

    it "with --verbose, shows the LD_PRELOAD it sets" do
      _, err, status = sidekiq_rust("exec", "--verbose", "--", RbConfig.ruby, "-e", "")
      expect(status.exitstatus).to eq(0), err
      expect(err).to eq("sidekiq_rust exec: LD_PRELOAD=#{path}\n")
    end

    it "passes MALLOC_CONF on to the bundled jemalloc as _RJEM_MALLOC_CONF" do
      code = "#{JemallocProbe::CODE}\nputs ENV['_RJEM_MALLOC_CONF'], mallctl_read('opt.narenas', 'L', 4)"
      out, err, status = sidekiq_rust("exec", "--", RbConfig.ruby, "-e", code, env: { "MALLOC_CONF" => "narenas:3" })
      expect(status.exitstatus).to eq(0), err
      expect(out.split).to eq(%w[narenas:3 3])
    end

    it "exits with COMMAND's own status, and 1 when COMMAND cannot be run" do
      _, _, status = sidekiq_rust("exec", "--", RbConfig.ruby, "-e", "exit 7")
      expect(status.exitstatus).to eq(7)
      _, err, status = sidekiq_rust("exec", "--", "/nonexistent/sidekiq")
      expect(status.exitstatus).to eq(1)
      expect(err).to include('cannot run "/nonexistent/sidekiq"', "No such file or directory")
    end
  end

  describe "usage" do
    it "exits 2 with the usage on stderr for a missing COMMAND or an unknown option" do
      [%w[exec], %w[exec --verbose], %w[exec --], %w[exec --bogus ruby]].each do |args|
        out, err, status = sidekiq_rust(*args)
        expect(status.exitstatus).to eq(2), args.inspect
        expect(out).to eq("")
        expect(err).to include("Usage: sidekiq_rust exec [--verbose] [--] COMMAND [ARGS...]")
      end
    end

    it "exits 2 for no command or an unknown one" do
      _, err, status = sidekiq_rust
      expect(status.exitstatus).to eq(2)
      expect(err).to include("Usage: sidekiq_rust COMMAND")
      _, err, status = sidekiq_rust("frobnicate")
      expect(status.exitstatus).to eq(2)
      expect(err).to match(/unknown command "frobnicate" \(known: [a-z, ]*exec/)
    end

    it "prints help on stdout and exits 0 for --help" do
      out, _, status = sidekiq_rust("--help")
      expect(status.exitstatus).to eq(0)
      expect(out).to include("exec", "run a command with the bundled jemalloc preloaded")
      out, _, status = sidekiq_rust("exec", "--help")
      expect(status.exitstatus).to eq(0)
      expect(out).to include("Usage: sidekiq_rust exec", "_RJEM_MALLOC_CONF")
    end

    it "exits 1 and says what to do when the bundled jemalloc is missing" do
      Dir.mktmpdir("sidekiq_rust-nojemalloc") do |dir|
        FileUtils.cp_r([ChildRuby::LIB, File.dirname(exe)], dir)
        File.delete(File.join(dir, "lib", "sidekiq_rust", "sidekiq_rust_jemalloc.so"))
        env = ChildRuby::UNBUNDLED_ENV.merge("LD_PRELOAD" => nil)
        out, err, status = Open3.capture3(env, RbConfig.ruby, File.join(dir, "exe", "sidekiq_rust"), "exec", "--",
                                          RbConfig.ruby, "-e", "puts :ran")
        expect(status.exitstatus).to eq(1)
        expect(out).to eq("")
        expect(err).to include("bundled jemalloc", "is not built", "rake compile")
      end
    end
  end

  describe "#parse and #plan (no exec)" do
    def exec_command(env: {}, rbconfig: { "MAINLIBS" => "-lz -lm", "LIBS" => "-lm" })
      described_class.new(env: env, rbconfig: rbconfig, jemalloc_path: "/gems/sidekiq_rust/jemalloc.so")
    end

    it "parses options up to -- or the first word" do
      expect(exec_command.parse(%w[--verbose -- sidekiq -C x.yml]).to_h)
        .to eq(help: false, verbose: true, command: %w[sidekiq -C x.yml])
      expect(exec_command.parse(%w[sidekiq --verbose]).to_h)
        .to eq(help: false, verbose: false, command: %w[sidekiq --verbose])
      expect(exec_command.parse(%w[-- --odd-name]).command).to eq(%w[--odd-name])
      expect(exec_command.parse(%w[--help]).help).to be(true)
      expect { exec_command.parse([]) }.to raise_error(SidekiqRust::CLI::UsageError, "no COMMAND given")
      expect { exec_command.parse(%w[-x ls]) }.to raise_error(SidekiqRust::CLI::UsageError, 'unknown option "-x"')
    end

    it "appends to an LD_PRELOAD separated by colons or spaces" do
      plan = exec_command(env: { "LD_PRELOAD" => "/a.so /b.so" }).plan
      expect(plan.env).to eq("LD_PRELOAD" => "/a.so /b.so:/gems/sidekiq_rust/jemalloc.so")
      expect(exec_command.preload_entries(" /a.so:/b.so  /c.so: ")).to eq(%w[/a.so /b.so /c.so])
    end

    it "adds nothing when this Ruby is linked with jemalloc (RbConfig MAINLIBS or LIBS)" do
      plan = exec_command(rbconfig: { "MAINLIBS" => "-lz -ljemalloc -lm", "LIBS" => "-lm" }).plan
      expect(plan.env).to eq({})
      expect(plan.notes).to eq(["this Ruby is linked with jemalloc (-ljemalloc in RbConfig): not adding the " \
                                "bundled one"])
      expect(exec_command(rbconfig: { "LIBS" => "-ljemalloc" }).plan.env).to eq({})
    end

    it "adds nothing when LD_PRELOAD already has another allocator" do
      plan = exec_command(env: { "LD_PRELOAD" => "/usr/lib/libtcmalloc_minimal.so.4" }).plan
      expect(plan.env).to eq({})
      expect(plan.notes.first).to include("another allocator (/usr/lib/libtcmalloc_minimal.so.4)")
    end

    it "copies MALLOC_CONF only when _RJEM_MALLOC_CONF is not set" do
      expect(exec_command(env: { "MALLOC_CONF" => "narenas:1" }).plan.env["_RJEM_MALLOC_CONF"]).to eq("narenas:1")
      plan = exec_command(env: { "MALLOC_CONF" => "narenas:1", "_RJEM_MALLOC_CONF" => "narenas:4" }).plan
      expect(plan.env).not_to have_key("_RJEM_MALLOC_CONF")
    end

    it "refuses a library path that LD_PRELOAD cannot carry" do
      command = described_class.new(env: {}, rbconfig: {}, jemalloc_path: "/my gems/jemalloc.so")
      expect { command.plan }.to raise_error(SidekiqRust::NotSupported, /contains a colon or a space/)
    end
  end
end
