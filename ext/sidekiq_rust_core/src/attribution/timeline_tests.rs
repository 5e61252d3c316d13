//! Generated timelines: simulated processes whose truth is known, replayed through [`Attribution`].

use super::*;

const MB: f64 = 1_048_576.0;
const MS: u64 = 1_000_000;

/// A small deterministic generator (xorshift), so every timeline is reproducible.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[derive(Clone, Copy)]
struct Kind {
    name: &'static str,
    /// Kept for the life of the process, bytes.
    keeps: f64,
    /// Made and dropped (reclaimable garbage), bytes.
    churns: f64,
    /// Held while it runs (its working set, live until it ends), bytes.
    holds: f64,
    /// Run time, ms.
    run_ms: u64,
    weight: u64,
}

const LEAKER: Kind = Kind {
    name: "LeakJob",
    keeps: 6.0 * MB,
    churns: 0.0,
    holds: 0.0,
    run_ms: 300,
    weight: 2,
};
const CHURNER: Kind = Kind {
    name: "ChurnJob",
    keeps: 0.0,
    churns: 200.0 * MB,
    holds: 80.0 * MB,
    run_ms: 900,
    weight: 1,
};
const LIGHT: Kind = Kind {
    name: "PingJob",
    keeps: 0.0,
    churns: 0.0,
    holds: 0.0,
    run_ms: 5,
    weight: 8,
};

struct Slot {
    kind: Kind,
    token: u64,
    end: u64,
    start: u64,
    held: f64,
}

/// Simulates a process with `concurrency` threads running the kinds interleaved for `seconds`: memory grows
/// linearly over a job's run (kept + garbage), garbage stays until a reclaim (every `reclaim_ms`), the
/// allocator gives a little back by itself now and then, readings every `read_ms`, noise of +-`noise` bytes.
fn simulate(
    kinds: &[Kind],
    concurrency: usize,
    seconds: u64,
    read_ms: u64,
    reclaim_ms: u64,
    noise: f64,
    seed: u64,
) -> Vec<ClassFigures> {
    simulate_with(
        kinds,
        Run {
            concurrency,
            seconds,
            read_ms,
            reclaim_ms,
            noise,
            in_use_noise: None,
            seed,
            round_robin: false,
            keep_at_start: false,
            reclaim_takes_ms: 30,
            steady: false,
        },
    )
}

/// One generated timeline's settings beyond its kinds.
#[derive(Clone, Copy)]
struct Run {
    concurrency: usize,
    seconds: u64,
    read_ms: u64,
    reclaim_ms: u64,
    /// RSS noise, +- bytes.
    noise: f64,
    /// Floors that are the allocator's bytes in use: what is live, +- that many bytes, and one floor in ten off
    /// by up to 4 times as much (a thread cache's free blocks); None: the floors are RSS readings.
    in_use_noise: Option<f64>,
    seed: u64,
    /// The kinds in turn, as a queue pushed round-robin hands them out (else drawn by weight).
    round_robin: bool,
    /// What a job keeps is allocated 1 ms after its start (else spread over its run).
    keep_at_start: bool,
    /// From a reclaim's GC to its floor (the purge, the reading): the jobs run on meanwhile, and what they drop
    /// is garbage still in the floor (on a loaded machine hundreds of milliseconds).
    reclaim_takes_ms: u64,
    /// Every job of a kind runs for its run_ms to within 1% (else from half to one and a half times it): a
    /// steady queue, whose windows, handed the kinds in turn, hold each as often unless their edges move.
    steady: bool,
}

impl Run {
    fn minute(concurrency: usize, seed: u64) -> Run {
        Run {
            concurrency,
            seconds: 60,
            read_ms: 50,
            reclaim_ms: 1000,
            noise: 2.0 * MB,
            in_use_noise: Some(0.3 * MB),
            seed,
            round_robin: false,
            keep_at_start: false,
            reclaim_takes_ms: 30,
            steady: false,
        }
    }
}

fn simulate_with(kinds: &[Kind], run: Run) -> Vec<ClassFigures> {
    let Run {
        concurrency,
        seconds,
        read_ms,
        reclaim_ms,
        noise,
        in_use_noise,
        seed,
        round_robin,
        keep_at_start,
        reclaim_takes_ms,
        steady,
    } = run;
    let mut rng = Rng(seed);
    let mut a = Attribution::new();
    let total_weight: u64 = kinds.iter().map(|k| k.weight).sum();
    let mut slots: Vec<Option<Slot>> = (0..concurrency).map(|_| None).collect();
    let mut kept = 100.0 * MB;
    let mut garbage = 0.0;
    // The working sets of the jobs that ended since the last GC: malloc'd, in the allocator's bytes in use until
    // a GC frees them (what `churns` makes is taken as Ruby heap slots, never in them).
    let mut dropped_held = 0.0;
    let step = MS;
    let end = seconds * 1000 * MS;
    let mut t = 0;
    let mut next_read = 0;
    let mut next_reclaim = reclaim_ms * MS;
    let mut reclaiming_until: Option<u64> = None;
    let mut jid = 0u64;
    let mut turn = 0usize;
    while t < end {
        for slot in slots.iter_mut() {
            if slot.as_ref().is_some_and(|s| s.end <= t) {
                if let Some(s) = slot.take() {
                    a.job_finished(s.token, t, None);
                    garbage += s.held;
                    dropped_held += s.held;
                }
            }
            if let Some(s) = slot {
                let share = step as f64 / (s.end - s.start).max(1) as f64;
                if !keep_at_start {
                    kept += s.kind.keeps * share;
                } else if t - s.start == MS {
                    kept += s.kind.keeps;
                }
                garbage += s.kind.churns * share;
            } else {
                let mut pick = if round_robin {
                    turn += 1;
                    (turn as u64 - 1) % total_weight
                } else {
                    rng.below(total_weight)
                };
                let kind = *kinds
                    .iter()
                    .find(|k| {
                        if pick < k.weight {
                            true
                        } else {
                            pick -= k.weight;
                            false
                        }
                    })
                    .unwrap();
                jid += 1;
                let spread = if steady {
                    0.99 + 0.02 * rng.unit()
                } else {
                    0.5 + rng.unit()
                };
                let run = (kind.run_ms as f64 * spread * MS as f64) as u64;
                let token = a.job_started(kind.name, &format!("jid{jid}"), t, None);
                *slot = Some(Slot {
                    kind,
                    token,
                    start: t,
                    end: t + run.max(MS),
                    held: kind.holds, // its working set, from its start to its end
                });
            }
        }
        if rng.below(2000) == 0 {
            garbage *= 0.5; // the allocator's own decay
        }
        let held: f64 = slots.iter().flatten().map(|s| s.held).sum();
        let memory = |rng: &mut Rng, kept: f64, garbage: f64| {
            (kept + garbage + held + (rng.unit() - 0.5) * 2.0 * noise) as u64
        };
        if reclaiming_until.is_none() && t >= next_reclaim {
            // The GC: the garbage so far goes; the jobs go on while the reclaim takes its time.
            a.reclaim_started(memory(&mut rng, kept, garbage), t);
            garbage = 0.0;
            dropped_held = 0.0;
            reclaiming_until = Some(t + reclaim_takes_ms.max(1) * MS);
        }
        if let Some(until) = reclaiming_until {
            if t >= until {
                let after = memory(&mut rng, kept, garbage);
                // In use: what is kept and held, and the working sets of the jobs that ended since the GC.
                let floor = match in_use_noise {
                    Some(n) => {
                        let spread = if rng.below(10) == 0 { 4.0 * n } else { n };
                        (kept + held + dropped_held + (rng.unit() - 0.5) * 2.0 * spread) as u64
                    }
                    None => after,
                };
                let measured = a.reclaim_finished(after, floor, t, (t, t));
                reclaiming_until = None;
                // As the guard does: after a floor that closed no window, the next comes soon.
                let delay = if measured {
                    reclaim_ms
                } else {
                    reclaim_ms / 10
                };
                next_reclaim = t + delay * MS;
            }
        } else if t >= next_read {
            a.reading(memory(&mut rng, kept, garbage), t);
            next_read = t + read_ms * MS;
        }
        t += step;
    }
    a.report()
}

fn row<'a>(rows: &'a [ClassFigures], name: &str) -> &'a ClassFigures {
    rows.iter().find(|r| r.class == name).unwrap()
}

fn within(value: Option<i64>, truth: f64, tolerance: f64) -> bool {
    value.is_some_and(|v| (v as f64 - truth).abs() <= tolerance * truth.max(MB))
}

#[test]
fn the_leaker_leads_on_retained_at_every_concurrency() {
    for concurrency in [1, 2, 5, 10, 25] {
        let rows = simulate(
            &[LEAKER, CHURNER, LIGHT],
            concurrency,
            300,
            50,
            2000,
            0.5 * MB,
            7 + concurrency as u64,
        );
        let names: Vec<&str> = rows.iter().map(|r| r.class.as_str()).collect();
        assert_eq!(
            names,
            ["LeakJob", "ChurnJob", "PingJob"],
            "c={concurrency}: {rows:?}"
        );
        let leak = row(&rows, "LeakJob");
        assert!(
            within(leak.retained, 6.0 * MB, 0.15),
            "c={concurrency}: {leak:?}"
        );
        let churn = row(&rows, "ChurnJob");
        assert!(
            churn.retained.unwrap().abs() as f64 <= 1.5 * MB,
            "c={concurrency}: {churn:?}"
        );
        assert!(
            churn.growth.unwrap() as f64 >= 100.0 * MB,
            "c={concurrency}: {churn:?}"
        );
        let light = row(&rows, "PingJob");
        assert!(
            light.retained.unwrap().abs() as f64 <= 0.2 * MB,
            "c={concurrency}: {light:?}"
        );
        assert!(
            light.growth.unwrap().abs() as f64 <= 0.5 * MB,
            "c={concurrency}: {light:?}"
        );
    }
}

#[test]
fn growth_per_job_of_a_leaker_alone_is_its_allocation() {
    for concurrency in [1, 3, 25] {
        let rows = simulate(&[LEAKER], concurrency, 120, 20, 5000, 0.0, 3);
        let leak = row(&rows, "LeakJob");
        assert!(within(leak.growth, 6.0 * MB, 0.05), "{leak:?}");
        assert!(within(leak.retained, 6.0 * MB, 0.05), "{leak:?}");
    }
}

#[test]
fn a_reclaim_during_a_leakers_run_is_not_its_shrinkage() {
    let mut a = Attribution::new();
    a.reading(500 * MB as u64, 0);
    for i in 0..40u64 {
        let t = i * 1000 * MS;
        let leak = a.job_started("LeakJob", "l", t, None);
        // Garbage from earlier is reclaimed while the leaker runs.
        a.reclaim_started((700.0 * MB) as u64 + i * 6 * MB as u64, t + 100 * MS);
        let floor = (500.0 * MB) as u64 + i * 6 * MB as u64;
        a.reclaim_finished(floor, floor, t + 200 * MS, (t + 200 * MS, t + 200 * MS));
        a.reading((500.0 * MB) as u64 + (i + 1) * 6 * MB as u64, t + 500 * MS);
        a.job_finished(leak, t + 500 * MS, None);
    }
    let rows = a.report();
    assert!(rows[0].growth.unwrap() > 0, "{rows:?}");
    assert!(within(rows[0].retained, 6.0 * MB, 0.05), "{rows:?}");
}

#[test]
fn a_floor_caught_mid_allocation_is_weighed_down() {
    let mut rng = Rng(11);
    let mut a = Attribution::new();
    let mut kept = 300.0 * MB;
    let mut t = 0;
    a.reclaim_started(kept as u64, t);
    a.reclaim_finished(kept as u64, kept as u64, t, (t, t));
    for window in 0..60 {
        for _ in 0..rng.below(4) {
            let job = a.job_started("LeakJob", "l", t, None);
            kept += 2.0 * MB;
            a.job_finished(job, t + 100 * MS, None);
            t += 100 * MS;
        }
        for _ in 0..(1 + rng.below(6)) {
            let job = a.job_started("PingJob", "p", t, None);
            a.job_finished(job, t + 10 * MS, None);
            t += 10 * MS;
        }
        // One reclaim in eight lands while a job is half-way through building a 48 MB working set.
        let caught = if window % 8 == 3 { 24.0 * MB } else { 0.0 };
        a.reclaim_started((kept + caught) as u64, t);
        let floor = (kept + caught + (rng.unit() - 0.5) * 0.2 * MB) as u64;
        a.reclaim_finished(floor, floor, t + MS, (t + MS, t + MS));
        t += 2 * MS;
    }
    let rows = a.report();
    assert_eq!(rows[0].class, "LeakJob", "{rows:?}");
    assert!(within(rows[0].retained, 2.0 * MB, 0.1), "{rows:?}");
    assert_eq!(rows[1].retained, Some(0), "{rows:?}");
}

/// The kinds of issue 19's workload: three classes, each job 0.3 s; a leaker keeping 3 MB, a churner making and
/// dropping 8 MB (and holding `churner_holds` while it runs), a light job.
fn issue_kinds(churner_holds: f64) -> [Kind; 3] {
    let kind = |name, keeps, churns, holds| Kind {
        name,
        keeps,
        churns,
        holds,
        run_ms: 300,
        weight: 1,
    };
    [
        kind("LeakJob", 3.0 * MB, 0.0, 0.0),
        kind("ChurnJob", 0.0, 8.0 * MB, churner_holds),
        kind("LightJob", 0.0, 0.0, 0.0),
    ]
}

/// Right: the leaker leads, within 25% of its 3 MB, the others at 0. Rough: the leaker leads, further off or
/// with another class above 0 after it. Silent: every class at 0 or unknown. Wrong: another class leads.
#[derive(Debug, PartialEq)]
enum Outcome {
    Right,
    Rough,
    Silent,
    Wrong,
}

fn outcome(rows: &[ClassFigures]) -> Outcome {
    if rows[0].class == "LeakJob"
        && within(rows[0].retained, 3.0 * MB, 0.25)
        && rows[1..].iter().all(|r| r.retained == Some(0))
    {
        Outcome::Right
    } else if rows.iter().all(|r| r.retained.unwrap_or(0) == 0) {
        Outcome::Silent
    } else if rows[0].class == "LeakJob" && rows[0].retained.unwrap_or(0) > 0 {
        Outcome::Rough
    } else {
        Outcome::Wrong
    }
}

/// Issue 19's workload for one minute with a measuring reclaim every second and noisy in-use floors, at every
/// concurrency from 1 to 25, 10 runs each way:
/// - drawn at random (the churner holding 8 MB while it runs): right in at least 9 of 10;
/// - handed out in turn, as a queue pushed round-robin does, with what the churner makes not held in the
///   allocator's bytes in use (short strings live in Ruby's heap pages): right in at least 9 of 10;
/// - in turn with the churner holding 8 MB: the in-flight counts are then a function of the start counts, and
///   at concurrency 1 and 2 the windows cannot tell a hold from a leak. Another class never leads.
#[test]
fn within_a_minute_the_leaker_is_named_and_the_others_are_zero_at_concurrency_1_to_25() {
    for concurrency in 1..=25usize {
        let tally = |kinds: &[Kind; 3], round_robin: bool, salt: u64| {
            let outcomes: Vec<Outcome> = (0..10u64)
                .map(|seed| {
                    let run = Run {
                        round_robin,
                        keep_at_start: round_robin,
                        ..Run::minute(concurrency, salt + seed * 31 + concurrency as u64)
                    };
                    outcome(&simulate_with(kinds, run))
                })
                .collect();
            let count = |o: Outcome| outcomes.iter().filter(|x| **x == o).count();
            (count(Outcome::Right), count(Outcome::Wrong))
        };
        let (right, _) = tally(&issue_kinds(8.0 * MB), false, 1);
        assert!(
            right >= 9,
            "c={concurrency}, random order: {right} of 10 right"
        );
        let (right, _) = tally(&issue_kinds(0.0), true, 2);
        assert!(right >= 9, "c={concurrency}, in turn: {right} of 10 right");
        let (_, wrong) = tally(&issue_kinds(8.0 * MB), true, 3);
        assert_eq!(
            wrong, 0,
            "c={concurrency}, in turn with a held working set: {wrong} of 10 led by another class"
        );
    }
}

/// The evidence behind a figure: the windows a class started in, and a standard error that shrinks with them.
#[test]
fn each_row_carries_its_windows_and_standard_error() {
    let rows = simulate_with(&[LEAKER, LIGHT], Run::minute(3, 5));
    let leak = row(&rows, "LeakJob");
    assert!(leak.windows >= 30, "{leak:?}");
    let error = leak.retained_error.unwrap();
    assert!(error > 0 && (error as f64) < 0.1 * 6.0 * MB, "{leak:?}");
    let light = row(&rows, "PingJob");
    assert_eq!(light.retained, Some(0), "{light:?}");
    assert!(light.retained_error.is_some(), "{light:?}");
}

/// At the default measure_interval (60 s), the same workload at concurrency 5 is named within 15 minutes
/// (13 floors), in either order. (Within 10, 9 floors, a figure rests on 2 to 4 of them and is tested with as
/// few degrees of freedom: named in 4 runs of 10.)
#[test]
fn at_the_default_interval_the_leaker_is_named_within_fifteen_minutes() {
    let mut right = 0;
    for seed in 0..10u64 {
        let round_robin = seed % 2 == 0;
        let run = Run {
            seconds: 900,
            read_ms: 200,
            reclaim_ms: 60_000,
            round_robin,
            keep_at_start: round_robin,
            ..Run::minute(5, 100 + seed)
        };
        let rows = simulate_with(&issue_kinds(if round_robin { 0.0 } else { 8.0 * MB }), run);
        let got = outcome(&rows);
        assert_ne!(got, Outcome::Wrong, "{rows:?}");
        if got == Outcome::Right {
            right += 1;
        }
    }
    assert!(right >= 9, "{right} of 10");
}

/// One job far off the rest (a leaker that kept 700 MB once) does not hide the class: the standard errors rest on
/// the robust scale of the windows, not on that one window.
#[test]
fn one_huge_job_does_not_silence_the_figures() {
    let mut rng = Rng(21);
    let mut a = Attribution::new();
    let mut kept = 100.0 * MB;
    let mut t = 0;
    a.reclaim_started(kept as u64, t);
    a.reclaim_finished(kept as u64, kept as u64, t, (t, t));
    for window in 0..50 {
        // Pings in nearly the same numbers as the leaker (one more in about one window in five): few windows
        // tell the two apart, as in a queue that hands them out in turn.
        let leaks = 3 + rng.below(3);
        let pings = leaks + u64::from(rng.below(5) == 0);
        for i in 0..leaks {
            let leak = a.job_started("LeakJob", "l", t, None);
            kept += if window == 49 && i == 0 {
                700.0 * MB
            } else {
                3.0 * MB
            };
            a.job_finished(leak, t + 10 * MS, None);
            t += 20 * MS;
        }
        for _ in 0..pings {
            let ping = a.job_started("PingJob", "p", t, None);
            a.job_finished(ping, t + 10 * MS, None);
            t += 20 * MS;
        }
        let floor = (kept + (rng.unit() - 0.5) * 0.2 * MB) as u64;
        a.reclaim_started(floor, t);
        a.reclaim_finished(floor, floor, t + MS, (t + MS, t + MS));
        t += 2 * MS;
    }
    let rows = a.report();
    assert_eq!(rows[0].class, "LeakJob", "{rows:?}");
    assert!(within(rows[0].retained, 3.0 * MB, 0.25), "{rows:?}");
    assert_eq!(rows[1].retained, Some(0), "{rows:?}");
}

/// The real-process spec's end: the three classes handed out in turn (the leaker and the churner start in the
/// same numbers but in a few windows), then one leaker that keeps 700 MB alone in the last window.
#[test]
fn a_last_huge_leaker_after_a_round_robin_minute_is_still_the_leaker() {
    let mut rng = Rng(5);
    let mut a = Attribution::new();
    let mut kept = 100.0 * MB;
    let mut t = 0;
    a.reclaim_started(kept as u64, t);
    a.reclaim_finished(kept as u64, kept as u64, t, (t, t));
    let mut order = ["StringLeakJob", "StringChurnJob", "PingJob"]
        .iter()
        .cycle();
    for window in 0..45 {
        let starts = if window == 44 { 1 } else { 15 + rng.below(3) };
        for _ in 0..starts {
            let class = if window == 44 {
                "StringLeakJob"
            } else {
                order.next().unwrap()
            };
            let job = a.job_started(class, "j", t, None);
            if class == "StringLeakJob" {
                kept += if window == 44 { 700.0 * MB } else { 3.0 * MB };
            }
            a.job_finished(job, t + 5 * MS, None);
            t += 10 * MS;
        }
        let floor = (kept + (rng.unit() - 0.5) * 0.2 * MB) as u64;
        a.reclaim_started(floor, t);
        a.reclaim_finished(floor, floor, t + MS, (t + MS, t + MS));
        t += 2 * MS;
    }
    let rows = a.report();
    assert_eq!(rows[0].class, "StringLeakJob", "{rows:?}");
    assert!(rows[1..].iter().all(|r| r.retained == Some(0)), "{rows:?}");
}

/// A class whose jobs started in fewer than MIN_WINDOWS windows has no retained figure yet, however its one
/// window changed (a job that held 230 MB when the floor came, say).
#[test]
fn a_class_seen_in_one_window_has_no_retained_figure_yet() {
    let mut rng = Rng(9);
    let mut a = Attribution::new();
    let mut kept = 100.0 * MB;
    let mut t = 0;
    a.reclaim_started(kept as u64, t);
    a.reclaim_finished(kept as u64, kept as u64, t, (t, t));
    let mut garbage = None;
    for window in 0..30 {
        for _ in 0..(2 + rng.below(4)) {
            let job = a.job_started("LeakJob", "l", t, None);
            kept += 2.0 * MB;
            a.job_finished(job, t + 5 * MS, None);
            t += 10 * MS;
        }
        let held = if window == 10 {
            garbage = Some(a.job_started("GarbageJob", "g", t, None));
            230.0 * MB
        } else {
            if let Some(token) = garbage.take() {
                a.job_finished(token, t, None);
            }
            0.0
        };
        let floor = (kept + held + (rng.unit() - 0.5) * 0.1 * MB) as u64;
        a.reclaim_started(floor, t);
        a.reclaim_finished(floor, floor, t + MS, (t + MS, t + MS));
        t += 2 * MS;
    }
    let rows = a.report();
    let garbage = rows.iter().find(|r| r.class == "GarbageJob");
    assert!(
        garbage.is_none() || garbage.is_some_and(|g| g.retained.is_none()),
        "{rows:?}"
    );
    assert_eq!(rows[0].class, "LeakJob", "{rows:?}");
}

/// On a loaded machine a reclaim's purge and reading take hundreds of milliseconds after its GC, and jobs end
/// meanwhile: their working sets are garbage still in the floor. The e2e ranking's workload (a leaker keeping
/// 2 MB at its start, a churner holding 48 MB for 1.5 s, a light job) at concurrency 5, a reclaim every 0.5 s
/// taking 0.4 s: counted as not in flight, those jobs had made the churner the leader.
#[test]
fn jobs_that_end_during_a_slow_reclaim_are_in_flight_at_its_floor() {
    let kind = |name, keeps, holds, run_ms, weight| Kind {
        name,
        keeps,
        churns: 0.0,
        holds,
        run_ms,
        weight,
    };
    let kinds = [
        kind("LeakJob", 2.0 * MB, 0.0, 500, 5),
        kind("ChurnJob", 0.0, 48.0 * MB, 1500, 2),
        kind("LightJob", 0.0, 0.0, 100, 15),
    ];
    let mut right = 0;
    for seed in 0..10u64 {
        let run = Run {
            reclaim_ms: 500,
            reclaim_takes_ms: 400,
            keep_at_start: true,
            ..Run::minute(5, 40 + seed)
        };
        let rows = simulate_with(&kinds, run);
        assert_eq!(rows[0].class, "LeakJob", "seed {seed}: {rows:?}");
        if within(rows[0].retained, 2.0 * MB, 0.25)
            && rows[1..].iter().all(|r| r.retained == Some(0))
        {
            right += 1;
        }
    }
    assert!(right >= 9, "{right} of 10");
}

/// Issue 19's workload as the real-process spec runs it: a queue that hands the classes out in turn, every job
/// of a class running the same time, what the leaker keeps allocated 1 ms after its start. Few windows hold the
/// leaker and the churner in different numbers, and in those a boundary fell between two starts close
/// together: a job that started just before the floor had not allocated yet, and the split between the two
/// classes rests on those few windows. Another class never leads, at any concurrency from 1 to 25; the leaker
/// is right in at least 9 runs of 10 at the spec's concurrency (5), and in 225 of the 250 (228 measured; at 19,
/// 22 and 25 about half the runs stay at 0, where few floors hold the classes in different numbers).
#[test]
fn a_steady_queue_that_hands_the_classes_out_in_turn_never_names_another_class() {
    let mut right = 0;
    for concurrency in 1..=25usize {
        let outcomes: Vec<Outcome> = (0..10u64)
            .map(|seed| {
                let run = Run {
                    round_robin: true,
                    keep_at_start: true,
                    steady: true,
                    ..Run::minute(concurrency, 700 + seed * 13 + concurrency as u64)
                };
                let mut kinds = issue_kinds(0.0);
                // Each sleeps 0.3 s; the churner builds its strings for about 40 ms more.
                kinds[1].run_ms = 340;
                outcome(&simulate_with(&kinds, run))
            })
            .collect();
        let count = |o: Outcome| outcomes.iter().filter(|x| **x == o).count();
        assert_eq!(count(Outcome::Wrong), 0, "c={concurrency}: {outcomes:?}");
        if concurrency == 5 {
            assert!(count(Outcome::Right) >= 9, "c={concurrency}: {outcomes:?}");
        }
        right += count(Outcome::Right);
    }
    assert!(right >= 225, "{right} of 250 right");
}

/// The retained windows of a real Sidekiq 6.4 process on glibc (the minute spec, classes handed out in turn,
/// seed 33, at its last report): the leaker (column 0) keeps about 3.2 MB a job, the churner (2) nothing, and
/// the light job (4) comes out at -75 KB a job, 5 standard errors below zero, without the in-flight columns (what
/// running jobs hold in the heap's bookkeeping, traded between classes). That sliver below zero, about 2% of
/// what the leaker kept, made the fit without in-flight columns "no explanation": the full one, in which the
/// in-flight counts are a linear function of the starts, was kept and every class fell silent at 43 MB standard
/// errors, although the leaker had been named for the 40 seconds before.
#[test]
fn a_sliver_below_zero_beside_the_leaker_does_not_silence_a_round_robin_minute() {
    let windows: &[(&[(usize, f64)], f64)] = &[
        (&[(4, 6.0), (0, 6.0), (2, 6.0)], 18977632.0),
        (&[(4, 5.0), (0, 5.0), (2, 5.0)], 15769440.0),
        (
            &[(1, -1.0), (5, 1.0), (4, 6.0), (0, 5.0), (2, 5.0)],
            15877680.0,
        ),
        (
            &[(5, -1.0), (1, 1.0), (0, 6.0), (2, 6.0), (4, 5.0)],
            19016448.0,
        ),
        (
            &[(5, 1.0), (3, -1.0), (0, 6.0), (4, 6.0), (2, 5.0)],
            18941008.0,
        ),
        (
            &[(5, -1.0), (3, 1.0), (2, 6.0), (4, 5.0), (0, 5.0)],
            15714416.0,
        ),
        (
            &[(1, -1.0), (5, 1.0), (4, 6.0), (0, 5.0), (2, 5.0)],
            15706992.0,
        ),
        (
            &[(5, -1.0), (1, 1.0), (0, 6.0), (2, 6.0), (4, 5.0)],
            19123552.0,
        ),
        (
            &[(1, -1.0), (5, 1.0), (4, 6.0), (0, 5.0), (2, 5.0)],
            15663824.0,
        ),
        (&[(0, 11.0), (2, 11.0), (4, 11.0)], 34777376.0),
        (
            &[(5, -1.0), (1, 1.0), (0, 6.0), (2, 6.0), (4, 5.0)],
            19049632.0,
        ),
        (&[(4, 5.0), (0, 5.0), (2, 5.0)], 15681280.0),
        (
            &[(5, 1.0), (1, -1.0), (4, 6.0), (0, 5.0), (2, 5.0)],
            15712128.0,
        ),
        (
            &[(5, -1.0), (1, 1.0), (0, 6.0), (2, 6.0), (4, 5.0)],
            19212032.0,
        ),
        (
            &[(3, -1.0), (5, 1.0), (4, 6.0), (0, 6.0), (2, 5.0)],
            18890656.0,
        ),
        (
            &[(3, 1.0), (5, -1.0), (2, 6.0), (4, 5.0), (0, 5.0)],
            15788464.0,
        ),
        (&[(4, 5.0), (0, 5.0), (2, 5.0)], 15799120.0),
        (
            &[(1, -1.0), (5, 1.0), (4, 6.0), (0, 5.0), (2, 5.0)],
            15729120.0,
        ),
        (
            &[(5, -1.0), (1, 1.0), (0, 6.0), (2, 6.0), (4, 5.0)],
            19192768.0,
        ),
        (
            &[(5, 1.0), (3, -1.0), (4, 6.0), (0, 6.0), (2, 5.0)],
            18694896.0,
        ),
        (&[(2, 5.0), (4, 5.0), (0, 5.0)], 15768480.0),
        (
            &[(1, -1.0), (3, 1.0), (2, 6.0), (4, 6.0), (0, 5.0)],
            15724240.0,
        ),
        (
            &[(5, -1.0), (1, 1.0), (0, 6.0), (2, 6.0), (4, 5.0)],
            19050176.0,
        ),
        (
            &[(5, 1.0), (1, -1.0), (4, 6.0), (0, 5.0), (2, 5.0)],
            15735376.0,
        ),
        (&[(0, 5.0), (2, 5.0), (4, 5.0)], 15801360.0),
        (
            &[(5, -1.0), (1, 1.0), (0, 12.0), (2, 12.0), (4, 11.0)],
            37925824.0,
        ),
        (&[(4, 5.0), (0, 5.0), (2, 5.0)], 15782720.0),
        (
            &[(1, -1.0), (5, 1.0), (4, 6.0), (0, 5.0), (2, 5.0)],
            16008736.0,
        ),
        (
            &[(5, -1.0), (1, 1.0), (0, 6.0), (2, 6.0), (4, 5.0)],
            18788480.0,
        ),
        (
            &[(5, 1.0), (3, -1.0), (4, 6.0), (0, 6.0), (2, 5.0)],
            18893184.0,
        ),
        (
            &[(5, -1.0), (3, 1.0), (2, 6.0), (4, 5.0), (0, 5.0)],
            15924512.0,
        ),
        (
            &[(1, -1.0), (5, 1.0), (4, 6.0), (0, 5.0), (2, 5.0)],
            15758896.0,
        ),
        (
            &[(5, -1.0), (1, 1.0), (0, 6.0), (2, 6.0), (4, 5.0)],
            19122416.0,
        ),
        (
            &[(5, 1.0), (1, -1.0), (4, 6.0), (0, 5.0), (2, 5.0)],
            15566144.0,
        ),
        (
            &[(3, -1.0), (1, 1.0), (0, 6.0), (2, 5.0), (4, 5.0)],
            19020192.0,
        ),
        (
            &[(5, -1.0), (3, 1.0), (2, 6.0), (4, 5.0), (0, 5.0)],
            15777664.0,
        ),
        (
            &[(1, -1.0), (5, 1.0), (4, 6.0), (0, 5.0), (2, 5.0)],
            15831792.0,
        ),
        (
            &[(1, 1.0), (5, -1.0), (0, 6.0), (2, 6.0), (4, 5.0)],
            18901824.0,
        ),
        (
            &[(1, -1.0), (5, 1.0), (4, 6.0), (0, 5.0), (2, 5.0)],
            15824912.0,
        ),
        (&[(0, 5.0), (2, 5.0), (4, 5.0)], 15725456.0),
        (
            &[(5, -1.0), (1, 1.0), (0, 6.0), (2, 6.0), (4, 5.0)],
            18995840.0,
        ),
        (
            &[(5, 1.0), (1, -1.0), (4, 6.0), (0, 5.0), (2, 5.0)],
            15685632.0,
        ),
        (&[(0, 11.0), (2, 11.0), (4, 11.0)], 34934624.0),
        (
            &[(1, 1.0), (5, -1.0), (0, 6.0), (2, 6.0), (4, 5.0)],
            18832432.0,
        ),
        (&[(4, 5.0), (0, 5.0), (2, 5.0)], 15837232.0),
        (
            &[(1, -1.0), (5, 1.0), (4, 6.0), (0, 5.0), (2, 5.0)],
            15700896.0,
        ),
        (
            &[(1, 1.0), (5, -1.0), (0, 6.0), (2, 6.0), (4, 5.0)],
            19112736.0,
        ),
        (
            &[(1, -1.0), (5, 1.0), (4, 6.0), (0, 5.0), (2, 5.0)],
            15682160.0,
        ),
        (
            &[(5, -1.0), (1, 1.0), (0, 6.0), (2, 6.0), (4, 5.0)],
            19068864.0,
        ),
        (&[(4, 5.0), (0, 5.0), (2, 5.0)], 15696688.0),
        (&[(4, 6.0), (0, 6.0), (2, 6.0)], 19035440.0),
        (&[(1, -2.0), (3, -2.0), (5, -1.0), (4, 1.0)], -22832.0),
    ];
    let mut normal = Normal::robust();
    for (x, y) in windows {
        normal.add(x, *y);
    }
    let fitted = normal.solve(&[vec![0], vec![2], vec![4]]);
    let leaker = fitted[0].map(|e| e.value);
    assert!(
        leaker.is_some_and(|v| (v - 3.2 * MB).abs() < 0.25 * 3.2 * MB),
        "{fitted:?}"
    );
    assert_eq!(fitted[1].map(|e| e.value), Some(0.0), "{fitted:?}");
    assert_eq!(fitted[2].map(|e| e.value), Some(0.0), "{fitted:?}");
}
