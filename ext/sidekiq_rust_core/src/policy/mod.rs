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
//! memory at the resume) / jobs running at the pause) (`Widen`), back to the concurrency: a congestion window, so
//! that the jobs that pushed memory up do not all start again at once (a process that replaced a memory restart
//! starts with a window of 1: `slow_start`). Idle after a reclaim and still at `pause_at`, the pause cannot help
//! (the memory is retained, not in flight): it asks for a restart (`RequestRestart(Retained)`: a paused process
//! serves nothing, so a sole process restarts too) and stays paused until it is granted; where no restart can
//! ever be had (a dry run, an embedded Sidekiq without its instance) it lets go (`Resume(Retained)`) and stays off
//! until memory is below `resume_at` again. Idle after a reclaim between `resume_at` and `pause_at`, it fetches
//! again with half the jobs that ran at the pause (`Resume(Idle)`) and stays on. Over the soft limit
//! for `grace_ms` or at the hard limit, the restart path runs as without the brake. Memory pressure (PSI) at
//! `pressure_at` pauses it too, whatever the memory figure, and holds the resume; idle after its reclaim and still
//! pressured, it lets go as for retained memory (the pressure is not this process's to relieve).

mod actions;
mod brake;
mod limits;
mod restart;

pub use actions::{Action, Denial, Event, Reason, ResumeCause, StopCause, ACTIONS};
pub use limits::{Bounds, Brake, Limits};
pub use restart::{OverSoft, Phase, ReclaimResult, LOOP_RECLAIM_PERCENT};

use brake::BrakeState;

#[derive(Debug, Clone)]
pub struct Policy {
    limits: Limits,
    phase: Phase,
    over_soft_since: Option<u64>,
    /// Memory passed the soft limit and nobody was told yet (`take_over_soft`): the reading that passed it.
    over_soft_untold: Option<u64>,
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
            over_soft_untold: None,
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

    /// Moves the bounds (a memory cgroup's limit changed under limits given as shares of it): the next reading
    /// is judged by them. A crossing already under way keeps its start (its grace time runs on); memory under
    /// the new soft limit ends it at the next reading.
    pub fn set_bounds(&mut self, bounds: Bounds) {
        self.limits.soft = bounds.soft;
        self.limits.hard = bounds.hard;
        if let (Some(brake), Some((pause_at, resume_at))) =
            (self.limits.brake.as_mut(), bounds.brake)
        {
            brake.pause_at = pause_at;
            brake.resume_at = resume_at;
        }
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

    /// Once per crossing of the soft limit (memory went under it since, or never was over): what the policy
    /// will do about it. None when memory is not over it, or the crossing was told already.
    pub fn take_over_soft(&mut self, now_ms: u64) -> Option<OverSoft> {
        let memory = self.over_soft_untold.take()?;
        let since = self.over_soft_since?;
        Some(OverSoft {
            memory,
            grace_left_ms: (since + self.limits.grace_ms).saturating_sub(now_ms),
        })
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
            (Phase::WaitingSlot(asked), Event::SlotDenied { reason, now_ms }) => {
                self.last_denial = Some(reason);
                self.phase = Phase::Serving;
                self.next_request_ms = now_ms.saturating_add(self.limits.check_interval_ms);
                // Retained memory with no restart to be had, ever: held paused, the process would serve nothing.
                if asked == Reason::Retained && reason.lasting() && self.paused() {
                    return self.let_go(now_ms);
                }
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
}

#[cfg(test)]
mod tests;
