//! The guard's decisions, as a pure state machine: samples and fleet answers in, one action out.
//! Time is a monotonic millisecond count given by the caller, so tests replay any timeline.
//!
//! ```text
//! Serving --(over hard, or over soft for grace)--> [Reclaim] --> Reclaiming --(still over)--> WaitingSlot
//! Serving ----------------------------------------(no reclaim)--------------------------------> WaitingSlot
//! WaitingSlot --(slot granted)--> Quieting --(busy == 0 or shutdown_wait)--> Stopping --(kill_after)--> Done
//! WaitingSlot --(slot denied)---> Serving (asks again after retry_ms)
//! ```

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
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// Over the hard limit: acts at once.
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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    None,
    /// Run GC and purge the allocator, then report `Event::Reclaimed`.
    Reclaim,
    /// Ask the fleet for a restart slot, then report `SlotGranted` or `SlotDenied`.
    RequestRestart(Reason),
    /// Stop taking new jobs (TSTP to this process).
    Quiet,
    /// Stop (TERM to this process); Sidekiq requeues what still runs.
    Stop,
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
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Serving,
    Reclaiming,
    WaitingSlot(Reason),
    Quieting { since_ms: u64 },
    Stopping { since_ms: u64 },
    Done,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Serving => "serving",
            Phase::Reclaiming => "reclaiming",
            Phase::WaitingSlot(_) => "waiting_slot",
            Phase::Quieting { .. } => "quieting",
            Phase::Stopping { .. } => "stopping",
            Phase::Done => "done",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Policy {
    limits: Limits,
    phase: Phase,
    over_soft_since: Option<u64>,
    last_reclaim_ms: Option<u64>,
    next_request_ms: u64,
}

impl Policy {
    pub fn new(limits: Limits) -> Self {
        Policy {
            limits,
            phase: Phase::Serving,
            over_soft_since: None,
            last_reclaim_ms: None,
            next_request_ms: 0,
        }
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// Feeds one event and returns what the caller must do now.
    pub fn step(&mut self, event: Event) -> Action {
        match (self.phase, event) {
            (Phase::Serving, Event::Sample { memory, now_ms, .. }) => self.serving(memory, now_ms),
            (Phase::Reclaiming, Event::Reclaimed { memory, now_ms }) => {
                self.after_reclaim(memory, now_ms)
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
            (Phase::Quieting { since_ms }, Event::Sample { now_ms, busy, .. }) => {
                if busy == 0 || now_ms.saturating_sub(since_ms) >= self.limits.shutdown_wait_ms {
                    self.phase = Phase::Stopping { since_ms: now_ms };
                    Action::Stop
                } else {
                    Action::None
                }
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

    fn request(&mut self, reason: Reason, now_ms: u64) -> Action {
        if now_ms < self.next_request_ms {
            return Action::None;
        }
        self.phase = Phase::WaitingSlot(reason);
        Action::RequestRestart(reason)
    }

    fn serving(&mut self, memory: u64, now_ms: u64) -> Action {
        if self.limits.hard.is_some_and(|hard| memory >= hard) {
            return self.request(Reason::Hard, now_ms);
        }
        if memory < self.limits.soft {
            self.over_soft_since = None;
            return Action::None;
        }
        let since = *self.over_soft_since.get_or_insert(now_ms);
        if now_ms.saturating_sub(since) < self.limits.grace_ms {
            return Action::None;
        }
        let cooled_down = self
            .last_reclaim_ms
            .is_none_or(|last| now_ms.saturating_sub(last) >= self.limits.reclaim_cooldown_ms);
        if self.limits.reclaim && cooled_down {
            self.last_reclaim_ms = Some(now_ms);
            self.phase = Phase::Reclaiming;
            return Action::Reclaim;
        }
        self.request(Reason::Soft, now_ms)
    }

    fn after_reclaim(&mut self, memory: u64, now_ms: u64) -> Action {
        self.phase = Phase::Serving;
        if self.limits.hard.is_some_and(|hard| memory >= hard) {
            return self.request(Reason::Hard, now_ms);
        }
        if memory < self.limits.soft {
            self.over_soft_since = None;
            return Action::None;
        }
        self.request(Reason::Soft, now_ms)
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
        }
    }

    fn sample(memory: u64, now_ms: u64, busy: u32) -> Event {
        Event::Sample {
            memory,
            now_ms,
            busy,
        }
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
            p.step(Event::Reclaimed {
                memory: 590 * MB,
                now_ms: 10_100
            }),
            Action::RequestRestart(Reason::Soft)
        );
        assert_eq!(p.step(Event::SlotGranted { now_ms: 10_200 }), Action::Quiet);
        assert_eq!(p.step(sample(600 * MB, 11_000, 2)), Action::None);
        assert_eq!(p.step(sample(600 * MB, 12_000, 0)), Action::Stop);
        assert_eq!(p.step(sample(600 * MB, 20_000, 0)), Action::None);
        assert_eq!(p.step(sample(600 * MB, 52_000, 0)), Action::Kill);
        assert_eq!(p.phase(), Phase::Done);
        assert_eq!(p.step(sample(600 * MB, 99_000, 0)), Action::None);
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
        let back = Event::Reclaimed {
            memory: 300 * MB,
            now_ms: 10_050,
        };
        assert_eq!(p.step(back), Action::None);
        assert_eq!(p.phase(), Phase::Serving);
        // Over again within the cooldown: no second reclaim, a restart request after grace.
        p.step(sample(600 * MB, 20_000, 0));
        assert_eq!(
            p.step(sample(600 * MB, 30_000, 0)),
            Action::RequestRestart(Reason::Soft)
        );
    }

    #[test]
    fn hard_limit_acts_at_once_without_reclaim() {
        let mut p = Policy::new(limits());
        assert_eq!(
            p.step(sample(900 * MB, 0, 5)),
            Action::RequestRestart(Reason::Hard)
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
    fn quieting_stops_after_shutdown_wait_even_if_busy() {
        let mut p = Policy::new(limits());
        p.step(sample(900 * MB, 0, 3));
        p.step(Event::SlotGranted { now_ms: 0 });
        assert_eq!(p.step(sample(900 * MB, 29_999, 3)), Action::None);
        assert_eq!(p.step(sample(900 * MB, 30_000, 3)), Action::Stop);
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

    /// Invariants over many generated timelines: never stop before quiet; never quiet without a slot;
    /// the hard limit acts at once; the soft limit only after grace; reclaim at most once per cooldown.
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
            };
            let mut p = Policy::new(l);
            let mut now = 0u64;
            let mut quieted = false;
            let mut stopped = false;
            let mut granted = false;
            let mut over_soft_since: Option<u64> = None;
            let mut reclaims: Vec<u64> = Vec::new();
            for _ in 0..200 {
                now += rng.below(3_000);
                let phase_before = p.phase();
                let event = match (phase_before, rng.below(10)) {
                    (Phase::WaitingSlot(_), 0..=4) => Event::SlotGranted { now_ms: now },
                    (Phase::WaitingSlot(_), _) => Event::SlotDenied { now_ms: now },
                    (Phase::Reclaiming, _) => Event::Reclaimed {
                        memory: rng.below(1_000) * MB,
                        now_ms: now,
                    },
                    _ => Event::Sample {
                        memory: rng.below(1_100) * MB,
                        now_ms: now,
                        busy: rng.below(4) as u32,
                    },
                };
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
                    Action::Stop => {
                        assert!(quieted, "stop before quiet");
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
                        assert!(now - since >= l.grace_ms, "reclaim before grace");
                    }
                    Action::RequestRestart(Reason::Soft) => {
                        if let Event::Sample { .. } = event {
                            let since = over_soft_since.expect("soft restart under the limit");
                            assert!(now - since >= l.grace_ms, "soft restart before grace");
                        }
                    }
                    Action::RequestRestart(Reason::Hard) | Action::None => {}
                }
                // Hard limit at once: a serving process over it, not waiting out a denial, asks now.
                if let (Phase::Serving, Event::Sample { memory, .. }) = (phase_before, event) {
                    if l.hard.is_some_and(|h| memory >= h) && now >= p.next_request_ms {
                        assert_eq!(action, Action::RequestRestart(Reason::Hard));
                    }
                }
                if let Event::Reclaimed { memory, .. } = event {
                    if memory < l.soft && l.hard.is_none_or(|h| memory < h) {
                        over_soft_since = None;
                    }
                }
            }
        }
    }
}
