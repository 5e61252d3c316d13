//! The policy's timelines: hand-written ones and invariants over generated ones.

use super::*;
use crate::names::Named;

const MB: u64 = 1 << 20;

fn limits() -> Limits {
    Limits {
        soft: 500 * MB,
        hard: Some(800 * MB),
        grace_ms: 10_000,
        reclaim: true,
        reclaim_cooldown_ms: 60_000,
        check_interval_ms: 5_000,
        shutdown_wait_ms: 30_000,
        kill_after_ms: 40_000,
        settle_ms: 2_500,
        quiet_timeout_ms: 15_000,
        loop_window_ms: 0,
        replaced_restart: false,
        quarantine: false,
        embedded: false,
        brake: None,
    }
}

fn sample(memory: u64, now_ms: u64, busy: u32) -> Event {
    Event::Sample {
        memory,
        now_ms,
        busy,
        done: 0,
        pressure: 0,
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
    assert_eq!(
        p.step(sample(600 * MB, 10_000, 1)),
        Action::Reclaim(Reason::Soft)
    );
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
    assert_eq!(
        p.step(sample(637 * MB, 10_000, 1)),
        Action::Reclaim(Reason::Soft)
    );
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
    assert_eq!(
        p.step(sample(600 * MB, 22_000, 0)),
        Action::Reclaim(Reason::Soft)
    );
}

#[test]
fn reclaim_that_works_keeps_the_process() {
    let mut p = Policy::new(limits());
    p.step(sample(600 * MB, 0, 0));
    assert_eq!(
        p.step(sample(600 * MB, 10_000, 0)),
        Action::Reclaim(Reason::Soft)
    );
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
    assert_eq!(
        p.step(sample(900 * MB, 0, 5)),
        Action::Reclaim(Reason::Hard)
    );
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
    assert_eq!(
        p.step(sample(900 * MB, 0, 5)),
        Action::Reclaim(Reason::Hard)
    );
    assert_eq!(p.step(reclaimed(300 * MB, 50)), Action::None);
    assert_eq!(
        p.step(sample(900 * MB, 1_000, 5)),
        Action::RequestRestart(Reason::Hard)
    );
}

#[test]
fn a_hard_reclaim_that_lands_between_the_limits_leaves_the_soft_grace_running() {
    let mut p = Policy::new(limits());
    assert_eq!(
        p.step(sample(900 * MB, 0, 1)),
        Action::Reclaim(Reason::Hard)
    );
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
    assert_eq!(
        p.step(Event::SlotDenied {
            reason: Denial::NoSlot,
            now_ms: 10
        }),
        Action::None
    );
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
        replaced_restart: true,
        ..limits()
    };
    let mut p = Policy::new(l);
    p.step(sample(640 * MB, 20_000, 3));
    assert_eq!(
        p.step(sample(640 * MB, 30_000, 3)),
        Action::Reclaim(Reason::Soft)
    );
    // 13 MB of 640 MB back: the working set, not a leak.
    assert_eq!(p.step(reclaimed(627 * MB, 30_100)), Action::WarnLoop);
    assert_eq!(p.phase(), Phase::Serving);
    assert_eq!(p.decision_memory(), 627 * MB);
    // Reported once; no soft restart until the process is loop_window old (reclaim may still run).
    for t in (31_000..600_000).step_by(7_000) {
        match p.step(sample(640 * MB, t, 3)) {
            Action::Reclaim(_) => assert_eq!(p.step(reclaimed(600 * MB, t + 100)), Action::None),
            action => assert_eq!(action, Action::None, "at {t}"),
        }
    }
    let late = p.step(sample(640 * MB, 600_000, 3));
    assert!(matches!(
        late,
        Action::Reclaim(_) | Action::RequestRestart(Reason::Soft)
    ));
}

#[test]
fn the_hard_limit_is_never_held_back_by_the_loop_detection() {
    let mut p = Policy::new(Limits {
        loop_window_ms: 600_000,
        replaced_restart: true,
        ..limits()
    });
    p.step(sample(640 * MB, 0, 3));
    assert_eq!(
        p.step(sample(640 * MB, 10_000, 3)),
        Action::Reclaim(Reason::Soft)
    );
    assert_eq!(p.step(reclaimed(630 * MB, 10_100)), Action::WarnLoop);
    assert_eq!(
        p.step(sample(900 * MB, 11_000, 3)),
        Action::RequestRestart(Reason::Hard)
    );
}

#[test]
fn a_young_process_whose_reclaim_frees_much_is_no_loop() {
    let mut p = Policy::new(Limits {
        loop_window_ms: 600_000,
        replaced_restart: true,
        ..limits()
    });
    p.step(sample(700 * MB, 0, 3));
    assert_eq!(
        p.step(sample(700 * MB, 10_000, 3)),
        Action::Reclaim(Reason::Soft)
    );
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
            replaced_restart: true,
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
/// after grace; a limit reclaim at most once per cooldown; no soft restart inside the loop window after a loop
/// was seen; a quiet process over the hard limit stops as soon as the settle allows; a stop with jobs running
/// quarantines first (when on); embedded never kills. The brake: it pauses only at `pause_at`, reclaims only
/// paused and idle (once a pause), resumes below `resume_at` (or idle after its reclaim), never lets more
/// threads fetch than the concurrency, and holds nothing once the restart sequence runs.
#[test]
fn invariants_hold_over_generated_sequences() {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    for _case in 0..5_000 {
        let soft = (100 + rng.below(400)) * MB;
        let brake = if rng.below(2) == 0 {
            None
        } else {
            let pause_at = soft * (50 + rng.below(50)) / 100;
            Some(Brake {
                pause_at,
                resume_at: pause_at * (50 + rng.below(50)) / 100,
                concurrency: 1 + rng.below(25) as u32,
                slow_start: rng.below(2) == 0,
                pressure_at: if rng.below(2) == 0 {
                    0
                } else {
                    500 + rng.below(2_000) as u32
                },
            })
        };
        let l = Limits {
            soft,
            hard: if rng.below(3) == 0 {
                None
            } else {
                Some((600 + rng.below(400)) * MB)
            },
            grace_ms: rng.below(20_000),
            reclaim: rng.below(2) == 0,
            reclaim_cooldown_ms: rng.below(60_000),
            check_interval_ms: 1 + rng.below(10_000),
            shutdown_wait_ms: rng.below(30_000),
            kill_after_ms: rng.below(40_000),
            settle_ms: rng.below(5_000),
            quiet_timeout_ms: rng.below(20_000),
            replaced_restart: true,
            loop_window_ms: if rng.below(2) == 0 {
                0
            } else {
                rng.below(200_000)
            },
            quarantine: rng.below(2) == 0,
            embedded: rng.below(4) == 0,
            brake,
        };
        let mut p = Policy::new(l);
        let mut now = 0u64;
        let mut done = 0u64;
        let mut pressure = 0u32;
        let mut quieted = false;
        let mut stopped = false;
        let mut granted = false;
        let mut loop_seen = false;
        let mut quarantined = false;
        let mut over_soft_since: Option<u64> = None;
        let mut limit_reclaims: Vec<u64> = Vec::new();
        let mut any_reclaim: Option<u64> = None;
        let mut brake_reclaimed = false;
        for _ in 0..200 {
            now += rng.below(3_000);
            done += rng.below(3);
            let phase_before = p.phase();
            let paused_before = p.paused();
            let roll = rng.below(10);
            let sampling = !matches!(
                phase_before,
                Phase::WaitingSlot(_) | Phase::Reclaiming(_) | Phase::Quarantining { .. }
            );
            if roll == 1 && sampling {
                pressure = rng.below(4_000) as u32;
            }
            let event = match (phase_before, roll) {
                (Phase::WaitingSlot(_), 0..=4) => Event::SlotGranted { now_ms: now },
                (Phase::WaitingSlot(_), _) => Event::SlotDenied {
                    reason: Denial::all()[rng.below(5) as usize],
                    now_ms: now,
                },
                (Phase::Reclaiming(_), _) => Event::Reclaimed {
                    memory: rng.below(1_000) * MB,
                    now_ms: now,
                },
                (Phase::Quarantining { .. }, _) => {
                    quarantined = true;
                    Event::Quarantined { now_ms: now }
                }
                (Phase::Quieting { .. }, 0) => Event::Quieted { now_ms: now },
                _ => Event::Sample {
                    memory: rng.below(1_100) * MB,
                    now_ms: now,
                    busy: rng.below(4) as u32,
                    done,
                    pressure,
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
            if let (Event::Reclaimed { .. }, true) = (event, paused_before) {
                brake_reclaimed = true;
            }
            let action = p.step(event);
            assert!(
                action == Action::None || REACHABLE.contains(&action),
                "{action:?} returned but not in REACHABLE"
            );
            let (memory, busy) = match event {
                Event::Sample { memory, busy, .. } => (Some(memory), Some(busy)),
                Event::Reclaimed { memory, .. } => (Some(memory), None),
                _ => (None, None),
            };
            match action {
                Action::Quiet => {
                    assert!(granted, "quiet without a slot");
                    quieted = true;
                }
                Action::Quarantine => {
                    assert!(l.quarantine, "quarantine while it is off");
                    assert!(
                        busy.is_some_and(|b| b > 0),
                        "quarantine with no job running"
                    );
                }
                Action::Stop(cause) => {
                    assert!(quieted, "stop before quiet");
                    let at = p.quiet_at().expect("stop before quiet took effect");
                    assert!(now - at >= l.settle_ms, "stop within the settle");
                    if let Event::Sample { memory, busy, .. } = event {
                        assert!(
                            !(l.quarantine && busy > 0),
                            "stop with jobs running, not quarantined first"
                        );
                        match cause {
                            StopCause::HardLimit => assert!(over_hard(memory)),
                            StopCause::Idle => assert_eq!(busy, 0),
                            StopCause::Waited => assert!(now - at >= l.shutdown_wait_ms),
                        }
                    } else {
                        assert!(quarantined, "stop after something else than quarantine");
                    }
                    stopped = true;
                }
                Action::Kill => {
                    assert!(stopped, "kill before stop");
                    assert!(!l.embedded, "kill of an embedded Sidekiq");
                }
                Action::Reclaim(Reason::Brake) => {
                    assert!(paused_before, "brake reclaim while fetching");
                    assert_eq!(busy, Some(0), "brake reclaim with jobs running");
                    assert!(!brake_reclaimed, "two brake reclaims in one pause");
                    brake_reclaimed = true;
                    any_reclaim = Some(now);
                }
                Action::Reclaim(_) => {
                    if let Some(last) = any_reclaim {
                        assert!(
                            now - last >= l.reclaim_cooldown_ms,
                            "reclaim within cooldown"
                        );
                    }
                    limit_reclaims.push(now);
                    any_reclaim = Some(now);
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
                Action::WarnLoop => {
                    assert!(!loop_seen, "a loop reported twice");
                    assert!(now < l.loop_window_ms, "a loop outside the window");
                    loop_seen = true;
                }
                Action::Pause => {
                    let b = l.brake.expect("pause without a brake");
                    assert!(!paused_before, "paused twice");
                    assert!(
                        memory.is_some_and(|m| m >= b.pause_at) || p.pressured(),
                        "pause under pause_at and no pressure"
                    );
                    brake_reclaimed = false;
                }
                Action::Resume(cause) => {
                    let b = l.brake.expect("resume without a brake");
                    assert!(paused_before, "resume while fetching");
                    match cause {
                        ResumeCause::Below => {
                            let m = memory.expect("resume without a reading");
                            assert!(m < b.resume_at, "resume above resume_at");
                            assert!(!p.pressured(), "resume under pressure");
                        }
                        ResumeCause::Idle => {
                            let m = memory.expect("resume without a reading");
                            assert!(m < b.pause_at, "an idle resume at pause_at");
                            assert!(brake_reclaimed || !l.reclaim, "idle before reclaiming");
                        }
                        ResumeCause::Retained => {
                            if let Event::SlotDenied { reason, .. } = event {
                                assert!(reason.lasting(), "let go after a passing denial");
                            } else {
                                assert!(
                                    brake_reclaimed || !l.reclaim,
                                    "retained before reclaiming"
                                );
                                let young = l.replaced_restart && now < l.loop_window_ms;
                                assert!(
                                    p.pressured() || young,
                                    "let go with no pressure, denial nor restart loop"
                                );
                            }
                        }
                    }
                    assert!(p.window() >= 1, "resumed with no thread fetching");
                }
                Action::RequestRestart(Reason::Retained) => {
                    let b = l.brake.expect("a retained restart without a brake");
                    assert!(paused_before, "a retained restart while fetching");
                    let m = memory.expect("a retained restart without a reading");
                    assert!(m >= b.pause_at, "a retained restart under pause_at");
                    // Over the soft limit the soft path asks for it (reclaimed by its own rules).
                    assert!(
                        busy.is_none_or(|n| n == 0),
                        "a retained restart with jobs running"
                    );
                    assert!(
                        brake_reclaimed || !l.reclaim || m >= l.soft,
                        "a retained restart before the pause's reclaim"
                    );
                }
                Action::Widen => {
                    assert!(!paused_before, "widen while paused");
                }
                Action::RequestRestart(Reason::Brake) => panic!("a restart for the brake"),
                Action::RequestRestart(Reason::Hard) | Action::QuietUnconfirmed | Action::None => {}
            }
            if let Some(b) = l.brake {
                assert!(p.window() <= b.concurrency, "window above the concurrency");
                assert_eq!(p.paused(), p.window() == 0, "paused iff the window is 0");
            }
            // Hard limit at once: a serving process over it, not waiting out a denial, acts now.
            if let (Phase::Serving, Event::Sample { memory, .. }) = (phase_before, event) {
                if over_hard(memory) && now >= p.next_request_ms {
                    assert!(
                        matches!(
                            action,
                            Action::Reclaim(Reason::Hard) | Action::RequestRestart(Reason::Hard)
                        ),
                        "hard limit not acted on: {action:?}"
                    );
                }
            }
            // Over the hard limit while quiet, past the settle: stop now (or quarantine first).
            if let (Phase::Quieting { .. }, Event::Sample { memory, .. }) = (phase_before, event) {
                if over_hard(memory) && p.quiet_at().is_some_and(|at| now - at >= l.settle_ms) {
                    assert!(
                        matches!(action, Action::Stop(_) | Action::Quarantine),
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

#[test]
fn every_action_has_one_name() {
    let mut names: Vec<&str> = ACTIONS.iter().map(|(_, n)| *n).collect();
    let count = names.len();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), count);
    for (action, name) in ACTIONS {
        assert_eq!(action.name(), Some(name));
    }
    assert_eq!(Action::None.name(), None);
}

/// Every action the policy can return, but `Action::None`: what `ACTIONS` must name. The match in
/// `every_reachable_action_is_in_the_table_once` has no wildcard, so a new variant does not compile until it is
/// listed here (and in `ACTIONS`).
const REACHABLE: [Action; 19] = [
    Action::Reclaim(Reason::Soft),
    Action::Reclaim(Reason::Hard),
    Action::Reclaim(Reason::Brake),
    Action::RequestRestart(Reason::Soft),
    Action::RequestRestart(Reason::Hard),
    Action::RequestRestart(Reason::Retained),
    Action::WarnLoop,
    Action::Quiet,
    Action::QuietUnconfirmed,
    Action::Quarantine,
    Action::Stop(StopCause::Idle),
    Action::Stop(StopCause::Waited),
    Action::Stop(StopCause::HardLimit),
    Action::Kill,
    Action::Pause,
    Action::Resume(ResumeCause::Below),
    Action::Resume(ResumeCause::Idle),
    Action::Resume(ResumeCause::Retained),
    Action::Widen,
];

#[test]
fn every_reachable_action_is_in_the_table_once() {
    for action in REACHABLE {
        match action {
            Action::None => panic!("Action::None has no name"),
            Action::Reclaim(_)
            | Action::RequestRestart(_)
            | Action::WarnLoop
            | Action::Quiet
            | Action::QuietUnconfirmed
            | Action::Quarantine
            | Action::Stop(_)
            | Action::Kill
            | Action::Pause
            | Action::Resume(_)
            | Action::Widen => {}
        }
        let entries = ACTIONS.iter().filter(|(a, _)| *a == action).count();
        assert_eq!(entries, 1, "{action:?} is in ACTIONS {entries} times");
    }
    // Nothing else is in the table, and no name is given twice.
    assert_eq!(ACTIONS.len(), REACHABLE.len());
    for (action, _) in ACTIONS {
        assert!(
            REACHABLE.contains(&action),
            "{action:?} in ACTIONS but not reachable"
        );
    }
    let mut names: Vec<&str> = ACTIONS.iter().map(|(_, n)| *n).collect();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), ACTIONS.len(), "a name is given twice");
    assert_eq!(Action::Widen.name(), Some("widen"));
    // A restart is asked for the soft or the hard limit, never for the brake: that action has no name.
    assert_eq!(Action::RequestRestart(Reason::Brake).name(), None);
}

fn braked() -> Limits {
    Limits {
        brake: Some(Brake {
            pause_at: 450 * MB,
            resume_at: 400 * MB,
            concurrency: 5,
            slow_start: false,
            pressure_at: 0,
        }),
        ..limits()
    }
}

fn sample_done(memory: u64, now_ms: u64, busy: u32, done: u64) -> Event {
    sample_pressured(memory, now_ms, busy, done, 0)
}

fn sample_pressured(memory: u64, now_ms: u64, busy: u32, done: u64, pressure: u32) -> Event {
    Event::Sample {
        memory,
        now_ms,
        busy,
        done,
        pressure,
    }
}

#[test]
fn the_brake_pauses_reclaims_when_idle_and_resumes_with_half_the_window() {
    let mut p = Policy::new(braked());
    assert_eq!(p.window(), 5);
    assert_eq!(p.step(sample_done(440 * MB, 0, 5, 0)), Action::None);
    assert_eq!(p.step(sample_done(460 * MB, 100, 4, 1)), Action::Pause);
    assert!(p.paused());
    assert_eq!(p.window(), 0);
    // Running jobs go on; nothing happens until they are done.
    assert_eq!(p.step(sample_done(480 * MB, 1_000, 2, 3)), Action::None);
    assert_eq!(
        p.step(sample_done(480 * MB, 2_000, 0, 5)),
        Action::Reclaim(Reason::Brake)
    );
    assert_eq!(
        p.step(reclaimed(350 * MB, 2_100)),
        Action::Resume(ResumeCause::Below)
    );
    assert_eq!(p.window(), 2, "half of the 4 that ran at the pause");
    assert_eq!(p.paused_ms(5_000), 2_000);
    // A job of the mix needs (460 - 350) / 4 = 27.5 MB: one more thread for each sample that saw a job finish
    // while memory has room below pause_at (450 MB) for one more such job.
    assert_eq!(p.step(sample_done(360 * MB, 3_000, 2, 5)), Action::None);
    assert_eq!(p.step(sample_done(360 * MB, 3_100, 2, 6)), Action::Widen);
    assert_eq!(p.window(), 3);
    assert_eq!(
        p.step(sample_done(425 * MB, 3_200, 2, 7)),
        Action::None,
        "no room"
    );
    assert_eq!(p.step(sample_done(360 * MB, 3_300, 2, 8)), Action::Widen);
    assert_eq!(p.step(sample_done(360 * MB, 3_400, 2, 9)), Action::Widen);
    assert_eq!(p.window(), 5);
    assert_eq!(p.step(sample_done(360 * MB, 3_500, 2, 20)), Action::None);
}

#[test]
fn retained_at_pause_at_after_the_reclaim_asks_for_a_restart_and_stays_paused_until_granted() {
    let mut p = Policy::new(braked());
    assert_eq!(p.step(sample_done(460 * MB, 0, 1, 0)), Action::Pause);
    assert_eq!(
        p.step(sample_done(460 * MB, 500, 0, 1)),
        Action::Reclaim(Reason::Brake)
    );
    assert_eq!(
        p.step(reclaimed(455 * MB, 600)),
        Action::RequestRestart(Reason::Retained)
    );
    // No slot now: still paused, asked again after check_interval.
    assert_eq!(
        p.step(Event::SlotDenied {
            reason: Denial::NoSlot,
            now_ms: 700
        }),
        Action::None
    );
    assert!(p.paused());
    assert_eq!(p.step(sample_done(455 * MB, 1_000, 0, 1)), Action::None);
    assert_eq!(
        p.step(sample_done(455 * MB, 6_000, 0, 1)),
        Action::RequestRestart(Reason::Retained)
    );
    assert_eq!(p.step(Event::SlotGranted { now_ms: 6_100 }), Action::Quiet);
}

#[test]
fn retained_where_no_restart_can_be_had_lets_go_and_stays_off_until_below_resume() {
    let mut p = Policy::new(braked());
    assert_eq!(p.step(sample_done(460 * MB, 0, 1, 0)), Action::Pause);
    assert_eq!(
        p.step(sample_done(460 * MB, 500, 0, 1)),
        Action::Reclaim(Reason::Brake)
    );
    assert_eq!(
        p.step(reclaimed(455 * MB, 600)),
        Action::RequestRestart(Reason::Retained)
    );
    assert_eq!(
        p.step(Event::SlotDenied {
            reason: Denial::DryRun,
            now_ms: 700
        }),
        Action::Resume(ResumeCause::Retained)
    );
    assert_eq!(p.window(), 5);
    // Off: no pause while above resume_at.
    assert_eq!(p.step(sample_done(470 * MB, 1_000, 3, 2)), Action::None);
    assert_eq!(p.step(sample_done(390 * MB, 2_000, 3, 3)), Action::None);
    assert_eq!(p.step(sample_done(460 * MB, 3_000, 3, 4)), Action::Pause);
}

#[test]
fn retained_in_a_young_replacement_whose_reclaim_gave_little_lets_go_instead_of_restarting_in_a_loop(
) {
    let mut l = braked();
    l.replaced_restart = true;
    l.loop_window_ms = 600_000;
    let mut p = Policy::new(l);
    assert_eq!(p.step(sample_done(460 * MB, 0, 1, 0)), Action::Pause);
    assert_eq!(
        p.step(sample_done(460 * MB, 500, 0, 1)),
        Action::Reclaim(Reason::Brake)
    );
    assert_eq!(
        p.step(reclaimed(455 * MB, 600)),
        Action::Resume(ResumeCause::Retained)
    );
    // Past the loop window, a reclaim that gives little is no longer a loop: restart.
    let mut p = Policy::new(l);
    let late = l.loop_window_ms;
    assert_eq!(p.step(sample_done(460 * MB, late, 1, 0)), Action::Pause);
    assert_eq!(
        p.step(sample_done(460 * MB, late + 500, 0, 1)),
        Action::Reclaim(Reason::Brake)
    );
    assert_eq!(
        p.step(reclaimed(455 * MB, late + 600)),
        Action::RequestRestart(Reason::Retained)
    );
}

#[test]
fn idle_between_resume_at_and_pause_at_after_the_reclaim_fetches_again_with_a_small_window() {
    let mut p = Policy::new(braked());
    assert_eq!(p.step(sample_done(460 * MB, 0, 4, 0)), Action::Pause);
    assert_eq!(
        p.step(sample_done(460 * MB, 500, 0, 4)),
        Action::Reclaim(Reason::Brake)
    );
    assert_eq!(
        p.step(reclaimed(440 * MB, 600)),
        Action::Resume(ResumeCause::Idle)
    );
    assert_eq!(p.window(), 2, "half of the 4 that ran at the pause");
    // The brake stays on: it pauses again at pause_at.
    assert_eq!(p.step(sample_done(445 * MB, 1_000, 2, 5)), Action::None);
    assert_eq!(p.step(sample_done(452 * MB, 2_000, 2, 5)), Action::Pause);
}

#[test]
fn over_the_soft_limit_for_grace_while_braked_the_restart_path_runs() {
    let mut p = Policy::new(braked());
    assert_eq!(p.step(sample_done(460 * MB, 0, 3, 0)), Action::Pause);
    assert_eq!(p.step(sample_done(520 * MB, 1_000, 3, 0)), Action::None);
    assert_eq!(
        p.step(sample_done(520 * MB, 11_000, 3, 0)),
        Action::Reclaim(Reason::Soft)
    );
    assert_eq!(
        p.step(reclaimed(510 * MB, 11_100)),
        Action::RequestRestart(Reason::Soft)
    );
    // Denied: back to serving, still paused.
    assert_eq!(
        p.step(Event::SlotDenied {
            reason: Denial::SoleProcess,
            now_ms: 11_200
        }),
        Action::None
    );
    assert_eq!(p.last_denial(), Some(Denial::SoleProcess));
    assert!(p.paused());
    assert_eq!(p.step(sample_done(900 * MB, 12_000, 3, 0)), Action::None);
    assert_eq!(
        p.step(sample_done(900 * MB, 16_300, 3, 0)),
        Action::RequestRestart(Reason::Hard)
    );
}

#[test]
fn a_stop_with_jobs_running_quarantines_first_and_embedded_ends_at_the_stop() {
    let mut p = quieting_at(
        Limits {
            quarantine: true,
            embedded: true,
            ..limits()
        },
        0,
    );
    p.step(Event::Quieted { now_ms: 0 });
    assert_eq!(p.step(sample(900 * MB, 3_000, 2)), Action::Quarantine);
    assert_eq!(p.step(sample(900 * MB, 3_100, 2)), Action::None);
    assert_eq!(
        p.step(Event::Quarantined { now_ms: 3_200 }),
        Action::Stop(StopCause::HardLimit)
    );
    assert_eq!(p.phase(), Phase::Done);
    assert_eq!(p.step(sample(900 * MB, 90_000, 2)), Action::None);
}

#[test]
fn a_slow_start_fetches_with_one_thread_and_widens_as_jobs_finish() {
    let mut l = braked();
    if let Some(b) = l.brake.as_mut() {
        b.slow_start = true;
    }
    let mut p = Policy::new(l);
    assert_eq!(p.window(), 1);
    assert_eq!(p.step(sample_done(100 * MB, 0, 1, 0)), Action::None);
    assert_eq!(p.step(sample_done(100 * MB, 100, 1, 1)), Action::Widen);
    assert_eq!(p.window(), 2);
}

#[test]
fn pressure_pauses_below_brake_at_holds_the_resume_and_lets_go_when_idle() {
    let mut l = braked();
    if let Some(b) = l.brake.as_mut() {
        b.pressure_at = 2_000; // 20 %
    }
    let mut p = Policy::new(l);
    let at = sample_pressured;
    assert_eq!(p.step(at(300 * MB, 0, 3, 0, 1_500)), Action::None);
    assert_eq!(p.step(at(300 * MB, 100, 3, 0, 2_500)), Action::Pause);
    assert_eq!(
        p.step(at(300 * MB, 200, 1, 2, 2_500)),
        Action::None,
        "held by the pressure"
    );
    assert_eq!(
        p.step(at(300 * MB, 300, 1, 2, 500)),
        Action::Resume(ResumeCause::Below)
    );
    assert_eq!(p.step(at(300 * MB, 400, 1, 3, 3_000)), Action::Pause);
    assert_eq!(
        p.step(at(300 * MB, 500, 0, 4, 3_000)),
        Action::Reclaim(Reason::Brake)
    );
    assert_eq!(
        p.step(reclaimed(290 * MB, 600)),
        Action::Resume(ResumeCause::Retained)
    );
    // Off while the pressure lasts, on again once it is gone.
    assert_eq!(p.step(at(290 * MB, 700, 3, 5, 3_000)), Action::None);
    assert_eq!(p.step(at(290 * MB, 800, 3, 6, 0)), Action::None);
    assert_eq!(p.step(at(290 * MB, 900, 3, 7, 3_000)), Action::Pause);
}

#[test]
fn a_pause_with_no_job_running_does_not_shrink_what_a_job_is_thought_to_need() {
    // jemalloc keeps freed pages: the process passes pause_at idle. The reclaim brings it down; the window grows
    // again while memory is below resume_at, whatever the estimate.
    let mut p = Policy::new(braked());
    assert_eq!(p.step(sample_done(460 * MB, 0, 0, 0)), Action::Pause);
    assert_eq!(
        p.step(sample_done(460 * MB, 100, 0, 0)),
        Action::Reclaim(Reason::Brake)
    );
    assert_eq!(
        p.step(reclaimed(150 * MB, 200)),
        Action::Resume(ResumeCause::Below)
    );
    assert_eq!(p.window(), 1);
    assert_eq!(p.step(sample_done(300 * MB, 300, 1, 1)), Action::Widen);
    assert_eq!(p.step(sample_done(390 * MB, 400, 2, 2)), Action::Widen);
    assert_eq!(p.window(), 3);
}

#[test]
fn over_the_soft_limit_paused_and_idle_the_restart_is_for_retained_memory() {
    let mut p = Policy::new(braked());
    assert_eq!(p.step(sample_done(520 * MB, 0, 2, 0)), Action::Pause);
    // Within the grace time the brake's reclaim runs and the retained memory asks for the restart.
    assert_eq!(
        p.step(sample_done(520 * MB, 5_000, 0, 2)),
        Action::Reclaim(Reason::Brake)
    );
    assert_eq!(
        p.step(reclaimed(510 * MB, 5_100)),
        Action::RequestRestart(Reason::Retained)
    );
    // Refused for now (no slot); past the grace time the soft path asks again, for retained memory too.
    assert_eq!(
        p.step(Event::SlotDenied {
            reason: Denial::NoSlot,
            now_ms: 5_200
        }),
        Action::None
    );
    assert_eq!(
        p.step(sample_done(520 * MB, 11_000, 0, 2)),
        Action::RequestRestart(Reason::Retained)
    );
}
