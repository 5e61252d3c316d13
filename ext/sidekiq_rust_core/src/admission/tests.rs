use super::*;

const MB: u64 = 1024 * 1024;
const S: u64 = 1_000_000_000;

fn job(class: &str, jid: &str) -> JobFacts {
    JobFacts {
        class: class.into(),
        jid: jid.into(),
        declared: Declared::None,
    }
}

fn declared(class: &str, jid: &str, bytes: u64) -> JobFacts {
    JobFacts {
        declared: Declared::Bytes(bytes),
        ..job(class, jid)
    }
}

/// Runs one job of `class` alone through admission, start and end, its window peaking `peak` above `rss`.
fn measure(a: &mut Admission, class: &str, token: u64, rss: u64, peak: u64, now: u64) {
    let jid = format!("probe{token}");
    let answer = a.admit(&job(class, &jid), rss, 400 * MB, now);
    assert!(matches!(
        answer.decision,
        Decision::Probe | Decision::Start | Decision::Alone
    ));
    assert!(
        a.job_started(token, class, &jid, now),
        "a job alone opens a window"
    );
    a.window_opened(token, rss, true);
    let window = a.job_finished(token).expect("a clean window");
    a.learned(&window, rss + peak);
}

/// Admission with 80 MB idle and "Heavy" measured at `peak` (one probe alone).
fn heavy_measured(peak: u64) -> Admission {
    let mut a = Admission::new(true, 80 * MB);
    measure(&mut a, "Heavy", 1, 80 * MB, peak, 0);
    a.reading(80 * MB, 0);
    a
}

#[test]
fn a_class_not_measured_runs_alone_once_then_by_its_figure() {
    let mut a = Admission::new(true, 80 * MB);
    let first = a.admit(&job("Heavy", "j1"), 80 * MB, 400 * MB, 0);
    assert_eq!(first.decision, Decision::Probe);
    assert!(a.exclusive(), "nothing else fetches while it runs");
    // Another thread popped a job meanwhile: it waits.
    let other = a.admit(&job("Light", "j2"), 80 * MB, 400 * MB, 1);
    assert_eq!(
        (other.decision, other.hold),
        (Decision::Hold, Some(Hold::Exclusive))
    );
    assert!(a.job_started(1, "Heavy", "j1", 2));
    a.window_opened(1, 80 * MB, true);
    let window = a.job_finished(1).unwrap();
    assert_eq!(a.learned(&window, 230 * MB), None);
    assert!(!a.exclusive());
    let rows = a.classes();
    let heavy = rows.iter().find(|r| r.class == "Heavy").unwrap();
    assert_eq!((heavy.learned, heavy.samples), (Some(150 * MB), 1));
    assert_eq!(
        rows.iter().find(|r| r.class == "Light").unwrap().deferred,
        1
    );

    // Measured: two fit under 400 MB (80 + 2 x 150), a third does not.
    a.reading(80 * MB, 0);
    let now = 10 * S;
    assert_eq!(
        a.admit(&job("Heavy", "h1"), 80 * MB, 400 * MB, now)
            .decision,
        Decision::Start
    );
    let second = a.admit(&job("Heavy", "h2"), 80 * MB, 400 * MB, now + 1);
    assert_eq!(
        (second.decision, second.projected),
        (Decision::Start, 380 * MB)
    );
    let third = a.admit(&job("Heavy", "h3"), 80 * MB, 400 * MB, now + 2);
    assert_eq!(
        (third.decision, third.hold),
        (Decision::Hold, Some(Hold::NoRoom))
    );
    // The first two grew to their working sets: what they may still add is what they have not grown yet.
    a.job_started(11, "Heavy", "h1", now + 3);
    a.job_started(12, "Heavy", "h2", now + 3);
    let later = a.admit(&job("Heavy", "h3"), 380 * MB, 400 * MB, now + 4);
    assert_eq!(
        (later.hold, later.projected),
        (Some(Hold::NoRoom), 530 * MB)
    );
    a.job_finished(11);
    // 80 idle + 150 running + 150 would fit: what the last jobs left may be in the way, a reclaim first.
    let asked = a.admit(&job("Heavy", "h3"), 380 * MB, 400 * MB, now + 5);
    assert_eq!(asked.decision, Decision::Reclaim);
    let after = a.admit(&job("Heavy", "h3"), 380 * MB, 400 * MB, now + 5);
    assert_eq!(
        after.hold,
        Some(Hold::NoRoom),
        "memory has not come down yet"
    );
    let after = a.admit(&job("Heavy", "h3"), 230 * MB, 400 * MB, now + 6);
    assert_eq!(after.decision, Decision::Start);
}

#[test]
fn a_job_never_waits_while_nothing_runs() {
    let mut a = Admission::new(true, 80 * MB);
    measure(&mut a, "Heavy", 1, 80 * MB, 150 * MB, 0);
    // Memory is high (retained), but no job runs: it does not fit, so a reclaim first; asked again (memory did
    // not come down), the fetched job starts.
    let answer = a.admit(&job("Heavy", "j"), 390 * MB, 400 * MB, S);
    assert_eq!(answer.decision, Decision::Reclaim);
    assert!(answer.projected > answer.bound);
    let again = a.admit(&job("Heavy", "j"), 390 * MB, 400 * MB, S + 1);
    assert_eq!(again.decision, Decision::Start);
    // The next job that starts alone over the bound gets a reclaim too, however soon.
    a.job_started(1, "Heavy", "j", S + 2);
    a.job_finished(1);
    let next = a.admit(&job("Heavy", "k"), 390 * MB, 400 * MB, S + 3);
    assert_eq!(next.decision, Decision::Reclaim);
}

#[test]
fn a_job_held_by_what_the_last_jobs_left_asks_for_a_reclaim_at_most_every_few_seconds() {
    let mut a = heavy_measured(100 * MB);
    let now = 10 * S;
    // One heavy job runs; memory is at 320 MB, much of it the last jobs' garbage and free memory: 80 idle +
    // 100 running + 100 fits under 400, 320 + 100 does not.
    assert_eq!(
        a.admit(&job("Heavy", "h1"), 200 * MB, 400 * MB, now)
            .decision,
        Decision::Start
    );
    a.job_started(11, "Heavy", "h1", now);
    let asked = a.admit(&job("Heavy", "h2"), 320 * MB, 400 * MB, now + 1);
    assert_eq!((asked.decision, asked.hold), (Decision::Reclaim, None));
    // Asked again after the reclaim, with memory down to 180 MB: it starts.
    let after = a.admit(&job("Heavy", "h2"), 180 * MB, 400 * MB, now + 2);
    assert_eq!(after.decision, Decision::Start);
    // Not down: it waits, and no other reclaim is asked for within RECLAIM_EVERY_NS.
    let held = a.admit(&job("Heavy", "h3"), 380 * MB, 400 * MB, now + 3);
    assert_eq!(
        (held.decision, held.hold),
        (Decision::Hold, Some(Hold::NoRoom))
    );
    let rows = a.classes();
    assert_eq!(rows[0].deferred, 1, "a reclaim asked for defers nothing");
    // A reclaim the process ran for another reason counts too.
    a.reclaimed(now + RECLAIM_EVERY_NS, 380 * MB, 380 * MB);
    a.job_finished(11);
    a.job_started(12, "Heavy", "h2", now + RECLAIM_EVERY_NS);
    let soon = a.admit(
        &job("Heavy", "h3"),
        380 * MB,
        400 * MB,
        now + RECLAIM_EVERY_NS + 1,
    );
    assert_eq!(soon.decision, Decision::Hold);
    let due = a.admit(
        &job("Heavy", "h3"),
        380 * MB,
        400 * MB,
        now + 2 * RECLAIM_EVERY_NS,
    );
    assert_eq!(due.decision, Decision::Reclaim);
}

#[test]
fn no_reclaim_is_asked_for_when_it_could_not_make_the_room() {
    let mut a = heavy_measured(150 * MB);
    let now = 10 * S;
    for (token, jid) in [(11, "h1"), (12, "h2")] {
        assert_eq!(
            a.admit(&job("Heavy", jid), 80 * MB, 400 * MB, now).decision,
            Decision::Start
        );
        a.job_started(token, "Heavy", jid, now);
    }
    // 80 idle + 2 x 150 running + 150 passes 400 even with nothing left over: it waits, no reclaim.
    let held = a.admit(&job("Heavy", "h3"), 380 * MB, 400 * MB, now + 1);
    assert_eq!(
        (held.decision, held.hold),
        (Decision::Hold, Some(Hold::NoRoom))
    );
}

#[test]
fn a_class_that_cannot_fit_runs_alone_and_is_said_once() {
    let mut a = Admission::new(true, 100 * MB);
    // Alone, it does not fit under the bound: a reclaim first, then it runs alone.
    let answer = a.admit(&declared("Huge", "j1", 350 * MB), 100 * MB, 400 * MB, 0);
    assert_eq!(answer.decision, Decision::Reclaim);
    assert_eq!(
        a.admit(&declared("Huge", "j1", 350 * MB), 100 * MB, 400 * MB, 1)
            .decision,
        Decision::Alone
    );
    assert_eq!(
        answer.say,
        Some(Say::TooBig {
            need: 350 * MB,
            room: 300 * MB
        })
    );
    a.job_started(1, "Huge", "j1", 1);
    assert!(a.exclusive());
    a.job_finished(1);
    assert!(!a.exclusive());
    measure(&mut a, "Light", 2, 100 * MB, MB, 2 * S);
    a.admit(&job("Light", "l"), 100 * MB, 400 * MB, 3 * S);
    a.job_started(3, "Light", "l", 3 * S);
    let waits = a.admit(&declared("Huge", "j2", 350 * MB), 100 * MB, 400 * MB, 3 * S);
    assert_eq!((waits.hold, waits.say), (Some(Hold::TooBig), None));
}

#[test]
fn a_declared_figure_is_used_from_the_first_job_and_a_far_off_one_said_once() {
    let mut a = Admission::new(true, 80 * MB);
    let first = a.admit(&declared("Report", "j1", 40 * MB), 80 * MB, 400 * MB, 0);
    assert_eq!(first.decision, Decision::Start, "declared: no probe");
    assert_eq!(first.need, Some(40 * MB));
    assert!(
        a.job_started(1, "Report", "j1", 0),
        "alone: a natural window"
    );
    a.window_opened(1, 80 * MB, true);
    let window = a.job_finished(1).unwrap();
    assert_eq!(
        a.learned(&window, 200 * MB),
        Some(Say::Mismatch {
            declared: 40 * MB,
            learned: 120 * MB
        })
    );
    let window = Window {
        class: "Report".into(),
        rss_start: 80 * MB,
        peak_reset: true,
    };
    assert_eq!(a.learned(&window, 300 * MB), None, "said once");
    // The declared figure stays the one admission uses.
    assert_eq!(
        a.admit(&job("Report", "j2"), 80 * MB, 400 * MB, S).need,
        Some(40 * MB)
    );
}

#[test]
fn a_bad_declaration_is_said_once_and_the_class_runs_undeclared() {
    let mut a = Admission::new(true, 80 * MB);
    let bad = JobFacts {
        declared: Declared::Bad("lots".into()),
        ..job("Odd", "j1")
    };
    let answer = a.admit(&bad, 80 * MB, 400 * MB, 0);
    assert_eq!(answer.say, Some(Say::BadDeclared("lots".into())));
    assert_eq!(answer.decision, Decision::Probe);
    a.job_started(1, "Odd", "j1", 0);
    a.job_finished(1);
    let again = JobFacts {
        jid: "j2".into(),
        ..bad
    };
    assert_eq!(a.admit(&again, 80 * MB, 400 * MB, S).say, None);
}

#[test]
fn a_window_is_spoiled_by_any_other_start_and_natural_ones_are_rate_limited() {
    let mut a = Admission::new(true, 80 * MB);
    measure(&mut a, "A", 1, 80 * MB, 10 * MB, 0);
    // Within a second of the last window: no new one.
    a.admit(&job("A", "a1"), 80 * MB, 400 * MB, S / 2);
    assert!(!a.job_started(2, "A", "a1", S / 2));
    a.job_finished(2);
    // Later, alone: a window; a second job starting spoils it.
    a.admit(&job("A", "a2"), 80 * MB, 400 * MB, 2 * S);
    assert!(a.job_started(3, "A", "a2", 2 * S));
    a.window_opened(3, 80 * MB, true);
    a.admit(&job("A", "a3"), 85 * MB, 400 * MB, 2 * S);
    assert!(!a.job_started(4, "A", "a3", 2 * S));
    assert_eq!(a.job_finished(3), None, "spoiled");
    a.job_finished(4);
    let a_row = a.classes().into_iter().find(|r| r.class == "A").unwrap();
    assert_eq!((a_row.learned, a_row.samples), (Some(10 * MB), 1));
}

#[test]
fn an_admitted_job_that_never_started_is_given_up() {
    let mut a = Admission::new(true, 80 * MB);
    measure(&mut a, "A", 1, 80 * MB, 150 * MB, 0);
    a.admit(&job("A", "lost"), 80 * MB, 400 * MB, S);
    a.admit(&job("A", "a2"), 80 * MB, 400 * MB, S);
    assert_eq!(
        a.admit(&job("A", "a3"), 80 * MB, 400 * MB, S).hold,
        Some(Hold::NoRoom)
    );
    let later = S + RESERVED_NS;
    a.reading(80 * MB, 0);
    assert_eq!(
        a.admit(&job("A", "a4"), 80 * MB, 400 * MB, later).decision,
        Decision::Start
    );
}

#[test]
fn off_it_keeps_nothing() {
    let mut a = Admission::new(false, 80 * MB);
    assert!(!a.job_started(1, "A", "j", 0));
    assert_eq!(a.job_finished(1), None);
    assert!(!a.exclusive());
}

#[test]
fn idle_memory_is_the_least_seen_with_no_job() {
    let mut a = Admission::new(true, 80 * MB);
    a.reading(300 * MB, 0);
    a.reading(70 * MB, 0);
    a.reading(60 * MB, 2);
    assert_eq!(a.idle(), 70 * MB);
}

#[test]
fn while_a_reclaim_is_asked_for_a_job_alone_no_other_thread_reclaims_and_the_job_gets_a_decision() {
    let mut a = heavy_measured(100 * MB);
    assert_eq!(
        a.admit(&job("Heavy", "j1"), 350 * MB, 400 * MB, S).decision,
        Decision::Reclaim
    );
    // Another thread fetched meanwhile: the process counts as busy (j1 is about to start), no second reclaim.
    let other = a.admit(&job("Heavy", "j2"), 350 * MB, 400 * MB, S + 1);
    assert_eq!(
        (other.decision, other.hold),
        (Decision::Hold, Some(Hold::NoRoom))
    );
    assert_eq!(
        a.admit(&job("Heavy", "j1"), 150 * MB, 400 * MB, S + 2)
            .decision,
        Decision::Start
    );
}

#[test]
fn a_reclaim_that_gave_back_what_was_there_at_a_running_jobs_admission_leaves_its_growth_counted_once(
) {
    let mut a = heavy_measured(100 * MB);
    let now = 10 * S;
    // h1 is admitted at 180 MB: 80 idle and 100 the last heavy job's garbage. It runs and adds its 100 MB (280).
    assert_eq!(
        a.admit(&job("Heavy", "h1"), 180 * MB, 330 * MB, now)
            .decision,
        Decision::Start
    );
    a.job_started(11, "Heavy", "h1", now);
    // A reclaim gives the garbage back: 280 -> 180 MB, of which h1's 100 are already in the reading. Without
    // the reclaim's account, h1's growth would look like 0 (180 then, 180 now) and count again: 180 + 100 +
    // 100 = 380 over 330.
    a.reclaimed(now + 1, 280 * MB, 180 * MB);
    let next = a.admit(&job("Heavy", "h2"), 180 * MB, 330 * MB, now + 2);
    assert_eq!((next.decision, next.projected), (Decision::Start, 280 * MB));
    // What the reclaim gave back beyond what was there at h1's admission stays h1's: a job admitted at idle
    // memory keeps counting what it may still add.
    let mut b = heavy_measured(100 * MB);
    b.admit(&job("Heavy", "h1"), 80 * MB, 330 * MB, now);
    b.job_started(11, "Heavy", "h1", now);
    b.reclaimed(now + 1, 150 * MB, 100 * MB);
    let counted = b.admit(&job("Heavy", "h2"), 100 * MB, 330 * MB, now + 2);
    assert_eq!(counted.projected, 280 * MB);
}

/// Two heavy jobs (100 MB each) running under a 400 MB bound, memory 330 MB, a reclaim just ran at `t0`.
fn two_heavies_running(t0: u64) -> Admission {
    let mut a = heavy_measured(100 * MB);
    for (token, jid, memory) in [(11, "h1", 80 * MB), (12, "h2", 150 * MB)] {
        let answer = a.admit(&job("Heavy", jid), memory, 400 * MB, t0 - S);
        assert_eq!(answer.decision, Decision::Start);
        a.job_started(token, "Heavy", jid, t0 - S);
    }
    a.reclaimed(t0, 330 * MB, 330 * MB);
    a
}

#[test]
fn a_reclaim_comes_sooner_when_the_jobs_that_ended_since_may_have_left_the_room() {
    let t0 = 10 * S;
    // h3 would pass the bound by 30 MB (330 + 100 running + 100); nothing ended since the reclaim: it waits for
    // RECLAIM_EVERY_NS.
    let mut a = two_heavies_running(t0);
    let held = a.admit(
        &job("Heavy", "h3"),
        330 * MB,
        400 * MB,
        t0 + RECLAIM_SOON_NS,
    );
    assert_eq!(
        (held.decision, held.hold, held.projected),
        (Decision::Hold, Some(Hold::NoRoom), 430 * MB)
    );
    // h1 ended: what it may have left (100 MB) covers the 30 MB over, a reclaim after RECLAIM_SOON_NS.
    let mut b = two_heavies_running(t0);
    b.job_finished(11);
    let early = b.admit(
        &job("Heavy", "h3"),
        330 * MB,
        400 * MB,
        t0 + RECLAIM_SOON_NS - 1,
    );
    assert_eq!(early.decision, Decision::Hold);
    let soon = b.admit(
        &job("Heavy", "h3"),
        330 * MB,
        400 * MB,
        t0 + RECLAIM_SOON_NS,
    );
    assert_eq!(soon.decision, Decision::Reclaim);
    // The reclaim ran and gave nothing back: what ended before it counts no more.
    b.reclaimed(t0 + RECLAIM_SOON_NS + 1, 330 * MB, 330 * MB);
    let again = b.admit(
        &job("Heavy", "h3"),
        330 * MB,
        400 * MB,
        t0 + 2 * RECLAIM_SOON_NS + 2,
    );
    assert_eq!(again.decision, Decision::Hold);
}
