//! The guard's decisions, as a pure state machine: samples and fleet answers in, one action out.
//! Time is a monotonic millisecond count given by the caller, counted from the process's start (the guard is
//! made at Sidekiq's boot), so tests replay any timeline and `now_ms` is also the process's uptime.
//!
//! ```text
//! Serving --(over hard, or over soft for grace)--> [Reclaim] --> Reclaiming --(still over)--> WaitingSlot
//! Serving ----------------------------------------(no reclaim)--------------------------------> WaitingSlot
//! WaitingSlot --(slot granted)--> Quieting --(quiet took effect + settle, then busy == 0, shutdown_wait
//!                                             or over hard)--> Stopping --(kill_after)--> Done
//! WaitingSlot --(slot denied)---> Serving (asks again after retry_ms)
//! ```
//!
//! Quiet is measured from Sidekiq's own `:quiet` event (`Event::Quieted`), not from the signal: under load the
//! signal may be handled seconds later. Without the event for `quiet_timeout_ms`, the policy says so
//! (`Action::QuietUnconfirmed`) and counts the settle from then.
//!
//! A soft-limit restart sooner than `loop_window_ms` after boot, when reclaim gave back less than
//! `LOOP_RECLAIM_PERCENT` of the memory, is a restart loop: the limit is below the working set and a restart
//! would rebuild it. The policy reports it once (`Action::RestartLoop`) and makes no soft restart until the
//! process is `loop_window_ms` old. The hard limit is never held back.

/// Reclaim that gives back less than this share (percent) of the memory counts as "little" for the
/// restart-loop detection.
pub const LOOP_RECLAIM_PERCENT: u64 = 10;

/// Limits and timings, all in bytes and milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub soft: u64,
    pub hard: Option<u64>,
    pub grace_ms: u64,
    pub reclaim: bool,
    pub reclaim_cooldown_ms: u64,
    pub retry_ms: u64,
    pub shutdown_wait_ms: u64,
    pub kill_after_ms: u64,
    /// After quiet took effect, never stop sooner than this (idle fetchers leave their blocking fetch).
    pub settle_ms: u64,
    /// How long after `Quiet` Sidekiq's `:quiet` event may take before the policy stops waiting for it.
    pub quiet_timeout_ms: u64,
    /// Soft restarts this soon after boot are checked for a restart loop; 0 turns the detection off.
    pub loop_window_ms: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// Over the hard limit (after a reclaim, when on, that did not bring it under).
    Hard,
    /// Over the soft limit for longer than the grace time (and, with reclaim, still over after it).
    Soft,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Hard => "hard_limit",
            Reason::Soft => "soft_limit",
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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    None,
    /// Run GC and purge the allocator, then report `Event::Reclaimed`.
    Reclaim,
    /// Ask the fleet for a restart slot, then report `SlotGranted` or `SlotDenied`.
    RequestRestart(Reason),
    /// The soft limit is below the working set (see the module's notes): warn; no restart.
    RestartLoop,
    /// Stop taking new jobs (TSTP to this process).
    Quiet,
    /// Sidekiq's `:quiet` event did not come within `quiet_timeout_ms`: warn; the settle counts from now.
    QuietUnconfirmed,
    /// Stop (TERM to this process); Sidekiq requeues what still runs.
    Stop(StopCause),
    /// The process hung after TERM: KILL.
    Kill,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// A memory reading, with the number of jobs this process runs right now.
    Sample {
        memory: u64,
        now_ms: u64,
        busy: u32,
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
        now_ms: u64,
    },
    /// Sidekiq reported that quiet took effect (its `:quiet` event), whoever asked for it.
    Quieted {
        now_ms: u64,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Serving,
    Reclaiming(Reason),
    WaitingSlot(Reason),
    Quieting { since_ms: u64 },
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
            Phase::Stopping { .. } => "stopping",
            Phase::Done => "done",
        }
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

    /// Feeds one event and returns what the caller must do now.
    pub fn step(&mut self, event: Event) -> Action {
        match (self.phase, event) {
            (_, Event::Quieted { now_ms }) => {
                self.quiet_at.get_or_insert(now_ms);
                Action::None
            }
            (Phase::Serving, Event::Sample { memory, now_ms, .. }) => self.serving(memory, now_ms),
            (Phase::Reclaiming(reason), Event::Reclaimed { memory, now_ms }) => {
                self.after_reclaim(reason, memory, now_ms)
            }
            (Phase::WaitingSlot(_), Event::SlotGranted { now_ms }) => {
                self.phase = Phase::Quieting { since_ms: now_ms };
                Action::Quiet
            }
            (Phase::WaitingSlot(_), Event::SlotDenied { now_ms }) => {
                self.phase = Phase::Serving;
                self.next_request_ms = now_ms.saturating_add(self.limits.retry_ms);
                Action::None
            }
            (
                Phase::Quieting { since_ms },
                Event::Sample {
                    memory,
                    now_ms,
                    busy,
                },
            ) => self.quieting(since_ms, memory, now_ms, busy),
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
        Action::Reclaim
    }

    fn may_reclaim(&self, now_ms: u64) -> bool {
        self.limits.reclaim
            && self
                .last_reclaim_ms
                .is_none_or(|last| now_ms.saturating_sub(last) >= self.limits.reclaim_cooldown_ms)
    }

    /// Over the soft limit for the grace time, reclaimed or not: restart, unless it is a restart loop.
    fn request_soft(&mut self, memory: u64, now_ms: u64) -> Action {
        let young = now_ms < self.limits.loop_window_ms;
        if young && self.loop_reported {
            return Action::None; // backing off until the window ends
        }
        let reclaim_little = self.last_reclaim.is_none_or(ReclaimResult::little);
        if young && reclaim_little {
            self.loop_reported = true;
            self.decision_memory = memory;
            return Action::RestartLoop;
        }
        self.request(Reason::Soft, memory, now_ms)
    }

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
        if reason == Reason::Hard && now_ms.saturating_sub(since) < self.limits.grace_ms {
            return Action::None;
        }
        self.request_soft(memory, now_ms)
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
        self.phase = Phase::Stopping { since_ms: now_ms };
        Action::Stop(cause)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MB: u64 = 1 << 20;

    fn limits() -> Limits {
        Limits {
            soft: 500 * MB,
            hard: Some(800 * MB),
            grace_ms: 10_000,
            reclaim: true,
            reclaim_cooldown_ms: 60_000,
            retry_ms: 5_000,
            shutdown_wait_ms: 30_000,
            kill_after_ms: 40_000,
            settle_ms: 2_500,
            quiet_timeout_ms: 15_000,
            loop_window_ms: 0,
        }
    }

    fn sample(memory: u64, now_ms: u64, busy: u32) -> Event {
        Event::Sample {
            memory,
            now_ms,
            busy,
        }
    }

    fn reclaimed(memory: u64, now_ms: u64) -> Event {
        Event::Reclaimed { memory, now_ms }
    }

    /// A policy that has been granted a slot at `at` (hard limit, no reclaim).
    fn quieting_at(l: Limits, at: u64) -> Policy {
        let mut p = Policy::new(Limits {
            reclaim: false,
            ..l
        });
        assert_eq!(
            p.step(sample(900 * MB, at, 3)),
            Action::RequestRestart(Reason::Hard)
        );
        assert_eq!(p.step(Event::SlotGranted { now_ms: at }), Action::Quiet);
        p
    }

    #[test]
    fn under_the_limit_nothing_happens() {
        let mut p = Policy::new(limits());
        for t in 0..100 {
            assert_eq!(p.step(sample(400 * MB, t * 1000, 3)), Action::None);
        }
        assert_eq!(p.phase(), Phase::Serving);
    }

    #[test]
    fn soft_limit_waits_for_grace_then_reclaims_then_restarts() {
        let mut p = Policy::new(limits());
        assert_eq!(p.step(sample(600 * MB, 0, 1)), Action::None);
        assert_eq!(p.step(sample(600 * MB, 9_999, 1)), Action::None);
        assert_eq!(p.step(sample(600 * MB, 10_000, 1)), Action::Reclaim);
        assert_eq!(
            p.step(reclaimed(590 * MB, 10_100)),
            Action::RequestRestart(Reason::Soft)
        );
        assert_eq!(p.step(Event::SlotGranted { now_ms: 10_200 }), Action::Quiet);
        assert_eq!(p.step(sample(600 * MB, 11_000, 2)), Action::None);
        p.step(Event::Quieted { now_ms: 11_500 });
        // Idle at once, but never sooner than the settle after quiet took effect.
        assert_eq!(p.step(sample(600 * MB, 12_000, 0)), Action::None);
        assert_eq!(
            p.step(sample(600 * MB, 14_000, 0)),
            Action::Stop(StopCause::Idle)
        );
        assert_eq!(p.step(sample(600 * MB, 20_000, 0)), Action::None);
        assert_eq!(p.step(sample(600 * MB, 54_000, 0)), Action::Kill);
        assert_eq!(p.phase(), Phase::Done);
        assert_eq!(p.step(sample(600 * MB, 99_000, 0)), Action::None);
    }

    #[test]
    fn the_restart_is_decided_on_the_reading_after_reclaim() {
        let mut p = Policy::new(limits());
        p.step(sample(637 * MB, 0, 1));
        assert_eq!(p.step(sample(637 * MB, 10_000, 1)), Action::Reclaim);
        assert_eq!(p.decision_memory(), 637 * MB);
        assert_eq!(
            p.step(reclaimed(582 * MB, 10_100)),
            Action::RequestRestart(Reason::Soft)
        );
        assert_eq!(p.decision_memory(), 582 * MB);
        assert_eq!(
            p.last_reclaim(),
            Some(ReclaimResult {
                before: 637 * MB,
                after: 582 * MB
            })
        );
    }

    #[test]
    fn a_dip_under_the_soft_limit_restarts_the_grace() {
        let mut p = Policy::new(limits());
        p.step(sample(600 * MB, 0, 0));
        p.step(sample(400 * MB, 5_000, 0));
        assert_eq!(p.step(sample(600 * MB, 12_000, 0)), Action::None);
        assert_eq!(p.step(sample(600 * MB, 22_000, 0)), Action::Reclaim);
    }

    #[test]
    fn reclaim_that_works_keeps_the_process() {
        let mut p = Policy::new(limits());
        p.step(sample(600 * MB, 0, 0));
        assert_eq!(p.step(sample(600 * MB, 10_000, 0)), Action::Reclaim);
        assert_eq!(p.step(reclaimed(300 * MB, 10_050)), Action::None);
        assert_eq!(p.phase(), Phase::Serving);
        // Over again within the cooldown: no second reclaim, a restart request after grace.
        p.step(sample(600 * MB, 20_000, 0));
        assert_eq!(
            p.step(sample(600 * MB, 30_000, 0)),
            Action::RequestRestart(Reason::Soft)
        );
    }

    #[test]
    fn hard_limit_reclaims_at_once_then_restarts_if_still_over() {
        let mut p = Policy::new(limits());
        assert_eq!(p.step(sample(900 * MB, 0, 5)), Action::Reclaim);
        assert_eq!(
            p.step(reclaimed(850 * MB, 80)),
            Action::RequestRestart(Reason::Hard)
        );
        assert_eq!(p.decision_memory(), 850 * MB);
    }

    #[test]
    fn hard_limit_without_reclaim_or_within_cooldown_restarts_at_once() {
        let mut p = Policy::new(Limits {
            reclaim: false,
            ..limits()
        });
        assert_eq!(
            p.step(sample(900 * MB, 0, 5)),
            Action::RequestRestart(Reason::Hard)
        );
        let mut p = Policy::new(limits());
        assert_eq!(p.step(sample(900 * MB, 0, 5)), Action::Reclaim);
        assert_eq!(p.step(reclaimed(300 * MB, 50)), Action::None);
        assert_eq!(
            p.step(sample(900 * MB, 1_000, 5)),
            Action::RequestRestart(Reason::Hard)
        );
    }

    #[test]
    fn a_hard_reclaim_that_lands_between_the_limits_leaves_the_soft_grace_running() {
        let mut p = Policy::new(limits());
        assert_eq!(p.step(sample(900 * MB, 0, 1)), Action::Reclaim);
        assert_eq!(p.step(reclaimed(600 * MB, 100)), Action::None);
        assert_eq!(p.step(sample(600 * MB, 5_000, 1)), Action::None);
        // Grace over; the reclaim is within its cooldown: restart for the soft limit.
        assert_eq!(
            p.step(sample(600 * MB, 10_000, 1)),
            Action::RequestRestart(Reason::Soft)
        );
    }

    #[test]
    fn a_denied_slot_is_asked_again_after_retry() {
        let mut p = Policy::new(Limits {
            reclaim: false,
            ..limits()
        });
        assert_eq!(
            p.step(sample(900 * MB, 0, 0)),
            Action::RequestRestart(Reason::Hard)
        );
        assert_eq!(p.step(Event::SlotDenied { now_ms: 10 }), Action::None);
        assert_eq!(p.step(sample(900 * MB, 1_000, 0)), Action::None);
        assert_eq!(
            p.step(sample(900 * MB, 5_010, 0)),
            Action::RequestRestart(Reason::Hard)
        );
    }

    #[test]
    fn quieting_stops_after_shutdown_wait_from_quiet_even_if_busy() {
        let mut p = quieting_at(limits(), 0);
        p.step(Event::Quieted { now_ms: 1_000 });
        assert_eq!(p.step(sample(700 * MB, 30_999, 3)), Action::None);
        assert_eq!(
            p.step(sample(700 * MB, 31_000, 3)),
            Action::Stop(StopCause::Waited)
        );
    }

    #[test]
    fn a_late_quiet_delays_the_stop_by_the_settle_from_the_event() {
        // Sidekiq handled TSTP 2.75 s late: the old fixed 2.5 s from the signal would have stopped too soon.
        let mut p = quieting_at(limits(), 0);
        for t in (0..=2_750).step_by(250) {
            assert_eq!(p.step(sample(700 * MB, t, 0)), Action::None, "at {t}");
        }
        p.step(Event::Quieted { now_ms: 2_750 });
        assert_eq!(p.quiet_at(), Some(2_750));
        assert_eq!(p.step(sample(700 * MB, 5_000, 0)), Action::None);
        assert_eq!(
            p.step(sample(700 * MB, 5_250, 0)),
            Action::Stop(StopCause::Idle)
        );
    }

    #[test]
    fn no_quiet_event_is_reported_and_the_settle_counts_from_then() {
        let mut p = quieting_at(limits(), 0);
        assert_eq!(p.step(sample(700 * MB, 14_999, 0)), Action::None);
        assert_eq!(
            p.step(sample(700 * MB, 15_000, 0)),
            Action::QuietUnconfirmed
        );
        assert_eq!(p.step(sample(700 * MB, 17_000, 0)), Action::None);
        assert_eq!(
            p.step(sample(700 * MB, 17_500, 0)),
            Action::Stop(StopCause::Idle)
        );
    }

    #[test]
    fn a_quiet_that_came_before_the_restart_counts() {
        let mut p = Policy::new(Limits {
            reclaim: false,
            ..limits()
        });
        p.step(Event::Quieted { now_ms: 100 });
        p.step(sample(900 * MB, 10_000, 1));
        assert_eq!(p.step(Event::SlotGranted { now_ms: 10_000 }), Action::Quiet);
        assert_eq!(
            p.step(sample(700 * MB, 10_250, 0)),
            Action::Stop(StopCause::Idle)
        );
    }

    #[test]
    fn over_the_hard_limit_while_quiet_stops_at_once_after_the_settle() {
        let mut p = quieting_at(limits(), 0);
        p.step(Event::Quieted { now_ms: 500 });
        assert_eq!(p.step(sample(1_000 * MB, 2_000, 3)), Action::None);
        assert_eq!(
            p.step(sample(1_000 * MB, 3_000, 3)),
            Action::Stop(StopCause::HardLimit)
        );
        assert_eq!(p.decision_memory(), 1_000 * MB);
    }

    #[test]
    fn a_soft_restart_soon_after_boot_with_little_reclaimed_is_a_loop() {
        let l = Limits {
            loop_window_ms: 600_000,
            ..limits()
        };
        let mut p = Policy::new(l);
        p.step(sample(640 * MB, 20_000, 3));
        assert_eq!(p.step(sample(640 * MB, 30_000, 3)), Action::Reclaim);
        // 13 MB of 640 MB back: the working set, not a leak.
        assert_eq!(p.step(reclaimed(627 * MB, 30_100)), Action::RestartLoop);
        assert_eq!(p.phase(), Phase::Serving);
        assert_eq!(p.decision_memory(), 627 * MB);
        // Reported once; no soft restart until the process is loop_window old (reclaim may still run).
        for t in (31_000..600_000).step_by(7_000) {
            match p.step(sample(640 * MB, t, 3)) {
                Action::Reclaim => assert_eq!(p.step(reclaimed(600 * MB, t + 100)), Action::None),
                action => assert_eq!(action, Action::None, "at {t}"),
            }
        }
        let late = p.step(sample(640 * MB, 600_000, 3));
        assert!(matches!(
            late,
            Action::Reclaim | Action::RequestRestart(Reason::Soft)
        ));
    }

    #[test]
    fn the_hard_limit_is_never_held_back_by_the_loop_detection() {
        let mut p = Policy::new(Limits {
            loop_window_ms: 600_000,
            ..limits()
        });
        p.step(sample(640 * MB, 0, 3));
        assert_eq!(p.step(sample(640 * MB, 10_000, 3)), Action::Reclaim);
        assert_eq!(p.step(reclaimed(630 * MB, 10_100)), Action::RestartLoop);
        assert_eq!(
            p.step(sample(900 * MB, 11_000, 3)),
            Action::RequestRestart(Reason::Hard)
        );
    }

    #[test]
    fn a_young_process_whose_reclaim_frees_much_is_no_loop() {
        let mut p = Policy::new(Limits {
            loop_window_ms: 600_000,
            ..limits()
        });
        p.step(sample(700 * MB, 0, 3));
        assert_eq!(p.step(sample(700 * MB, 10_000, 3)), Action::Reclaim);
        assert_eq!(
            p.step(reclaimed(550 * MB, 10_100)),
            Action::RequestRestart(Reason::Soft)
        );
    }

    #[test]
    fn an_old_process_restarts_normally_and_zero_turns_detection_off() {
        for (window, start) in [(600_000, 700_000), (0, 0)] {
            let mut p = Policy::new(Limits {
                loop_window_ms: window,
                reclaim: false,
                ..limits()
            });
            p.step(sample(640 * MB, start, 3));
            assert_eq!(
                p.step(sample(640 * MB, start + 10_000, 3)),
                Action::RequestRestart(Reason::Soft)
            );
        }
    }

    /// A small deterministic generator (xorshift64*), so the property test needs no crate.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    /// Invariants over many generated timelines: never stop before quiet took effect plus the settle; never
    /// quiet without a slot; the hard limit acts at once (reclaim or restart request); the soft limit only
    /// after grace; reclaim at most once per cooldown; no soft restart inside the loop window after a loop
    /// was seen; a quiet process over the hard limit stops as soon as the settle allows.
    #[test]
    fn invariants_hold_over_generated_sequences() {
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        for _case in 0..3_000 {
            let l = Limits {
                soft: (100 + rng.below(400)) * MB,
                hard: if rng.below(3) == 0 {
                    None
                } else {
                    Some((600 + rng.below(400)) * MB)
                },
                grace_ms: rng.below(20_000),
                reclaim: rng.below(2) == 0,
                reclaim_cooldown_ms: rng.below(60_000),
                retry_ms: 1 + rng.below(10_000),
                shutdown_wait_ms: rng.below(30_000),
                kill_after_ms: rng.below(40_000),
                settle_ms: rng.below(5_000),
                quiet_timeout_ms: rng.below(20_000),
                loop_window_ms: if rng.below(2) == 0 {
                    0
                } else {
                    rng.below(200_000)
                },
            };
            let mut p = Policy::new(l);
            let mut now = 0u64;
            let mut quieted = false;
            let mut stopped = false;
            let mut granted = false;
            let mut loop_seen = false;
            let mut over_soft_since: Option<u64> = None;
            let mut reclaims: Vec<u64> = Vec::new();
            for _ in 0..200 {
                now += rng.below(3_000);
                let phase_before = p.phase();
                let event = match (phase_before, rng.below(10)) {
                    (Phase::WaitingSlot(_), 0..=4) => Event::SlotGranted { now_ms: now },
                    (Phase::WaitingSlot(_), _) => Event::SlotDenied { now_ms: now },
                    (Phase::Reclaiming(_), _) => Event::Reclaimed {
                        memory: rng.below(1_000) * MB,
                        now_ms: now,
                    },
                    (Phase::Quieting { .. }, 0) => Event::Quieted { now_ms: now },
                    _ => Event::Sample {
                        memory: rng.below(1_100) * MB,
                        now_ms: now,
                        busy: rng.below(4) as u32,
                    },
                };
                let over_hard = |m: u64| l.hard.is_some_and(|h| m >= h);
                if let Event::Sample { memory, .. } = event {
                    if phase_before == Phase::Serving {
                        if memory >= l.soft {
                            over_soft_since.get_or_insert(now);
                        } else {
                            over_soft_since = None;
                        }
                    }
                }
                if let Event::SlotGranted { .. } = event {
                    granted = true;
                }
                let action = p.step(event);
                match action {
                    Action::Quiet => {
                        assert!(granted, "quiet without a slot");
                        quieted = true;
                    }
                    Action::Stop(cause) => {
                        assert!(quieted, "stop before quiet");
                        let at = p.quiet_at().expect("stop before quiet took effect");
                        assert!(now - at >= l.settle_ms, "stop within the settle");
                        if let Event::Sample { memory, busy, .. } = event {
                            match cause {
                                StopCause::HardLimit => assert!(over_hard(memory)),
                                StopCause::Idle => assert_eq!(busy, 0),
                                StopCause::Waited => assert!(now - at >= l.shutdown_wait_ms),
                            }
                        }
                        stopped = true;
                    }
                    Action::Kill => assert!(stopped, "kill before stop"),
                    Action::Reclaim => {
                        if let Some(last) = reclaims.last() {
                            assert!(
                                now - last >= l.reclaim_cooldown_ms,
                                "reclaim within cooldown"
                            );
                        }
                        reclaims.push(now);
                        let since = over_soft_since.expect("reclaim while under the soft limit");
                        if let Event::Sample { memory, .. } = event {
                            if !over_hard(memory) {
                                assert!(now - since >= l.grace_ms, "soft reclaim before grace");
                            }
                        }
                    }
                    Action::RequestRestart(Reason::Soft) => {
                        assert!(
                            !(loop_seen && now < l.loop_window_ms),
                            "soft restart inside the loop window"
                        );
                        if let Event::Sample { .. } = event {
                            let since = over_soft_since.expect("soft restart under the limit");
                            assert!(now - since >= l.grace_ms, "soft restart before grace");
                        }
                    }
                    Action::RestartLoop => {
                        assert!(!loop_seen, "a loop reported twice");
                        assert!(now < l.loop_window_ms, "a loop outside the window");
                        loop_seen = true;
                    }
                    Action::RequestRestart(Reason::Hard)
                    | Action::QuietUnconfirmed
                    | Action::None => {}
                }
                // Hard limit at once: a serving process over it, not waiting out a denial, acts now.
                if let (Phase::Serving, Event::Sample { memory, .. }) = (phase_before, event) {
                    if over_hard(memory) && now >= p.next_request_ms {
                        assert!(
                            matches!(
                                action,
                                Action::Reclaim | Action::RequestRestart(Reason::Hard)
                            ),
                            "hard limit not acted on: {action:?}"
                        );
                    }
                }
                // Over the hard limit while quiet, past the settle: stop now.
                if let (Phase::Quieting { .. }, Event::Sample { memory, .. }) =
                    (phase_before, event)
                {
                    if over_hard(memory) && p.quiet_at().is_some_and(|at| now - at >= l.settle_ms) {
                        assert!(
                            matches!(action, Action::Stop(_)),
                            "quiet over hard not stopped: {action:?}"
                        );
                    }
                }
                if let Event::Reclaimed { memory, .. } = event {
                    if memory < l.soft {
                        over_soft_since = None;
                    } else {
                        over_soft_since.get_or_insert(now);
                    }
                }
            }
        }
    }
}
