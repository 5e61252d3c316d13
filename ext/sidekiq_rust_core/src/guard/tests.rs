use super::*;
use crate::admission::{Decision, RECLAIM_EVERY_NS};
use crate::policy::{Brake, Limits, StopCause};
use crate::settings::Follow;

const MB: u64 = 1 << 20;
const MS: u64 = 1_000_000;
const S: u64 = 1_000 * MS;

fn settings() -> GuardSettings {
    GuardSettings {
        limits: Limits {
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
            loop_window_ms: 600_000,
            replaced_restart: false,
            quarantine: false,
            embedded: false,
            brake: None,
        },
        metric: Metric::Rss,
        restart: RestartRules {
            require_other_process: true,
            dry_run: false,
            stoppable: true,
        },
        measure_interval_ns: Some(60 * S),
        follow: None,
        admission: false,
    }
}

fn braked() -> GuardSettings {
    let mut s = settings();
    s.limits.brake = Some(Brake {
        pause_at: 450 * MB,
        resume_at: 400 * MB,
        concurrency: 5,
        slow_start: false,
        pressure_at: 2_000,
    });
    s
}

fn readings(before: u64, after: u64, now_ns: u64) -> ReclaimReadings {
    ReclaimReadings {
        before,
        after,
        rss: after,
        floor: after,
        read: (now_ns, now_ns),
        now_ns,
    }
}

#[test]
fn a_jobs_end_reads_memory_at_most_every_20_ms_and_one_job_takes_the_reading() {
    let mut g = GuardCore::new(settings(), 100 * MB, 0);
    let token = g.job_started("A", "j1", MS, None).token;
    assert_eq!(g.busy(), 1);
    assert!(
        !g.job_finished(token, 5 * MS, None).read,
        "read at boot 5 ms ago"
    );
    let (a, b) = (
        g.job_started("A", "j2", 6 * MS, None).token,
        g.job_started("A", "j3", 6 * MS, None).token,
    );
    assert!(g.job_finished(a, 25 * MS, None).read);
    assert!(
        !g.job_finished(b, 26 * MS, None).read,
        "the reading was taken"
    );
    assert_eq!((g.busy(), g.done()), (0, 3));
    assert_eq!(g.job_reading(120 * MB, 25 * MS), Action::None);
    assert_eq!(g.last_memory(), 120 * MB);
}

#[test]
fn a_jobs_reading_reaches_the_policy_only_when_the_metric_is_rss_and_the_process_serves() {
    let mut pss = settings();
    pss.metric = Metric::Pss;
    let mut g = GuardCore::new(pss, 100 * MB, 0);
    assert_eq!(
        g.job_reading(900 * MB, S),
        Action::None,
        "PSS: the monitor decides"
    );
    assert_eq!(
        g.reading(900 * MB, 900 * MB, S, false),
        Action::Reclaim(Reason::Hard)
    );

    let mut g = GuardCore::new(settings(), 100 * MB, 0);
    assert_eq!(g.job_reading(900 * MB, S), Action::Reclaim(Reason::Hard));
    assert_eq!(
        g.job_reading(900 * MB, 2 * S),
        Action::None,
        "reclaiming: no sample"
    );
    assert_eq!(g.last_memory(), 900 * MB, "still remembered");
}

#[test]
fn the_monitor_moves_only_a_serving_process_and_the_restart_sequence_takes_its_readings() {
    let mut s = settings();
    s.limits.reclaim = false;
    let mut g = GuardCore::new(s, 100 * MB, 0);
    assert_eq!(
        g.reading(900 * MB, 900 * MB, S, false),
        Action::RequestRestart(Reason::Hard)
    );
    assert_eq!(g.step(Event::SlotGranted { now_ms: 1_000 }), Action::Quiet);
    assert_eq!(g.reading(900 * MB, 900 * MB, 2 * S, false), Action::None);
    g.step(Event::Quieted { now_ms: 2_000 });
    assert_eq!(
        g.reading(900 * MB, 900 * MB, 5 * S, true),
        Action::Stop(StopCause::Idle)
    );
}

#[test]
fn a_restart_request_says_what_the_slot_needs() {
    let mut s = settings();
    s.limits.reclaim = false;
    let mut g = GuardCore::new(s, 100 * MB, 0);
    assert_eq!(g.restart_request(), None, "none asked for");
    g.reading(600 * MB, 600 * MB, 0, false);
    assert_eq!(
        g.reading(600 * MB, 600 * MB, 11 * S, false),
        Action::RequestRestart(Reason::Soft)
    );
    assert_eq!(
        g.restart_request(),
        Some(RestartRequest {
            reason: Reason::Soft,
            refusal: None,
            peers: Peers::Serving
        })
    );

    // The hard limit restarts a sole process too.
    let mut g = GuardCore::new(s, 100 * MB, 0);
    g.reading(900 * MB, 900 * MB, S, false);
    let request = g.restart_request().unwrap();
    assert_eq!(request.reason, Reason::Hard);
    assert_eq!(request.peers, Peers::Any);

    // A dry run asks for no slot; nor does an embedded Sidekiq the guard cannot stop.
    s.restart.dry_run = true;
    let mut g = GuardCore::new(s, 100 * MB, 0);
    g.reading(900 * MB, 900 * MB, S, false);
    assert_eq!(g.restart_request().unwrap().refusal, Some(Denial::DryRun));
    s.restart.dry_run = false;
    s.restart.stoppable = false;
    let mut g = GuardCore::new(s, 100 * MB, 0);
    g.reading(900 * MB, 900 * MB, S, false);
    assert_eq!(g.restart_request().unwrap().refusal, Some(Denial::Embedded));
    assert_eq!(
        g.step(Event::SlotDenied {
            reason: Denial::Embedded,
            now_ms: 1_000
        }),
        Action::None
    );
    assert_eq!(g.phase(), Phase::Serving);
}

#[test]
fn a_reclaim_says_what_the_policy_concluded() {
    let mut g = GuardCore::new(settings(), 100 * MB, 0);
    assert_eq!(g.job_reading(900 * MB, S), Action::Reclaim(Reason::Hard));
    g.reclaim_started(900 * MB, S);
    let out = g.reclaim_finished(readings(900 * MB, 450 * MB, S + 10 * MS), true);
    assert_eq!(out.reason, Some(Reason::Hard));
    assert_eq!(out.action, Action::None);
    assert_eq!(out.verdict, Some(Verdict::BackUnder));

    let mut g = GuardCore::new(settings(), 100 * MB, 0);
    g.job_reading(900 * MB, S);
    g.reclaim_started(900 * MB, S);
    let out = g.reclaim_finished(readings(900 * MB, 600 * MB, S + 10 * MS), true);
    assert_eq!(out.verdict, Some(Verdict::UnderHard));
    assert!(!out.verdict.unwrap().still_over());

    let mut g = GuardCore::new(settings(), 100 * MB, 0);
    g.job_reading(900 * MB, S);
    g.reclaim_started(900 * MB, S);
    let out = g.reclaim_finished(readings(900 * MB, 850 * MB, S + 10 * MS), true);
    assert_eq!(out.action, Action::RequestRestart(Reason::Hard));
    assert_eq!(out.verdict, Some(Verdict::StillOver));
    assert!(out.verdict.unwrap().still_over());

    // A measuring reclaim: the policy does not see it.
    let mut g = GuardCore::new(settings(), 100 * MB, 0);
    g.reclaim_started(100 * MB, S);
    let out = g.reclaim_finished(readings(100 * MB, 90 * MB, S + MS), false);
    assert_eq!(
        (out.reason, out.action, out.verdict),
        (None, Action::None, None)
    );
}

#[test]
fn a_measuring_reclaim_is_due_every_measure_interval_sooner_after_an_unusable_floor_and_within_its_budget(
) {
    let mut g = GuardCore::new(settings(), 100 * MB, 0);
    assert!(!g.measure_due(59 * S, false));
    assert!(g.measure_due(59 * S, true), "forced");
    assert!(g.measure_due(60 * S, false));
    // A job that starts as the floor is read: the floor closes no window, so the next comes after a tenth.
    let token = g.job_started("A", "j1", 60 * S + MS / 2, None).token;
    g.reclaim_started(100 * MB, 60 * S);
    let out = g.reclaim_finished(
        ReclaimReadings {
            read: (60 * S, 60 * S + MS),
            ..readings(100 * MB, 90 * MB, 60 * S + MS)
        },
        false,
    );
    assert!(!out.measured);
    assert!(!g.measure_due(65 * S, false));
    assert!(g.measure_due(66 * S + MS, false));
    g.job_finished(token, 61 * S, None);
    // A reclaim that took 1 s: the next waits at least 20 s, whatever the interval.
    let mut s = settings();
    s.measure_interval_ns = Some(S);
    let mut g = GuardCore::new(s, 100 * MB, 0);
    g.reclaim_started(100 * MB, S);
    assert!(
        g.reclaim_finished(readings(100 * MB, 90 * MB, 2 * S), false)
            .measured
    );
    assert!(!g.measure_due(21 * S, false));
    assert!(g.measure_due(22 * S, false));
    // Not while a restart is under way, not without an interval.
    let mut s = settings();
    s.measure_interval_ns = None;
    assert!(!GuardCore::new(s, 100 * MB, 0).measure_due(3_600 * S, false));
}

#[test]
fn the_pressure_travels_with_every_sample() {
    let mut g = GuardCore::new(braked(), 100 * MB, 0);
    assert!(g.brake());
    g.set_pressure(Some(31.0));
    assert_eq!(g.pressure(), 31.0);
    assert_eq!(g.job_reading(200 * MB, S), Action::Pause, "a job's reading");
    assert!(g.pressured());
    g.set_pressure(None);
    assert_eq!(g.pressure(), 0.0);
    let t = g.job_started("A", "j", S, None).token;
    g.job_finished(t, 2 * S, None);
    assert_eq!(
        g.reading(200 * MB, 200 * MB, 2 * S, false),
        Action::Resume(ResumeCause::Below)
    );
    assert!(!GuardCore::new(settings(), 100 * MB, 0).brake());
}

#[test]
fn retained_memory_after_the_brakes_reclaim_asks_for_a_restart_a_sole_process_may_take() {
    let mut g = GuardCore::new(braked(), 100 * MB, 0);
    assert_eq!(g.reading(460 * MB, 460 * MB, S, false), Action::Pause);
    assert_eq!(
        g.reading(460 * MB, 460 * MB, 2 * S, false),
        Action::Reclaim(Reason::Brake)
    );
    g.reclaim_started(460 * MB, 2 * S);
    let out = g.reclaim_finished(readings(460 * MB, 455 * MB, 2 * S + 10 * MS), true);
    assert_eq!(out.action, Action::RequestRestart(Reason::Retained));
    assert_eq!(out.verdict, Some(Verdict::Retained));
    assert!(!out.verdict.unwrap().still_over());
    let request = g.restart_request().unwrap();
    assert_eq!(request.reason, Reason::Retained);
    assert_eq!(
        request.peers,
        Peers::ServingUnlessAlone,
        "a paused process serves nothing; alone, it restarts"
    );
}

#[test]
fn passing_max_rss_is_told_once_per_crossing_with_what_follows() {
    let mut s = settings();
    s.limits.reclaim = false;
    let mut g = GuardCore::new(s, 100 * MB, 0);
    assert_eq!(g.take_over_soft(0), None);
    g.reading(600 * MB, 600 * MB, S, false);
    assert_eq!(
        g.take_over_soft(3 * S),
        Some(OverSoftNotice {
            memory: 600 * MB,
            grace_left_ms: 8_000,
            reclaim: false,
            hard: Some(800 * MB),
            needs_other_process: true,
            restarts: true,
        })
    );
    g.reading(650 * MB, 650 * MB, 4 * S, false);
    assert_eq!(g.take_over_soft(4 * S), None, "told once");
    // Under, then over again: told again.
    g.reading(400 * MB, 400 * MB, 5 * S, false);
    g.reading(700 * MB, 700 * MB, 6 * S, false);
    assert_eq!(g.take_over_soft(6 * S).unwrap().memory, 700 * MB);
    // Over and back under before anyone asked: nothing to tell.
    let mut g = GuardCore::new(s, 100 * MB, 0);
    g.reading(600 * MB, 600 * MB, S, false);
    g.reading(400 * MB, 400 * MB, 2 * S, false);
    assert_eq!(g.take_over_soft(2 * S), None);
}

#[test]
fn a_lowered_cgroup_limit_moves_max_rss_and_the_brake_and_the_next_reading_is_judged_by_them() {
    // max_rss 50% of a 1000 MB limit, the brake at 90% / 80% of it; no hard limit.
    let mut s = braked();
    s.limits.hard = None;
    s.follow = Some(Follow {
        limit: 1000 * MB,
        max_rss: Some(500_000),
        hard_max_rss: None,
        brake_at: 900_000,
        resume_at: 800_000,
    });
    let mut core = GuardCore::new(s, 300 * MB, 0);
    assert!(core.follows_cgroup());
    // The same limit, or none: nothing moves.
    assert_eq!(core.cgroup_limit(Some(1000 * MB)), None);
    assert_eq!(core.cgroup_limit(None), None);
    assert_eq!(core.reading(350 * MB, 350 * MB, S, false), Action::None);
    // Resized in place to 600 MB: max_rss 300 MB, the brake at 270 MB.
    let moved = core.cgroup_limit(Some(600 * MB)).unwrap();
    assert_eq!((moved.was_limit, moved.limit), (1000 * MB, 600 * MB));
    assert_eq!(moved.was.soft, 500 * MB);
    assert_eq!(moved.now.soft, 300 * MB);
    assert_eq!(moved.now.brake, Some((270 * MB, 240 * MB)));
    assert_eq!(core.bounds(), moved.now);
    assert_eq!(core.cgroup_limit(Some(600 * MB)), None);
    // 350 MB is now over max_rss and the brake: the brake pauses and the crossing is told.
    assert_eq!(
        core.reading(350 * MB, 350 * MB, 2 * S, false),
        Action::Pause
    );
    assert_eq!(core.take_over_soft(2 * S).map(|o| o.memory), Some(350 * MB));
}

#[test]
fn fixed_limits_do_not_follow() {
    let mut core = GuardCore::new(settings(), 100 * MB, 0);
    assert!(!core.follows_cgroup());
    assert_eq!(core.cgroup_limit(Some(100 * MB)), None);
    assert_eq!(core.bounds().soft, 500 * MB);
}

#[test]
fn admission_goes_by_the_rss_a_reclaim_read_and_asks_for_no_other_reclaim_soon_after() {
    let mut s = braked();
    s.admission = true;
    let mut g = GuardCore::new(s, 100 * MB, 0);
    let light = |jid: &str| JobFacts {
        class: "Light".into(),
        jid: jid.into(),
        declared: crate::admission::Declared::Bytes(10 * MB),
    };
    let heavy = |jid: &str| JobFacts {
        class: "Heavy".into(),
        jid: jid.into(),
        declared: crate::admission::Declared::Bytes(200 * MB),
    };
    // A light job runs; memory is at 400 MB (what earlier jobs left): 400 + 10 + 200 passes brake_at (450 MB),
    // 100 idle + 10 + 200 does not: a reclaim may make the room.
    assert_eq!(
        g.admit(&light("l1"), Some(400 * MB), S).decision,
        Decision::Start
    );
    g.job_started("Light", "l1", S, None);
    let asked = g.admit(&heavy("h1"), Some(400 * MB), S + MS);
    assert_eq!(asked.decision, Decision::Reclaim);
    // The reclaim brought RSS down to 150 MB: asked again (no new reading), the heavy job starts.
    g.reclaim_started(400 * MB, S + 2 * MS);
    g.reclaim_finished(readings(400 * MB, 150 * MB, S + 30 * MS), false);
    let again = g.admit(&heavy("h1"), None, S + 31 * MS);
    assert_eq!(
        (again.decision, again.projected),
        (Decision::Start, 360 * MB)
    );
    // Any reclaim counts: none is asked for within RECLAIM_EVERY_NS of it (100 idle + 210 running + 50 would
    // fit, 440 now does not).
    let mid = JobFacts {
        class: "Mid".into(),
        jid: "m1".into(),
        declared: crate::admission::Declared::Bytes(50 * MB),
    };
    let held = g.admit(&mid, Some(440 * MB), S + 40 * MS);
    assert_eq!(held.decision, Decision::Hold);
    let due = g.admit(&mid, Some(440 * MB), S + 30 * MS + RECLAIM_EVERY_NS);
    assert_eq!(due.decision, Decision::Reclaim);
}
