//! What goes in and out of the policy: the events the caller reports, the actions it is given (and their names,
//! the one table both sides use), and the reasons and causes they carry.

use crate::names::Named;

/// Why the policy asks for a reclaim or a restart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// Over the hard limit (after a reclaim, when on, that did not bring it under).
    Hard,
    /// Over the soft limit for longer than the grace time (and, with reclaim, still over after it).
    Soft,
    /// The brake paused fetching and the running jobs finished (reclaims only).
    Brake,
    /// The brake paused, the running jobs finished, a reclaim ran, and memory is still at `pause_at`: retained, not
    /// in flight, which only a restart gives back (restarts only). A paused process serves no job: a sole
    /// process restarts too.
    Retained,
}

impl Named for Reason {
    const WHAT: &'static str = "restart reason";

    fn all() -> &'static [Reason] {
        &[Reason::Hard, Reason::Soft, Reason::Brake, Reason::Retained]
    }

    fn as_str(self) -> &'static str {
        match self {
            Reason::Hard => "hard_max_rss",
            Reason::Soft => "max_rss",
            Reason::Brake => "brake",
            Reason::Retained => "retained",
        }
    }
}

/// Why the quiet process is stopped now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopCause {
    /// No job runs any more.
    Idle,
    /// `shutdown_wait` passed with jobs still running; Sidekiq requeues them.
    Waited,
    /// Over the hard limit while quiet: the running jobs would take it to the OOM killer.
    HardLimit,
}

/// Why the brake lets the process fetch again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResumeCause {
    /// Memory went below `resume_at`.
    Below,
    /// Idle after a reclaim, below `pause_at` but above `resume_at`: fetch again with a small window; the brake
    /// stays on (it pauses again at `pause_at`).
    Idle,
    /// The brake lets go and stays off until memory is below `resume_at`: idle after a reclaim under memory
    /// pressure (not this process's to relieve), or retained at `pause_at` where no restart can be had (a dry run,
    /// an embedded Sidekiq without its instance).
    Retained,
}

/// Why the caller could not get a restart slot (its outcome of `RequestRestart`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denial {
    /// `dry_run`: the restart is only logged.
    DryRun,
    /// Sidekiq runs embedded and the guard has no instance to quiet and stop.
    Embedded,
    /// Every restart slot of the fleet is held.
    NoSlot,
    /// No other live process serves (`require_other_process`, the soft limit).
    SoleProcess,
    /// Redis could not be asked.
    RedisUnavailable,
}

impl Denial {
    /// Asking again cannot change it: the process's own settings refuse every restart.
    pub fn lasting(self) -> bool {
        matches!(self, Denial::DryRun | Denial::Embedded)
    }
}

impl Named for Denial {
    const WHAT: &'static str = "denial reason";

    fn all() -> &'static [Denial] {
        &[
            Denial::DryRun,
            Denial::Embedded,
            Denial::NoSlot,
            Denial::SoleProcess,
            Denial::RedisUnavailable,
        ]
    }

    fn as_str(self) -> &'static str {
        match self {
            Denial::DryRun => "dry_run",
            Denial::Embedded => "embedded",
            Denial::NoSlot => "no_slot",
            Denial::SoleProcess => "sole_process",
            Denial::RedisUnavailable => "redis_unavailable",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    None,
    /// Run GC and purge the allocator, then report `Event::Reclaimed`.
    Reclaim(Reason),
    /// Ask the fleet for a restart slot, then report `SlotGranted` or `SlotDenied`.
    RequestRestart(Reason),
    /// The soft limit is below the working set (see the module's notes): warn; no restart.
    WarnLoop,
    /// Stop taking new jobs (TSTP to this process, or the embedded instance's quiet).
    Quiet,
    /// Sidekiq's `:quiet` event did not come within `quiet_timeout_ms`: warn; the settle counts from now.
    QuietUnconfirmed,
    /// Jobs still run at the stop: send those in flight at `quarantine_after` restarts to the dead set, then
    /// report `Event::Quarantined`.
    Quarantine,
    /// Stop (TERM to this process, or the embedded instance's stop); Sidekiq requeues what still runs.
    Stop(StopCause),
    /// The process hung after TERM: KILL.
    Kill,
    /// The brake: fetch no new job (the window is 0); running jobs go on.
    Pause,
    /// The brake: fetch again, with `Policy::window` job threads.
    Resume(ResumeCause),
    /// The brake's window grew by one (`Policy::window`).
    Widen,
}

/// Every action the caller can be given, by its name: the one table both sides use.
pub const ACTIONS: [(Action, &str); 19] = [
    (Action::Reclaim(Reason::Soft), "reclaim_soft"),
    (Action::Reclaim(Reason::Hard), "reclaim_hard"),
    (Action::Reclaim(Reason::Brake), "reclaim_brake"),
    (Action::RequestRestart(Reason::Soft), "restart_soft"),
    (Action::RequestRestart(Reason::Hard), "restart_hard"),
    (Action::RequestRestart(Reason::Retained), "restart_retained"),
    (Action::WarnLoop, "warn_loop"),
    (Action::Quiet, "quiet"),
    (Action::QuietUnconfirmed, "quiet_unconfirmed"),
    (Action::Quarantine, "quarantine"),
    (Action::Stop(StopCause::Idle), "stop_idle"),
    (Action::Stop(StopCause::Waited), "stop_waited"),
    (Action::Stop(StopCause::HardLimit), "stop_hard"),
    (Action::Kill, "kill"),
    (Action::Pause, "pause"),
    (Action::Resume(ResumeCause::Below), "resume"),
    (Action::Resume(ResumeCause::Idle), "resume_idle"),
    (Action::Resume(ResumeCause::Retained), "resume_retained"),
    (Action::Widen, "widen"),
];

impl Action {
    /// The action's name in `ACTIONS`; None for `Action::None`.
    pub fn name(self) -> Option<&'static str> {
        ACTIONS.iter().find(|(a, _)| *a == self).map(|(_, n)| *n)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// A memory reading, with the number of jobs this process runs right now, how many it finished so far, and
    /// the memory pressure last read (PSI "some" avg10, hundredths of a percent; 0: none or not looked at).
    Sample {
        memory: u64,
        now_ms: u64,
        busy: u32,
        done: u64,
        pressure: u32,
    },
    /// The reclaim finished; `memory` is the reading after it.
    Reclaimed {
        memory: u64,
        now_ms: u64,
    },
    SlotGranted {
        now_ms: u64,
    },
    SlotDenied {
        reason: Denial,
        now_ms: u64,
    },
    /// Sidekiq reported that quiet took effect (its `:quiet` event), whoever asked for it.
    Quieted {
        now_ms: u64,
    },
    /// The caller quarantined what it had to (the outcome of `Action::Quarantine`).
    Quarantined {
        now_ms: u64,
    },
}
