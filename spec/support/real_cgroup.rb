# frozen_string_literal: true

require "securerandom"

# A real memory cgroup for the end-to-end specs: a child of this process's own memory cgroup (v1, the hybrid
# layout's memory hierarchy included, or v2), with a limit. Processes enter it through a wrapper that writes
# its own pid to cgroup.procs and then execs the command, so that nothing runs outside it first.
# RealCgroup.unavailable says why none can be made here (not root, no memory controller, read-only mount), nil
# when one can. #destroy moves whatever still runs back to the parent and removes the group.
class RealCgroup
  ROOT = "/sys/fs/cgroup"

  attr_reader :dir, :version, :limit

  class << self
    # [version, directory] of this process's memory cgroup, nil when none is found.
    def own
      lines = File.readlines("/proc/self/cgroup", chomp: true).map { |l| l.split(":", 3) }
      v1 = lines.find { |_, controllers, _| controllers.split(",").include?("memory") }
      return [1, File.join(ROOT, "memory", v1[2])] if v1

      path = lines.find { |id, controllers, _| id == "0" && controllers.empty? }&.last
      return nil unless path

      [ROOT, File.join(ROOT, "unified")].each do |mount|
        dir = File.join(mount, path)
        next unless File.exist?(File.join(mount, "cgroup.controllers"))
        return [2, dir] if File.read(File.join(mount, "cgroup.controllers")).split.include?("memory")
      end
      nil
    rescue Errno::ENOENT
      nil
    end

    # Why no memory cgroup can be made here, or nil.
    def unavailable
      return "not Linux (no /proc/self/cgroup)" unless File.exist?("/proc/self/cgroup")
      return "not root: making a memory cgroup needs root (the specs run as uid #{Process.uid})" unless Process.uid.zero?

      version, dir = own
      return "no memory cgroup controller is mounted under #{ROOT} (v1 memory/ or v2 with memory)" unless version
      return "#{dir} is not writable" unless File.writable?(dir)
      if version == 2 && !File.read(File.join(dir, "cgroup.subtree_control")).split.include?("memory")
        return "cgroup v2: the memory controller is not enabled for the children of #{dir} (cgroup.subtree_control; " \
               "v2's no-internal-processes rule: a cgroup with processes of its own cannot enable it for children)"
      end

      probe = new(limit: 64 * 1024 * 1024)
      probe.destroy
      nil
    rescue SystemCallError => e
      "cannot make a child memory cgroup under #{dir}: #{e.message}"
    end
  end

  def initialize(limit:, name: "sidekiq_rust-e2e-#{SecureRandom.hex(4)}")
    @version, parent = self.class.own
    @parent = parent
    @dir = File.join(parent, name)
    @limit = limit
    Dir.mkdir(@dir)
    begin
      set_limit
    rescue SystemCallError
      Dir.rmdir(@dir)
      raise
    end
  end

  # The command prefix that runs a command inside the group.
  def wrapper
    ["/bin/sh", "-c", "echo $$ > #{procs_file} && exec \"$@\"", "cgroup-wrapper"]
  end

  # Resizes the group in place (what Kubernetes' in-place pod resize does to a running container's cgroup).
  def limit=(bytes)
    @limit = bytes
    set_limit
  end

  def procs_file
    File.join(@dir, "cgroup.procs")
  end

  def pids
    File.read(procs_file).split.map(&:to_i)
  end

  def oom_kills
    key = @version == 1 ? "memory.oom_control" : "memory.events"
    read(key)[/^oom_kill (\d+)/, 1].to_i
  end

  # Times the usage hit the limit (v1 memory.failcnt, v2 `max` of memory.events): the kernel reclaimed then, it
  # did not necessarily kill.
  def limit_hits
    @version == 1 ? read("memory.failcnt").to_i : read("memory.events")[/^max (\d+)/, 1].to_i
  end

  def oom_kill_disabled?
    @version == 1 && read("memory.oom_control").match?(/^oom_kill_disable 1/)
  end

  # Moves what still runs in the group to the parent, then removes the group (retried: the kernel frees a
  # group a moment after its last process left).
  def destroy
    return unless File.directory?(@dir)

    pids.each do |pid|
      File.write(File.join(@parent, "cgroup.procs"), pid.to_s)
    rescue SystemCallError
      nil # gone meanwhile
    end
    20.times do
      Dir.rmdir(@dir)
      return
    rescue Errno::EBUSY
      sleep 0.1
    end
    Dir.rmdir(@dir)
  end

  private

  def read(file)
    File.read(File.join(@dir, file))
  end

  def write(file, value)
    path = File.join(@dir, file)
    File.write(path, value.to_s) if File.exist?(path)
  end

  # No swap either: at the limit the kernel reclaims page cache, then OOM-kills (no swapping instead).
  def set_limit
    if @version == 1
      File.write(File.join(@dir, "memory.limit_in_bytes"), @limit.to_s)
      write("memory.memsw.limit_in_bytes", @limit)
      write("memory.swappiness", 0)
    else
      File.write(File.join(@dir, "memory.max"), @limit.to_s)
      write("memory.swap.max", 0)
    end
  end
end
