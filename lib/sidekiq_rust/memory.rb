# frozen_string_literal: true

module SidekiqRust
  # Memory of a process, in bytes (Integer). `pid = nil` means this process.
  #
  #   SidekiqRust::Memory.rss            # => 123_456_512, this process, one pread of /proc/self/statm
  #   SidekiqRust::Memory.pss(1234)      # proportional set size of process 1234
  #   SidekiqRust::Memory.cgroup         # => {usage: ..., limit: ... or nil, version: 2} or nil
  module Memory
    PID_MAX = (2**31) - 1

    module_function

    # Resident set size: pages in RAM, shared ones included. The cheapest reading (about a microsecond).
    def rss(pid = nil)
      pid.nil? ? Native.rss_self : Native.rss(check_pid(pid))
    end

    # Proportional set size: shared pages divided among the processes that map them (smaps_rollup).
    def pss(pid = nil)
      smaps(pid)[:pss]
    end

    # Unique set size: private clean + private dirty, what would be freed if the process exited.
    def uss(pid = nil)
      smaps(pid)[:uss]
    end

    # Bytes of the process swapped out.
    def swap(pid = nil)
      smaps(pid)[:swap]
    end

    # All smaps_rollup figures at once: {rss:, pss:, uss:, swap:}.
    def smaps(pid = nil)
      rss, pss, uss, swap = Native.smaps(pid.nil? ? nil : check_pid(pid))
      { rss: rss, pss: pss, uss: uss, swap: swap }
    end

    # The highest RSS the process has had (VmHWM).
    def peak_rss(pid = nil)
      Native.peak_rss(pid.nil? ? nil : check_pid(pid))
    end

    # The memory cgroup of this process: {usage:, limit:, version:}, with `limit: nil` when unlimited;
    # nil when the process is in no memory cgroup. `root` and `proc_cgroup` exist for tests and unusual mounts.
    def cgroup(root: "/sys/fs/cgroup", proc_cgroup: "/proc/self/cgroup")
      usage, limit, version = Native.cgroup(root.to_s, proc_cgroup.to_s)
      return nil if usage.nil?

      { usage: usage, limit: limit, version: version }
    end

    def check_pid(pid)
      return pid if pid.is_a?(Integer) && pid.positive? && pid <= PID_MAX

      raise InvalidArgument, "pid must be a positive Integer (a process ID), got #{pid.inspect}"
    end
    private_class_method :check_pid
  end
end
