# frozen_string_literal: true

module SidekiqRust
  # Memory of a process, in bytes (Integer). `pid = nil` means this process.
  #
  #   SidekiqRust::Memory.rss            # => 123_456_512, this process, one pread of /proc/self/statm
  #   SidekiqRust::Memory.pss(1234)      # proportional set size of process 1234
  #   SidekiqRust::Memory.cgroup         # => {usage: ..., limit: ... or nil, version: 2, ...} or nil
  #   SidekiqRust::Memory.cgroup_oom     # => {oom_kills: 0, limit_hits: 0, group_kill: false, ...} or nil
  #   SidekiqRust::Memory.pressure       # => {some_avg10: 0.0, ..., source: "/proc/pressure/memory"} or nil
  module Memory
    PID_MAX = (2**31) - 1
    CGROUP_ROOT = "/sys/fs/cgroup"
    PROC_CGROUP = "/proc/self/cgroup"
    PROC_PRESSURE = "/proc/pressure/memory"

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
      Native.smaps(pid.nil? ? nil : check_pid(pid))
    end

    # The highest RSS the process has had (VmHWM).
    def peak_rss(pid = nil)
      Native.peak_rss(pid.nil? ? nil : check_pid(pid))
    end

    # The memory cgroup of this process, nil when it is in none (or the v2 hierarchy has no memory controller):
    #   usage:         the working set, what `metric = :cgroup` compares with the limits: the charged memory
    #                  minus the inactive file cache, which the kernel reclaims before its OOM killer acts (kubelet's
    #                  container_memory_working_set_bytes)
    #   current:       what the cgroup is charged (v2 memory.current, v1 memory.usage_in_bytes), page cache included
    #   inactive_file: the part of `current` the kernel reclaims first
    #   limit:         the effective limit (the smallest on the way up, v1 hierarchical_memory_limit), nil: none
    #   version:       1 or 2;  dir: the cgroup's directory
    # `root` and `proc_cgroup` exist for tests and unusual mounts.
    def cgroup(root: CGROUP_ROOT, proc_cgroup: PROC_CGROUP)
      Native.cgroup(root.to_s, proc_cgroup.to_s)
    end

    # The OOM counters of this process's memory cgroup, nil when it is in none:
    #   oom_kills:     processes the kernel's OOM killer killed in the cgroup (nil: the kernel does not count them)
    #   limit_hits:    times the usage reached the limit (v1 memory.failcnt, v2 `max` of memory.events)
    #   group_kill:    true when an OOM kill takes every process of the cgroup (v2 memory.oom.group, which
    #                  Kubernetes 1.28+ sets); v1 kills one process
    #   kill_disabled: v1 oom_kill_disable: no OOM kill, the processes hang at the limit instead
    #   version:, dir:
    def cgroup_oom(root: CGROUP_ROOT, proc_cgroup: PROC_CGROUP)
      Native.cgroup_oom(root.to_s, proc_cgroup.to_s)
    end

    # Memory pressure (PSI), nil where the kernel has none: the share of wall time, in percent, in which at least
    # one task (`some_*`) or every task (`full_*`) of the cgroup stalled waiting for memory, over the last 10, 60
    # and 300 s, and the stall time in microseconds (`*_total_us`). From the cgroup's memory.pressure on v2, else
    # the system's /proc/pressure/memory (`source:` says which). One small read (microseconds): cheap enough for
    # every check of the guard.
    #   SidekiqRust::Memory.pressure # => {some_avg10: 0.0, some_avg60: 0.0, ..., full_avg10: 0.0, ..., source: "..."}
    def pressure(root: CGROUP_ROOT, proc_cgroup: PROC_CGROUP, system: PROC_PRESSURE)
      Native.pressure(root.to_s, proc_cgroup.to_s, system.to_s)
    end

    def check_pid(pid)
      return pid if pid.is_a?(Integer) && pid.positive? && pid <= PID_MAX

      raise InvalidArgument, "pid must be a positive Integer (a process ID), got #{pid.inspect}"
    end
    private_class_method :check_pid
  end
end
