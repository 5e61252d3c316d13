//! What the policy is given: the limits and timings of the restart path, and the brake's settings.

/// The memory brake's thresholds (bytes) and the process's concurrency (job threads, every capsule's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Brake {
    pub pause_at: u64,
    pub resume_at: u64,
    pub concurrency: u32,
    /// Start with one job thread fetching, not all (a process that replaced a memory restart: its
    /// predecessor's jobs, requeued, would otherwise all start again at once).
    pub slow_start: bool,
    /// Memory pressure (PSI "some" avg10, hundredths of a percent) at which the brake pauses whatever the memory
    /// figure; 0: pressure is not looked at.
    pub pressure_at: u32,
}

/// Limits and timings, all in bytes and milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub soft: u64,
    pub hard: Option<u64>,
    pub grace_ms: u64,
    pub reclaim: bool,
    pub reclaim_cooldown_ms: u64,
    /// The monitor's period: a refused restart is asked for again after it.
    pub check_interval_ms: u64,
    pub shutdown_wait_ms: u64,
    pub kill_after_ms: u64,
    /// After quiet took effect, never stop sooner than this (idle fetchers leave their blocking fetch).
    pub settle_ms: u64,
    /// How long after `Quiet` Sidekiq's `:quiet` event may take before the policy stops waiting for it.
    pub quiet_timeout_ms: u64,
    /// Soft restarts this soon after boot are checked for a restart loop (in a process that replaced a memory
    /// restart, `replaced_restart`); 0 turns the detection off.
    pub loop_window_ms: u64,
    /// This process started within `loop_window_ms` of a memory restart on its host (it most likely replaces
    /// it): only such a process is checked for a restart loop, and its brake starts with one job thread.
    pub replaced_restart: bool,
    /// Before stopping with jobs still running, the caller quarantines the poison pills among them.
    pub quarantine: bool,
    /// Sidekiq runs embedded in another program's process: the stop is the end (no kill).
    pub embedded: bool,
    pub brake: Option<Brake>,
}

/// The memory bounds alone, in bytes: the soft and hard limits and the brake's (pause_at, resume_at) when it is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    pub soft: u64,
    pub hard: Option<u64>,
    pub brake: Option<(u64, u64)>,
}

impl Limits {
    pub fn bounds(&self) -> Bounds {
        Bounds {
            soft: self.soft,
            hard: self.hard,
            brake: self.brake.map(|b| (b.pause_at, b.resume_at)),
        }
    }
}
