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
    let mut rng = Rng(seed);
    let mut a = Attribution::new();
    let total_weight: u64 = kinds.iter().map(|k| k.weight).sum();
    let mut slots: Vec<Option<Slot>> = (0..concurrency).map(|_| None).collect();
    let mut kept = 100.0 * MB;
    let mut garbage = 0.0;
    let step = MS;
    let end = seconds * 1000 * MS;
    let mut t = 0;
    let mut next_read = 0;
    let mut next_reclaim = reclaim_ms * MS;
    let mut jid = 0u64;
    while t < end {
        for slot in slots.iter_mut() {
            if slot.as_ref().is_some_and(|s| s.end <= t) {
                if let Some(s) = slot.take() {
                    a.job_finished(s.token, t, None);
                    garbage += s.held;
                }
            }
            if let Some(s) = slot {
                let share = step as f64 / (s.end - s.start).max(1) as f64;
                kept += s.kind.keeps * share;
                garbage += s.kind.churns * share;
            } else {
                let mut pick = rng.below(total_weight);
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
                let run = (kind.run_ms as f64 * (0.5 + rng.unit())) as u64 * MS;
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
        if t >= next_reclaim {
            a.reclaim_started(memory(&mut rng, kept, garbage), t);
            garbage = 0.0;
            t += 30 * MS; // the reclaim takes time; jobs go on meanwhile
            a.reclaim_finished(memory(&mut rng, kept, garbage), t);
            next_reclaim = t + reclaim_ms * MS;
            continue;
        }
        if t >= next_read {
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
        a.reclaim_finished((500.0 * MB) as u64 + i * 6 * MB as u64, t + 200 * MS);
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
    a.reclaim_finished(kept as u64, t);
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
        a.reclaim_finished(
            (kept + caught + (rng.unit() - 0.5) * 0.2 * MB) as u64,
            t + MS,
        );
        t += 2 * MS;
    }
    let rows = a.report();
    assert_eq!(rows[0].class, "LeakJob", "{rows:?}");
    assert!(within(rows[0].retained, 2.0 * MB, 0.1), "{rows:?}");
    assert_eq!(rows[1].retained, Some(0), "{rows:?}");
}
