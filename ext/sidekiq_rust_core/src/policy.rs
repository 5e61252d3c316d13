//! The guard's decisions, as a pure state machine: samples and the outcomes of what the caller did in, one action
//! out. Time is a monotonic millisecond count given by the caller, counted from the process's start (the guard is
//! made at Sidekiq's boot), so tests replay any timeline and `now_ms` is also the process's uptime.
//!
//! ```text
//! Serving --(over hard, or over soft for grace)--> [Reclaim] --> Reclaiming --(still over)--> WaitingSlot
//! Serving ----------------------------------------(no reclaim)--------------------------------> WaitingSlot
//! WaitingSlot --(slot granted)--> [Quiet] Quieting --(quiet took effect + settle, then busy == 0, shutdown_wait
//!               or over hard)--> [Quarantine] Quarantining --(quarantined)--> [Stop] Stopping --(kill_after)--> [Kill]
//! WaitingSlot --(slot denied)---> Serving (asks again after check_interval_ms)
//! ```
//!
//! The caller runs each action it is given and reports the outcome as the next event (`Reclaimed`,
//! `SlotGranted`/`SlotDenied`, `Quarantined`); actions without an outcome (quiet, stop, kill, pause, resume,
//! widen, warn) take effect in the policy when they are returned.
//!
//! Quiet is measured from Sidekiq's own `:quiet` event (`Event::Quieted`), not from the signal: under load the
//! signal may be handled seconds later. Without the event for `quiet_timeout_ms`, the policy says so
//! (`Action::QuietUnconfirmed`) and counts the settle from then.
//!
//! A soft-limit restart sooner than `loop_window_ms` after boot, when reclaim gave back less than
//! `LOOP_RECLAIM_PERCENT` of the memory, is a restart loop: the limit is below the working set and a restart
//! would rebuild it. The policy reports it once (`Action::WarnLoop`) and makes no soft restart until the
//! process is `loop_window_ms` old. The hard limit is never held back.
//!
//! The brake (`Limits::brake`) works below the restart path, while the process serves: at `pause_at` it stops
//! fetching (`Pause`, the fetch window goes to 0) and lets the running jobs finish; idle, it reclaims; below
//! `resume_at` it fetches again (`Resume`) with half the jobs that ran when it paused (at least 1), and the window
//! grows by one for each sample that saw a job finish while memory is below `resume_at`, or has room below
//! `pause_at` for one more job of the size the last pause with jobs running measured ((memory at the pause -
//! memory at the resume) / jobs running at the pause) (`Widen`), back to the concurrency: a congestion window, so that the jobs that pushed memory up do not all
//! start again at once (a process that
//! replaced a memory restart starts with a window of 1: `slow_start`). Idle after a reclaim
//! and still above `resume_at`, the pause cannot help (the memory is retained, not in flight): it resumes at full
//! concurrency (`Resume(Retained)`) and stays off until memory is below `resume_at` again. Over the soft limit
//! for `grace_ms` or at the hard limit, the restart path runs as without the brake. Memory pressure (PSI) at
//! `pressure_at` pauses it too, whatever the memory figure, and holds the resume; idle after its reclaim and still
//! pressured, it lets go as for retained memory (the pressure is not this process's to relieve).

/// Reclaim that gives back less than this share (percent) of the memory counts as "little" for the
/// restart-loop detection.
pub const LOOP_RECLAIM_PERCENT: u64 = 10;

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

/// Why the policy asks for a reclaim or a restart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// Over the hard limit (after a reclaim, when on, that did not bring it under).
    Hard,
    /// Over the soft limit for longer than the grace time (and, with reclaim, still over after it).
    Soft,
    /// The brake paused fetching and the running jobs finished (reclaims only).
    Brake,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Hard => "hard_limit",
            Reason::Soft => "soft_limit",
            Reason::Brake => "brake",
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
    /// Idle after a reclaim and still above `resume_at`: the memory is retained, pausing cannot bring it down.
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
    pub const ALL: [Denial; 5] = [
        Denial::DryRun,
        Denial::Embedded,
        Denial::NoSlot,
        Denial::SoleProcess,
        Denial::RedisUnavailable,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Denial::DryRun => "dry_run",
            Denial::Embedded => "embedded",
            Denial::NoSlot => "no_slot",
            Denial::SoleProcess => "sole_process",
            Denial::RedisUnavailable => "redis_unavailable",
        }
    }

    pub fn from_name(name: &str) -> Option<Denial> {
        Denial::ALL.into_iter().find(|d| d.as_str() == name)
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
pub const ACTIONS: [(Action, &str); 17] = [
    (Action::Reclaim(Reason::Soft), "reclaim_soft"),
    (Action::Reclaim(Reason::Hard), "reclaim_hard"),
    (Action::Reclaim(Reason::Brake), "reclaim_brake"),
    (Action::RequestRestart(Reason::Soft), "restart_soft"),
    (Action::RequestRestart(Reason::Hard), "restart_hard"),
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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Serving,
    Reclaiming(Reason),
    WaitingSlot(Reason),
    Quieting { since_ms: u64 },
    Quarantining { cause: StopCause },
    Stopping { since_ms: u64 },
    Done,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Serving => "serving",
            Phase::Reclaiming(_) => "reclaiming",
            Phase::WaitingSlot(_) => "waiting_slot",
            Phase::Quieting { .. } => "quieting",
            Phase::Quarantining { .. } => "quarantining",
            Phase::Stopping { .. } => "stopping",
            Phase::Done => "done",
        }
    }

    /// Quiet was asked for: the restart sequence (quiet, stop, kill) is under way.
    pub fn restarting(self) -> bool {
        matches!(
            self,
            Phase::Quieting { .. }
                | Phase::Quarantining { .. }
                | Phase::Stopping { .. }
                | Phase::Done
        )
    }
}

/// The memory before and after the last reclaim.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReclaimResult {
    pub before: u64,
    pub after: u64,
}

impl ReclaimResult {
    /// Gave back less than `LOOP_RECLAIM_PERCENT` of the memory.
    pub fn little(self) -> bool {
        self.before.saturating_sub(self.after) * 100 < self.before * LOOP_RECLAIM_PERCENT
    }
}

/// The brake's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct BrakeState {
    /// Job threads allowed to fetch; the concurrency when the brake is off.
    window: u32,
    paused_since: Option<u64>,
    /// Jobs running when it paused (the window it resumes with is half of it).
    busy_at_pause: u32,
    /// The memory when it paused.
    memory_at_pause: u64,
    /// What one job of the mix that made it pause needs: (memory at the pause - memory at the resume) / jobs
    /// running at the pause. The window grows only while memory has room for one more such job.
    per_job: u64,
    /// This pause reclaimed already.
    reclaimed: bool,
    /// Resumed with the memory retained: off until memory is below `resume_at`.
    off: bool,
    /// Jobs finished when the window last grew.
    done_seen: u64,
    /// The busy count of the last sample (the reclaim's outcome has none).
    last_busy: u32,
    /// Milliseconds paused, over the process's life (finished pauses).
    paused_ms: u64,
}

#[derive(Debug, Clone)]
pub struct Policy {
    limits: Limits,
    phase: Phase,
    over_soft_since: Option<u64>,
    last_reclaim_ms: Option<u64>,
    reclaim_before: u64,
    last_reclaim: Option<ReclaimResult>,
    next_request_ms: u64,
    quiet_at: Option<u64>,
    decision_memory: u64,
    loop_reported: bool,
    last_denial: Option<Denial>,
    pressure: u32,
    brake: BrakeState,
}

impl Policy {
    pub fn new(limits: Limits) -> Self {
        Policy {
            limits,
            phase: Phase::Serving,
            over_soft_since: None,
            last_reclaim_ms: None,
            reclaim_before: 0,
            last_reclaim: None,
            next_request_ms: 0,
            quiet_at: None,
            decision_memory: 0,
            loop_reported: false,
            last_denial: None,
            pressure: 0,
            brake: BrakeState {
                window: limits
                    .brake
                    .map_or(0, |b| if b.slow_start { 1 } else { b.concurrency }),
                ..BrakeState::default()
            },
        }
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// The reading the last reclaim, restart or restart-loop decision was made on (0: none yet).
    pub fn decision_memory(&self) -> u64 {
        self.decision_memory
    }

    /// The memory before and after the last reclaim, if there was one.
    pub fn last_reclaim(&self) -> Option<ReclaimResult> {
        self.last_reclaim
    }

    /// When Sidekiq's `:quiet` took effect (or the policy stopped waiting for it).
    pub fn quiet_at(&self) -> Option<u64> {
        self.quiet_at
    }

    /// Why the last restart request was refused, if it was.
    pub fn last_denial(&self) -> Option<Denial> {
        self.last_denial
    }

    /// How many job threads may fetch now (the brake's window; the concurrency when no brake is set up).
    pub fn window(&self) -> u32 {
        self.brake.window
    }

    /// Whether memory pressure is at the brake's `pressure_at`.
    pub fn pressured(&self) -> bool {
        self.limits
            .brake
            .is_some_and(|b| b.pressure_at > 0 && self.pressure >= b.pressure_at)
    }

    /// Whether the brake holds fetching (window 0).
    pub fn paused(&self) -> bool {
        self.brake.paused_since.is_some()
    }

    /// Milliseconds the brake held fetching, over the process's life, up to `now_ms`.
    pub fn paused_ms(&self, now_ms: u64) -> u64 {
        let current = self
            .brake
            .paused_since
            .map_or(0, |since| now_ms.saturating_sub(since));
        self.brake.paused_ms + current
    }

    /// Feeds one event and returns what the caller must do now.
    pub fn step(&mut self, event: Event) -> Action {
        if let Event::Sample { pressure, .. } = event {
            self.pressure = pressure;
        }
        match (self.phase, event) {
            (_, Event::Quieted { now_ms }) => {
                self.quiet_at.get_or_insert(now_ms);
                Action::None
            }
            (
                Phase::Serving,
                Event::Sample {
                    memory,
                    now_ms,
                    busy,
                    done,
                    ..
                },
            ) => {
                self.brake.last_busy = busy;
                match self.serving(memory, now_ms) {
                    Action::None => self.braking(memory, now_ms, busy, done),
                    action => action,
                }
            }
            (Phase::Reclaiming(reason), Event::Reclaimed { memory, now_ms }) => {
                // Any reclaim while paused is the pause's reclaim: no second one follows when idle.
                if self.paused() {
                    self.brake.reclaimed = true;
                }
                match self.after_reclaim(reason, memory, now_ms) {
                    Action::None => {
                        let (busy, done) = (self.brake.last_busy, self.brake.done_seen);
                        self.braking(memory, now_ms, busy, done)
                    }
                    action => action,
                }
            }
            (Phase::WaitingSlot(_), Event::SlotGranted { now_ms }) => {
                self.last_denial = None;
                self.phase = Phase::Quieting { since_ms: now_ms };
                Action::Quiet
            }
            (Phase::WaitingSlot(_), Event::SlotDenied { reason, now_ms }) => {
                self.last_denial = Some(reason);
                self.phase = Phase::Serving;
                self.next_request_ms = now_ms.saturating_add(self.limits.check_interval_ms);
                Action::None
            }
            (
                Phase::Quieting { since_ms },
                Event::Sample {
                    memory,
                    now_ms,
                    busy,
                    ..
                },
            ) => self.quieting(since_ms, memory, now_ms, busy),
            (Phase::Quarantining { cause }, Event::Quarantined { now_ms }) => {
                self.stop(cause, now_ms)
            }
            (Phase::Stopping { since_ms }, Event::Sample { now_ms, .. }) => {
                if now_ms.saturating_sub(since_ms) >= self.limits.kill_after_ms {
                    self.phase = Phase::Done;
                    Action::Kill
                } else {
                    Action::None
                }
            }
            _ => Action::None,
        }
    }

    fn over_hard(&self, memory: u64) -> bool {
        self.limits.hard.is_some_and(|hard| memory >= hard)
    }

    fn request(&mut self, reason: Reason, memory: u64, now_ms: u64) -> Action {
        if now_ms < self.next_request_ms {
            return Action::None;
        }
        self.decision_memory = memory;
        self.phase = Phase::WaitingSlot(reason);
        Action::RequestRestart(reason)
    }

    fn reclaim(&mut self, reason: Reason, memory: u64, now_ms: u64) -> Action {
        self.last_reclaim_ms = Some(now_ms);
        self.reclaim_before = memory;
        self.decision_memory = memory;
        self.phase = Phase::Reclaiming(reason);
        Action::Reclaim(reason)
    }

    fn may_reclaim(&self, now_ms: u64) -> bool {
        self.limits.reclaim
            && self
                .last_reclaim_ms
                .is_none_or(|last| now_ms.saturating_sub(last) >= self.limits.reclaim_cooldown_ms)
    }

    /// Over the soft limit for the grace time, reclaimed or not: restart, unless it is a restart loop.
    fn request_soft(&mut self, memory: u64, now_ms: u64) -> Action {
        let young = self.limits.replaced_restart && now_ms < self.limits.loop_window_ms;
        if young && self.loop_reported {
            return Action::None; // backing off until the window ends
        }
        let reclaim_little = self.last_reclaim.is_none_or(ReclaimResult::little);
        if young && reclaim_little {
            self.loop_reported = true;
            self.decision_memory = memory;
            return Action::WarnLoop;
        }
        self.request(Reason::Soft, memory, now_ms)
    }

    /// The restart path of a serving process: the limits.
    fn serving(&mut self, memory: u64, now_ms: u64) -> Action {
        if memory < self.limits.soft {
            self.over_soft_since = None;
            return Action::None;
        }
        let since = *self.over_soft_since.get_or_insert(now_ms);
        if self.over_hard(memory) {
            if self.may_reclaim(now_ms) {
                return self.reclaim(Reason::Hard, memory, now_ms);
            }
            return self.request(Reason::Hard, memory, now_ms);
        }
        if now_ms.saturating_sub(since) < self.limits.grace_ms {
            return Action::None;
        }
        if self.may_reclaim(now_ms) {
            return self.reclaim(Reason::Soft, memory, now_ms);
        }
        self.request_soft(memory, now_ms)
    }

    fn after_reclaim(&mut self, reason: Reason, memory: u64, now_ms: u64) -> Action {
        self.phase = Phase::Serving;
        self.decision_memory = memory;
        self.last_reclaim = Some(ReclaimResult {
            before: self.reclaim_before,
            after: memory,
        });
        if self.over_hard(memory) {
            return self.request(Reason::Hard, memory, now_ms);
        }
        if memory < self.limits.soft {
            self.over_soft_since = None;
            return Action::None;
        }
        // Brought under the hard limit but still over the soft one: the soft limit's grace still applies.
        let since = *self.over_soft_since.get_or_insert(now_ms);
        if reason != Reason::Soft && now_ms.saturating_sub(since) < self.limits.grace_ms {
            return Action::None;
        }
        self.request_soft(memory, now_ms)
    }

    /// The brake of a serving process that the limits left alone (see the module's notes).
    fn braking(&mut self, memory: u64, now_ms: u64, busy: u32, done: u64) -> Action {
        let Some(brake) = self.limits.brake else {
            return Action::None;
        };
        let pressured = self.pressured();
        if self.brake.off {
            if memory >= brake.resume_at || pressured {
                return Action::None;
            }
            self.brake.off = false;
        }
        if self.brake.paused_since.is_none() {
            if memory >= brake.pause_at || pressured {
                self.brake.paused_since = Some(now_ms);
                self.brake.busy_at_pause = busy;
                self.brake.memory_at_pause = memory;
                self.brake.reclaimed = false;
                self.brake.window = 0;
                return Action::Pause;
            }
            let finished = done > self.brake.done_seen;
            self.brake.done_seen = done;
            let room = memory < brake.resume_at
                || memory.saturating_add(self.brake.per_job) < brake.pause_at;
            if finished && room && !pressured && self.brake.window < brake.concurrency {
                self.brake.window += 1;
                return Action::Widen;
            }
            return Action::None;
        }
        self.brake.done_seen = done;
        if memory < brake.resume_at && !pressured {
            let window = (self.brake.busy_at_pause / 2).max(1);
            // A pause with no job running (memory the allocator keeps) says nothing of what a job needs.
            if self.brake.busy_at_pause > 0 {
                self.brake.per_job = self.brake.memory_at_pause.saturating_sub(memory)
                    / u64::from(self.brake.busy_at_pause);
            }
            return self.resume(ResumeCause::Below, window.min(brake.concurrency), now_ms);
        }
        if busy > 0 {
            return Action::None;
        }
        if !self.brake.reclaimed && self.limits.reclaim {
            self.brake.reclaimed = true;
            return self.reclaim(Reason::Brake, memory, now_ms);
        }
        self.brake.off = true;
        self.resume(ResumeCause::Retained, brake.concurrency, now_ms)
    }

    fn resume(&mut self, cause: ResumeCause, window: u32, now_ms: u64) -> Action {
        if let Some(since) = self.brake.paused_since.take() {
            self.brake.paused_ms += now_ms.saturating_sub(since);
        }
        self.brake.window = window;
        Action::Resume(cause)
    }

    fn quieting(&mut self, since_ms: u64, memory: u64, now_ms: u64, busy: u32) -> Action {
        let quiet_at = match self.quiet_at {
            Some(at) => at,
            None if now_ms.saturating_sub(since_ms) >= self.limits.quiet_timeout_ms => {
                self.quiet_at = Some(now_ms);
                return Action::QuietUnconfirmed;
            }
            None => return Action::None,
        };
        let quiet_for = now_ms.saturating_sub(quiet_at);
        if quiet_for < self.limits.settle_ms {
            return Action::None;
        }
        let cause = if busy == 0 {
            StopCause::Idle
        } else if self.over_hard(memory) {
            StopCause::HardLimit
        } else if quiet_for >= self.limits.shutdown_wait_ms {
            StopCause::Waited
        } else {
            return Action::None;
        };
        self.decision_memory = memory;
        if busy > 0 && self.limits.quarantine {
            self.phase = Phase::Quarantining { cause };
            return Action::Quarantine;
        }
        self.stop(cause, now_ms)
    }

    fn stop(&mut self, cause: StopCause, now_ms: u64) -> Action {
        self.phase = if self.limits.embedded {
            Phase::Done
        } else {
            Phase::Stopping { since_ms: now_ms }
        };
        Action::Stop(cause)
    }
}

#[cfg(test)]
mod tests;
