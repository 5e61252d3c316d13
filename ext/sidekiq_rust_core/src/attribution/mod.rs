//! Which job class grew the memory, told truthfully under concurrency.
//!
//! The memory readings cut time into windows. A window's change is attributed to the jobs that ran in it, and
//! the per-class figures are the least-squares fit of `change = sum over classes of weight * per_job` over
//! all windows (each job weighs 1 in all). Two series of windows:
//!
//! - **growth**: between readings at least [`MIN_WINDOW_NS`] apart. A job weighs in each window the share of
//!   its run time that fell in it, and a second column per class counts the jobs that started in the window;
//!   growth per job is the sum of both (what a job allocates over its run, and at its start). A fall is the
//!   allocator giving memory back, never a job's shrinkage: it counts as 0. The time a reclaim takes is no
//!   window at all.
//! - **retained**: between the readings after consecutive reclaims (GC + purge), the floors: what stays
//!   after a reclaim is the leak signal. A job weighs 1 in the window it started in. A job still running at a
//!   reclaim holds its working set in that floor and gives it back later: the second column counts the jobs
//!   of the class in flight at the window's end minus those at its start, so that a working set (taken as
//!   held from a job's start to its end) is not taken for a leak. A job that ended after the reclaim's GC but
//!   before its floor was read counts as in flight at that floor: its working set is garbage the GC has not
//!   seen yet (on a loaded machine the purge and the reading take long enough for jobs to end meanwhile).
//!
//!   A floor read within [`ALLOCATION_LAG_NS`] of a job's start closes no window (that job may not have
//!   allocated yet: what it keeps may be in this floor or the next), and the guard measures again soon.
//!
//! A per-job figure the windows cannot tell from zero (retained: within Student's t at the level of three
//! standard errors; growth: within two standard errors), or below zero, is reported as 0, and one without
//! enough windows yet (no more windows than columns in use; retained: fewer than 5 windows) as unknown. A
//! retained figure's standard error is at least its sandwich (HC3) one, and its t has at most as many degrees
//! of freedom as the windows it effectively rests on: when a queue hands the classes out in turn, the split
//! between two classes rests on the few windows that held them in different numbers, and one of those off by
//! a job's keep must not name the other class.
//! **allocated** needs no fit: the allocator's per-thread counter read at a job's start and end gives each
//! job's own bytes.
//!
//! Time is a nanosecond count given by the caller, so tests replay any timeline.

mod evidence;
mod fit;
mod jid;
mod linalg;
mod report;
#[cfg(test)]
mod timeline_tests;
mod window;

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

pub use evidence::{MIN_BYTES, SIGNIFICANCE};
pub use fit::{Estimate, Normal, MAX_HISTORY};
pub use report::{rank, ClassFigures, Snapshot, MIN_WINDOWS};
pub use window::{MAX_PENDING, MIN_WINDOW_NS};

use jid::Jid;
use window::Series;

/// A job that started this shortly before a floor was read may not have allocated yet, or only part (a leaker
/// keeping three 1 MB strings takes about a millisecond): whether what it keeps is in that floor or the next is
/// unknown, and the floor closes no retained window. Longer would skip many floors: the job threads that waited
/// through the GC start together while the purge runs, and by the floor they have allocated.
pub const ALLOCATION_LAG_NS: u64 = 2_000_000;

/// Classes beyond this many share one column, [`OTHER`], so a job-name explosion cannot grow memory.
pub const MAX_CLASSES: usize = 200;
pub const OTHER: &str = "(other classes)";

/// A job running now.
#[derive(Debug, Clone, PartialEq)]
pub struct InFlight {
    pub class: String,
    pub jid: String,
    pub running_ns: u64,
}

/// FNV-1a: class names are short, and SipHash's protection against chosen keys is not needed for them.
#[derive(Default)]
struct Fnv(u64);

impl Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        let mut h = if self.0 == 0 {
            0xcbf2_9ce4_8422_2325
        } else {
            self.0
        };
        for &b in bytes {
            h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
        self.0 = h;
    }
}

/// Running jobs sit in slots; a token is the slot's index in its low bits and a serial number above them.
const SLOT_BITS: u32 = 24;
const SLOT_MASK: u64 = (1 << SLOT_BITS) - 1;

#[derive(Debug, Clone)]
struct Running {
    token: u64,
    class: usize,
    jid: Jid,
    start: u64,
    allocated: Option<u64>,
    /// How many windows each series had closed when it started: [growth, retained].
    closed: [u64; 2],
}

#[derive(Debug, Clone, Default)]
struct ClassTotals {
    jobs: u64,
    allocated: u128,
    allocated_jobs: u64,
}

/// Per-class attribution of one process's memory.
#[derive(Debug, Clone)]
pub struct Attribution {
    names: Vec<String>,
    index: HashMap<String, usize, BuildHasherDefault<Fnv>>,
    totals: Vec<ClassTotals>,
    slots: Vec<Option<Running>>,
    free: Vec<usize>,
    serial: u64,
    growth: Series,
    retained: Series,
    reclaiming: bool,
    /// (class, start) of the jobs that ended during the reclaim under way: after its GC, so that what they held
    /// is still in its floor.
    ended_while_reclaiming: Vec<(usize, u64)>,
}

impl Default for Attribution {
    fn default() -> Self {
        Self::new()
    }
}

impl Attribution {
    pub fn new() -> Self {
        Attribution {
            names: Vec::new(),
            index: HashMap::default(),
            totals: Vec::new(),
            slots: Vec::new(),
            free: Vec::new(),
            serial: 0,
            growth: Series::new(true, false),
            retained: Series::new(false, true),
            reclaiming: false,
            ended_while_reclaiming: Vec::new(),
        }
    }

    fn class_index(&mut self, class: &str) -> usize {
        if let Some(&i) = self.index.get(class) {
            return i;
        }
        let name = if self.names.len() >= MAX_CLASSES {
            OTHER
        } else {
            class
        };
        if let Some(&i) = self.index.get(name) {
            return i;
        }
        self.names.push(name.to_string());
        self.totals.push(ClassTotals::default());
        self.index.insert(name.to_string(), self.names.len() - 1);
        self.names.len() - 1
    }

    /// A job starts; returns its token for `job_finished`. `allocated`: the thread's allocation counter.
    pub fn job_started(&mut self, class: &str, jid: &str, now: u64, allocated: Option<u64>) -> u64 {
        let class = self.class_index(class);
        let slot = self.free.pop().unwrap_or_else(|| {
            self.slots.push(None);
            self.slots.len() - 1
        });
        self.serial += 1;
        let token = (self.serial << SLOT_BITS) | (slot as u64 & SLOT_MASK);
        self.slots[slot] = Some(Running {
            token,
            class,
            jid: Jid::new(jid),
            start: now,
            allocated,
            closed: [self.growth.closed, self.retained.closed],
        });
        token
    }

    /// A job ends (an unknown token is ignored). `allocated`: the same thread's counter, now.
    pub fn job_finished(&mut self, token: u64, now: u64, allocated: Option<u64>) {
        let slot = (token & SLOT_MASK) as usize;
        let Some(entry) = self.slots.get_mut(slot) else {
            return;
        };
        if entry.as_ref().is_none_or(|r| r.token != token) {
            return;
        }
        let Some(job) = entry.take() else {
            return;
        };
        self.free.push(slot);
        if self.reclaiming && self.ended_while_reclaiming.len() < MAX_PENDING {
            self.ended_while_reclaiming.push((job.class, job.start));
        }
        let totals = &mut self.totals[job.class];
        totals.jobs += 1;
        if let (Some(before), Some(after)) = (job.allocated, allocated) {
            totals.allocated += u128::from(after.wrapping_sub(before));
            totals.allocated_jobs += 1;
        }
        self.growth
            .job_finished(job.class, job.start, now, job.closed[0]);
        self.retained
            .job_finished(job.class, job.start, now, job.closed[1]);
    }

    fn running_classes(&self) -> Vec<usize> {
        self.slots.iter().flatten().map(|r| r.class).collect()
    }

    /// A memory reading (bytes): closes a growth window.
    pub fn reading(&mut self, memory: u64, now: u64) {
        if self.reclaiming || now.saturating_sub(self.growth.start) < MIN_WINDOW_NS {
            return;
        }
        let running = self.running_classes();
        self.growth.close(memory as f64, now, true, &running, &[]);
    }

    /// A reclaim (GC + purge) starts; `memory` is read just before it, and its GC runs right after (no job ends
    /// in between: the GC holds the GVL). A job that ends from now to `reclaim_finished` leaves what it held in
    /// the floor.
    pub fn reclaim_started(&mut self, memory: u64, now: u64) {
        if !self.reclaiming {
            let running = self.running_classes();
            self.growth.close(memory as f64, now, true, &running, &[]);
        }
        self.reclaiming = true;
        self.ended_while_reclaiming.clear();
    }

    /// The reclaim is over; `memory` is read just after it (what it gave back counts for no job), and `floor`
    /// is the retained series' reading: the allocator's bytes in use after the GC where it tells them (unlike
    /// RSS they do not hide a leak in memory the allocator had kept free), else `memory`. Every floor of one
    /// Attribution must be the same kind of reading. `read` is when the floor was read (from, to: it is read
    /// without the GVL, and jobs go on): a job that started after it counts in the next window; when one started
    /// while it was read, what that job allocated may or may not be in the floor, so the floor closes no
    /// retained window (the open one runs on to the next floor); so does one read within [`ALLOCATION_LAG_NS`]
    /// of a job's start. Returns whether it closed one (when not, the guard measures again soon).
    pub fn reclaim_finished(
        &mut self,
        memory: u64,
        floor: u64,
        now: u64,
        read: (u64, u64),
    ) -> bool {
        let running = self.running_classes();
        self.growth.close(memory as f64, now, false, &running, &[]);
        self.reclaiming = false;
        let ended = std::mem::take(&mut self.ended_while_reclaiming);
        let (from, to) = read;
        let jobs = || self.slots.iter().flatten();
        let during_read =
            |start: u64| start.saturating_add(ALLOCATION_LAG_NS) >= from && start <= to;
        if jobs().any(|r| during_read(r.start))
            || ended.iter().any(|&(_, start)| during_read(start))
        {
            return false;
        }
        let at_floor: Vec<usize> = jobs().filter(|r| r.start < from).map(|r| r.class).collect();
        // A job that ended after the GC left its working set in the floor (only the next GC frees it).
        let held: Vec<usize> = ended
            .iter()
            .filter(|&&(_, start)| start < from)
            .map(|&(class, _)| class)
            .collect();
        self.retained
            .close(floor as f64, now, true, &at_floor, &held);
        let closed = self.retained.closed;
        for job in self.slots.iter_mut().flatten() {
            if job.start > to {
                job.closed[1] = closed;
            }
        }
        true
    }

    /// The jobs running now, longest first.
    pub fn in_flight(&self, now: u64) -> Vec<InFlight> {
        let mut jobs: Vec<InFlight> = self
            .slots
            .iter()
            .flatten()
            .map(|r| InFlight {
                class: self.names[r.class].clone(),
                jid: r.jid.as_str().to_string(),
                running_ns: now.saturating_sub(r.start),
            })
            .collect();
        jobs.sort_by(|a, b| b.running_ns.cmp(&a.running_ns).then(a.jid.cmp(&b.jid)));
        jobs
    }

    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            names: self.names.clone(),
            jobs: self.totals.iter().map(|t| t.jobs).collect(),
            allocated: self
                .totals
                .iter()
                .map(|t| {
                    (t.allocated_jobs > 0)
                        .then(|| (t.allocated / u128::from(t.allocated_jobs)) as i64)
                })
                .collect(),
            growth: self.growth.normal.clone(),
            retained: self.retained.normal.clone(),
        }
    }

    /// Every class with a finished job, ranked (see [`Snapshot::report`]).
    pub fn report(&self) -> Vec<ClassFigures> {
        self.snapshot().report()
    }

    pub fn clear(&mut self) {
        *self = Attribution::new();
    }
}
#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    #[test]
    fn unknown_until_more_windows_than_classes() {
        let mut a = Attribution::new();
        let t = a.job_started("A", "1", 0, None);
        a.job_finished(t, 10, None);
        let rows = a.report();
        assert_eq!(rows[0].jobs, 1);
        assert_eq!(rows[0].retained, None);
        assert_eq!(rows[0].growth, None);
        assert_eq!(rows[0].allocated, None);
    }

    #[test]
    fn allocated_is_the_mean_of_the_counter_deltas() {
        let mut a = Attribution::new();
        for (i, bytes) in [100u64, 300, 200].into_iter().enumerate() {
            let base = 1_000_000 * i as u64;
            let t = a.job_started("Alloc", "j", 0, Some(base));
            a.job_finished(t, 5, Some(base + bytes));
        }
        let t = a.job_started("Alloc", "j", 0, None);
        a.job_finished(t, 5, Some(7));
        let rows = a.report();
        assert_eq!(rows[0].jobs, 4);
        assert_eq!(rows[0].allocated, Some(200));
    }

    #[test]
    fn in_flight_lists_running_jobs_longest_first() {
        let mut a = Attribution::new();
        a.job_started("Slow", "s1", 0, None);
        let quick = a.job_started("Quick", "q1", 5 * MS, None);
        a.job_started("Mid", "m1", 2 * MS, None);
        a.job_finished(quick, 6 * MS, None);
        let jobs = a.in_flight(10 * MS);
        assert_eq!(
            jobs,
            vec![
                InFlight {
                    class: "Slow".into(),
                    jid: "s1".into(),
                    running_ns: 10 * MS
                },
                InFlight {
                    class: "Mid".into(),
                    jid: "m1".into(),
                    running_ns: 8 * MS
                },
            ]
        );
    }

    #[test]
    fn a_stale_or_unknown_token_is_ignored_and_long_jids_are_cut() {
        let mut a = Attribution::new();
        let first = a.job_started("A", "j1", 0, None);
        a.job_finished(first, 1, None);
        let second = a.job_started("B", &"x".repeat(40), 2, None);
        a.job_finished(first, 3, None); // the same slot, another job now
        a.job_finished(12345, 3, None);
        let jobs = a.in_flight(5);
        assert_eq!(jobs.len(), 1);
        assert_eq!(jobs[0].jid, "x".repeat(32));
        a.job_finished(second, 6, None);
        assert!(a.in_flight(7).is_empty());
        assert_eq!(a.report().iter().map(|r| r.jobs).sum::<u64>(), 2);
    }

    #[test]
    fn a_floor_read_while_a_job_started_closes_no_retained_window() {
        let mut a = Attribution::new();
        a.reclaim_started(0, 0);
        a.reclaim_finished(0, 0, 1, (0, 1));
        let closed = a.retained.closed;
        a.reclaim_started(0, 10);
        let during = a.job_started("LeakJob", "l", 11, None); // while the floor is read, 10 to 12
        a.reclaim_finished(0, 5, 13, (10, 12));
        assert_eq!(a.retained.closed, closed);
        a.job_finished(during, 14, None);
        a.reclaim_started(0, 20);
        let after = a.job_started("LeakJob", "l2", 23, None); // after the reading, before the GVL came back
        a.reclaim_finished(0, 5, 24, (20, 22));
        assert_eq!(a.retained.closed, closed + 1);
        // It counts in the next window: the one just closed holds only the job that started during the last read.
        a.job_finished(after, 25, None);
        assert_eq!(a.retained.current.iter().map(|(_, w)| w).sum::<f64>(), 1.0);
    }

    #[test]
    fn a_floor_read_just_after_a_job_started_closes_no_window_and_says_so() {
        let mut a = Attribution::new();
        a.reclaim_started(0, 0);
        assert!(a.reclaim_finished(0, 0, 10 * MS, (10 * MS, 10 * MS)));
        let closed = a.retained.closed;
        a.reclaim_started(0, 90 * MS);
        // Started during the purge, 1 ms before the floor was read: it may not have allocated yet.
        a.job_started("LeakJob", "l", 99 * MS, None);
        assert!(!a.reclaim_finished(0, 3, 101 * MS, (100 * MS, 101 * MS)));
        assert_eq!(a.retained.closed, closed);
        // 30 ms later it has: the next floor closes the window, with the job in it.
        a.reclaim_started(0, 130 * MS);
        assert!(a.reclaim_finished(0, 3, 131 * MS, (130 * MS, 131 * MS)));
        assert_eq!(a.retained.closed, closed + 1);
    }

    #[test]
    fn a_job_that_ends_after_the_gc_is_in_flight_at_the_floor() {
        let mut a = Attribution::new();
        a.reclaim_started(0, 0);
        a.reclaim_finished(0, 0, 10 * MS, (10 * MS, 10 * MS));
        let churn = a.job_started("ChurnJob", "c", 20 * MS, None);
        a.reclaim_started(0, 100 * MS);
        a.job_finished(churn, 110 * MS, None); // during the purge: what it held is in the floor
        a.reclaim_finished(0, 48, 130 * MS, (120 * MS, 130 * MS));
        // The window closed with the job started in it and in flight at its end; the next starts at -1.
        assert_eq!(a.retained.normal.windows, 1);
        assert_eq!(a.retained.current, vec![(window::second(0), -1.0)]);
        // Ended before the next reclaim's GC: not held at that floor.
        a.reclaim_started(0, 200 * MS);
        a.reclaim_finished(0, 0, 210 * MS, (200 * MS, 210 * MS));
        assert_eq!(a.retained.normal.windows, 2);
        assert!(a.retained.current.is_empty());
    }

    #[test]
    fn a_flood_of_class_names_is_bounded() {
        let mut a = Attribution::new();
        for i in 0..(MAX_CLASSES + 50) {
            let t = a.job_started(&format!("Job{i}"), "j", 0, None);
            a.job_finished(t, 1, None);
        }
        let rows = a.report();
        assert_eq!(rows.len(), MAX_CLASSES + 1);
        assert!(rows.iter().any(|r| r.class == OTHER && r.jobs == 50));
    }
}
