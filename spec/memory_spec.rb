# frozen_string_literal: true

require "spec_helper"

RSpec.describe SidekiqRust::Memory do
  let(:mb) { 1024 * 1024 }

  describe ".rss" do
    it "agrees with VmRSS within 1% after allocating 200 MB" do
      blob = "x" * (200 * mb)
      ours = described_class.rss
      theirs = vm_rss_bytes
      expect(ours).to be > 200 * mb
      expect(ours).to be_within(theirs / 100).of(theirs)
      expect(blob.bytesize).to eq(200 * mb)
    end

    it "reads another process, agreeing with ps -o rss=" do
      reader, writer = IO.pipe
      pid = Process.spawn(RbConfig.ruby, "-e", 'b = "y" * 80_000_000; puts :ready; STDOUT.flush; sleep',
                          out: writer)
      writer.close
      expect(reader.gets&.chomp).to eq("ready")
      ours = described_class.rss(pid)
      ps = Integer(`ps -o rss= -p #{pid}`.strip) * 1024
      expect(ours).to be > 80 * mb
      expect(ours).to be_within(ps / 100).of(ps)
    ensure
      Process.kill(:KILL, pid) if pid
      Process.wait(pid) if pid
    end

    it "returns an Integer number of bytes" do
      expect(described_class.rss).to be_a(Integer)
      expect(described_class.rss(Process.pid)).to be_within(4 * mb).of(described_class.rss)
    end
  end

  describe "smaps figures" do
    it "orders USS <= PSS <= RSS and reports swap" do
      s = described_class.smaps
      expect(s.keys).to eq(%i[rss pss uss swap])
      expect(s[:uss]).to be <= s[:pss]
      expect(s[:pss]).to be <= s[:rss]
      expect(s[:swap]).to be >= 0
      expect(described_class.pss).to be_a(Integer)
      expect(described_class.uss(Process.pid)).to be > 0
      expect(described_class.swap).to be >= 0
    end

    # What the blob adds, and only that: a GC between the two readings (Ruby 3.4 freeing heap pages and malloc
    # giving memory back) once made the difference -142 MB, so none runs in between; and the blob must take fresh
    # pages, not ones the allocator kept resident from earlier examples (jemalloc reuses its dirty pages), so
    # they are given back first.
    it "counts freshly written private memory in USS" do
      GC.start
      SidekiqRust::Allocator.purge
      GC.disable
      begin
        before = described_class.uss
        blob = "z" * (64 * mb)
        grown = described_class.uss - before
      ensure
        GC.enable
      end
      expect(grown).to be > 60 * mb
      expect(blob.bytesize).to eq(64 * mb)
    end
  end

  describe ".peak_rss" do
    it "is at least the current RSS" do
      expect(described_class.peak_rss).to be >= described_class.rss
      expect(described_class.peak_rss(Process.pid)).to be > 0
    end
  end

  describe "errors" do
    let(:gone_pid) do
      pid = Process.spawn(RbConfig.ruby, "-e", "exit")
      Process.wait(pid)
      pid
    end

    it "raises NoSuchProcess naming the PID and the file for a process that does not exist" do
      %i[rss pss uss swap peak_rss].each do |reader|
        expect { described_class.public_send(reader, gone_pid) }.to raise_error(SidekiqRust::NoSuchProcess) do |e|
          expect(e.message).to include(gone_pid.to_s)
          expect(e.message).to match(%r{/proc/#{gone_pid}/})
        end
      end
    end

    it "raises InvalidArgument for something that is not a PID" do
      ["1", -5, 0, 2**40, 1.5].each do |bad|
        expect { described_class.rss(bad) }.to raise_error(SidekiqRust::InvalidArgument, /positive Integer/)
      end
    end

    it "raises PermissionDenied reading another user's smaps" do
      skip "needs root to run a child as nobody" unless Process.uid.zero?

      code = "begin; SidekiqRust::Memory.pss(#{Process.pid}); puts :read; " \
             "rescue SidekiqRust::Error => e; puts e.class, e.message; end"
      out = ruby_output_as_nobody(code)
      expect(out.lines.first.chomp).to eq("SidekiqRust::PermissionDenied")
      expect(out).to include(Process.pid.to_s).and include("smaps")
    end

    it "raises NotSupported where /proc is not mounted" do
      skip "needs root and unshare(1) for a mount namespace" unless Process.uid.zero? && system("which unshare >/dev/null")

      code = "begin; SidekiqRust::Memory.rss; puts :read; rescue SidekiqRust::Error => e; puts e.class, e.message; end"
      script = "umount -l /proc && exec #{RbConfig.ruby} -I #{ChildRuby::LIB} -rsidekiq_rust -e '#{code}'"
      out, err, status = Open3.capture3("unshare", "--mount", "--propagation", "private", "sh", "-c", script)
      skip "unshare is not permitted here: #{err}" unless status.success?
      expect(out.lines.first.chomp).to eq("SidekiqRust::NotSupported")
      expect(out).to include("/proc/self/statm").and include("not mounted")
    end

    it "makes every error a SidekiqRust::Error" do
      [SidekiqRust::NoSuchProcess, SidekiqRust::PermissionDenied, SidekiqRust::NotSupported,
       SidekiqRust::InvalidArgument, SidekiqRust::ConfigurationError].each do |klass|
        expect(klass.ancestors).to include(SidekiqRust::Error)
      end
    end
  end

  describe "fork safety" do
    it "reads the child, not the parent, after fork" do
      described_class.rss # the parent opens and keeps its descriptor
      reader, writer = IO.pipe
      pid = fork do
        reader.close
        blob = "c" * (150 * mb)
        writer.puts [described_class.rss, vm_rss_bytes, blob.bytesize].join(" ")
        writer.close
        exit!(0)
      end
      writer.close
      child_rss, child_vm_rss, = reader.read.split.map(&:to_i)
      Process.wait(pid)
      parent_rss = described_class.rss
      expect(child_rss).to be_within(child_vm_rss / 100).of(child_vm_rss)
      # The two differ enough that a descriptor still reading the parent would have failed the line above.
      expect((child_rss - parent_rss).abs).to be > parent_rss / 20
    end
  end

  describe "threads under GC.stress" do
    it "serves 8 threads calling every reader" do
      results = Queue.new
      GC.stress = true
      threads = Array.new(8) do
        Thread.new do
          10.times do
            results << described_class.rss
            results << described_class.smaps[:pss]
            results << described_class.peak_rss
            results << described_class.rss(Process.pid)
          end
        end
      end
      threads.each(&:join)
      GC.stress = false
      values = Array.new(results.size) { results.pop }
      expect(values.size).to eq(8 * 10 * 4)
      expect(values).to all(be_a(Integer).and(be > 0))
    ensure
      GC.stress = false
    end
  end

  describe ".cgroup" do
    let(:fixtures) { File.expand_path("fixtures/cgroup", __dir__) }

    def cgroup_of(name)
      dir = File.join(fixtures, name)
      described_class.cgroup(root: File.join(dir, "sys_fs_cgroup"), proc_cgroup: File.join(dir, "proc_self_cgroup"))
    end

    it "reads cgroup v2 usage and limit" do
      expect(cgroup_of("v2_limited")).to include(usage: 268_435_456, limit: 1_073_741_824, version: 2,
                                               current: 268_435_456, inactive_file: 0)
    end

    it "reads 'max' as no limit" do
      expect(cgroup_of("v2_unlimited")).to include(usage: 104_857_600, limit: nil, version: 2)
    end

    it "applies a limit set on an ancestor cgroup" do
      expect(cgroup_of("v2_nested")[:limit]).to eq(536_870_912)
    end

    it "falls back to the mount root inside a container" do
      expect(cgroup_of("v2_namespaced")).to include(usage: 52_428_800, limit: 209_715_200, version: 2)
    end

    it "reads cgroup v1, where a huge limit means none" do
      expect(cgroup_of("v1_limited")).to include(usage: 314_572_800, limit: 2_147_483_648, version: 1)
      expect(cgroup_of("v1_unlimited")).to include(usage: 734_003_200, limit: nil, version: 1)
    end

    it "compares the working set: the charge less the inactive file cache, which the kernel reclaims first" do
      expect(cgroup_of("v2_kubepods")).to include(usage: 200 * 1_048_576, current: 300 * 1_048_576,
                                                  inactive_file: 100 * 1_048_576, limit: 536_870_912)
    end

    it "takes a v1 ancestor's limit (hierarchical_memory_limit) in the hybrid layout" do
      expect(cgroup_of("v1_nested")).to include(usage: 157_286_400, limit: 268_435_456, version: 1,
                                                dir: end_with("memory/process_api/abc/sidekiq"))
    end

    it "is nil outside a memory cgroup and where /proc/self/cgroup is missing" do
      expect(cgroup_of("none")).to be_nil
      expect(described_class.cgroup(proc_cgroup: File.join(fixtures, "no-such-file"))).to be_nil
    end

    it "raises a SidekiqRust::Error naming the file for garbage" do
      expect { cgroup_of("v2_garbage") }.to raise_error(SidekiqRust::Error, /memory.current/)
    end

    it "reads this machine's cgroup (or nil)" do
      value = described_class.cgroup
      expect(value).to be_nil.or(include(:usage, :limit, :version))
    end
  end

  describe ".cgroup_oom" do
    let(:fixtures) { File.expand_path("fixtures/cgroup", __dir__) }

    def oom_of(name)
      dir = File.join(fixtures, name)
      described_class.cgroup_oom(root: File.join(dir, "sys_fs_cgroup"), proc_cgroup: File.join(dir, "proc_self_cgroup"))
    end

    it "reads v2 memory.events and memory.oom.group, v1 memory.oom_control and memory.failcnt" do
      expect(oom_of("v2_kubepods")).to include(oom_kills: 2, limit_hits: 40, group_kill: true, version: 2)
      expect(oom_of("v1_nested")).to include(oom_kills: 3, limit_hits: 17, group_kill: false, kill_disabled: false,
                                             version: 1)
      expect(oom_of("v2_limited")).to include(oom_kills: nil, group_kill: false)
      expect(oom_of("none")).to be_nil
    end
  end

  describe ".pressure" do
    let(:fixtures) { File.expand_path("fixtures/cgroup", __dir__) }

    it "reads the cgroup's own memory.pressure on v2" do
      dir = File.join(fixtures, "v2_kubepods")
      pressure = described_class.pressure(root: File.join(dir, "sys_fs_cgroup"),
                                          proc_cgroup: File.join(dir, "proc_self_cgroup"), system: "/nonexistent")
      expect(pressure).to include(some_avg10: 12.5, some_avg60: 3.25, some_avg300: 0.75, some_total_us: 987_654,
                                  full_avg10: 8.0, source: end_with("worker/memory.pressure"))
    end

    it "reads the system's file on v1, and is nil without PSI" do
      dir = File.join(fixtures, "v1_nested")
      args = { root: File.join(dir, "sys_fs_cgroup"), proc_cgroup: File.join(dir, "proc_self_cgroup") }
      system = File.join(fixtures, "v2_kubepods/sys_fs_cgroup/kubepods/pod1/worker/memory.pressure")
      expect(described_class.pressure(**args, system: system)).to include(some_avg10: 12.5, source: system)
      expect(described_class.pressure(**args, system: "/nonexistent/pressure")).to be_nil
    end

    it "raises a SidekiqRust::Error naming a file that is not PSI" do
      garbage = File.join(fixtures, "v2_garbage/sys_fs_cgroup/app/memory.current")
      expect { described_class.pressure(proc_cgroup: "/nonexistent", system: garbage) }
        .to raise_error(SidekiqRust::Error, /memory.current is not a PSI file/)
    end

    it "reads this machine's pressure (or nil)" do
      expect(described_class.pressure).to be_nil.or(include(:some_avg10, :full_avg10, :source))
    end
  end
end
