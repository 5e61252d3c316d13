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
//!   held from a job's start to its end) is not taken for a leak.
//!
//! A per-job figure the windows cannot tell from zero (within two standard errors), or below zero, is
//! reported as 0, and one without enough windows yet (no more windows than columns in use) as unknown.
//! **allocated** needs no fit: the allocator's per-thread counter read at a job's start and end gives each
//! job's own bytes.
//!
//! Time is a nanosecond count given by the caller, so tests replay any timeline.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};

/// Classes beyond this many share one column, [`OTHER`], so a job-name explosion cannot grow memory.
pub const MAX_CLASSES: usize = 200;
pub const OTHER: &str = "(other classes)";
/// Closed windows still waiting for a job that overlaps them; beyond this many the oldest is fitted as it is.
pub const MAX_PENDING: usize = 4096;
/// An estimate within this many standard errors of zero is reported as 0.
pub const SIGNIFICANCE: f64 = 2.0;
/// A reading closes a growth window only when the window is at least this old, so that most jobs fall in one
/// or two windows whenever in their run they allocate (a reclaim closes it whatever its age).
pub const MIN_WINDOW_NS: u64 = 500_000_000;

/// One finished class's figures, bytes per job.
#[derive(Debug, Clone, PartialEq)]
pub struct ClassFigures {
    pub class: String,
    pub jobs: u64,
    pub retained: Option<i64>,
    pub growth: Option<i64>,
    pub allocated: Option<i64>,
}

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

/// A jid kept inline (Sidekiq's are 24 characters; longer ones are cut at 32 bytes): no allocation per job.
#[derive(Debug, Clone, Copy)]
struct Jid {
    bytes: [u8; 32],
    len: u8,
}

impl Jid {
    fn new(jid: &str) -> Self {
        let mut end = jid.len().min(32);
        while !jid.is_char_boundary(end) {
            end -= 1;
        }
        let mut bytes = [0u8; 32];
        bytes[..end].copy_from_slice(&jid.as_bytes()[..end]);
        Jid {
            bytes,
            len: end as u8,
        }
    }

    fn as_str(&self) -> &str {
        std::str::from_utf8(&self.bytes[..self.len as usize]).unwrap_or("")
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
struct Window {
    /// Its place in the series: the jobs running when it closed started while fewer windows were closed.
    seq: u64,
    start: u64,
    end: u64,
    change: f64,
    observed: bool,
    weights: Vec<(usize, f64)>,
    /// Jobs that were running when it closed and have not finished yet.
    open: u32,
}

/// The column of a class's per-job figure.
fn per_job(class: usize) -> usize {
    2 * class
}

/// The class's second column: in the retained series the jobs in flight at the window's end minus those at
/// its start (what a running job holds); in the growth series the jobs that started in the window (what a job
/// allocates at its start rather than over its run).
fn second(class: usize) -> usize {
    2 * class + 1
}

fn add_weight(weights: &mut Vec<(usize, f64)>, class: usize, w: f64) {
    match weights.iter_mut().find(|(c, _)| *c == class) {
        Some((_, total)) => *total += w,
        None => weights.push((class, w)),
    }
}

/// Fitted windows a robust fit keeps (the retained series: one window per reclaim).
pub const MAX_HISTORY: usize = 2048;
/// Huber's tuning constant: residuals beyond this many robust standard deviations weigh less.
const HUBER: f64 = 1.345;
/// Rounds of reweighting of a robust fit.
const ROBUST_ROUNDS: usize = 8;

/// The normal equations of a least-squares fit without intercept, grown one column at a time. A robust one
/// also keeps its last MAX_HISTORY windows, so that windows far off the fit (a reclaim that caught a job in
/// the middle of allocating its working set) can be weighed down (Huber's M-estimator).
#[derive(Debug, Clone, Default)]
pub struct Normal {
    xtx: Vec<Vec<f64>>,
    xty: Vec<f64>,
    yy: f64,
    windows: u64,
    history: Option<VecDeque<Observation>>,
}

/// One fitted window: its weights by column, and its change.
type Observation = (Vec<(usize, f64)>, f64);

struct Fit {
    active: Vec<usize>,
    l: Vec<Vec<f64>>,
    beta: Vec<f64>,
    sigma2: f64,
}

impl Normal {
    fn robust() -> Self {
        Normal {
            history: Some(VecDeque::new()),
            ..Normal::default()
        }
    }

    fn grow(&mut self, k: usize) {
        if k <= self.xty.len() {
            return;
        }
        while self.xty.len() < k {
            self.xty.push(0.0);
            self.xtx.push(Vec::new());
        }
        for row in &mut self.xtx {
            row.resize(k, 0.0);
        }
    }

    fn add(&mut self, weights: &[(usize, f64)], y: f64) {
        if let Some(history) = &mut self.history {
            history.push_back((weights.to_vec(), y));
            if history.len() > MAX_HISTORY {
                history.pop_front();
            }
        }
        self.add_weighted(weights, y, 1.0);
    }

    fn add_weighted(&mut self, weights: &[(usize, f64)], y: f64, w: f64) {
        let k = weights.iter().map(|(c, _)| c + 1).max().unwrap_or(0);
        self.grow(k);
        for &(i, wi) in weights {
            self.xty[i] += w * wi * y;
            for &(j, wj) in weights {
                self.xtx[i][j] += w * wi * wj;
            }
        }
        self.yy += w * y * y;
        self.windows += 1;
    }

    /// Least squares over the columns in use; None when there are not more windows than columns.
    fn fit(&self) -> Option<Fit> {
        let active: Vec<usize> = (0..self.xty.len())
            .filter(|&i| self.xtx[i][i] > 0.0)
            .collect();
        let n = active.len();
        if n == 0 || self.windows <= n as u64 {
            return None;
        }
        let a: Vec<Vec<f64>> = active
            .iter()
            .map(|&i| active.iter().map(|&j| self.xtx[i][j]).collect())
            .collect();
        let b: Vec<f64> = active.iter().map(|&i| self.xty[i]).collect();
        let max_diag = (0..n).map(|i| a[i][i]).fold(0.0, f64::max);
        let l = cholesky(&a, max_diag * 1e-9)?;
        let beta = back_substitute(&l, &forward_substitute(&l, &b));
        // Residual sum of squares from the normal equations: y'y - 2 b'X'y + b'X'Xb.
        let mut rss = self.yy;
        for i in 0..n {
            rss -= 2.0 * beta[i] * b[i];
            for j in 0..n {
                rss += beta[i] * a[i][j] * beta[j];
            }
        }
        let sigma2 = rss.max(0.0) / (self.windows - n as u64) as f64;
        Some(Fit {
            active,
            l,
            beta,
            sigma2,
        })
    }

    /// The plain fit, or for a robust series the fit after weighing down the windows far off it.
    fn final_fit(&self) -> Option<Fit> {
        let Some(history) = &self.history else {
            return self.fit();
        };
        let mut weights = vec![1.0; history.len()];
        let mut fit = None;
        for _ in 0..ROBUST_ROUNDS {
            let mut normal = Normal::default();
            for ((x, y), &w) in history.iter().zip(&weights) {
                normal.add_weighted(x, *y, w);
            }
            let current = normal.fit()?;
            let coefficient = |column: usize| {
                current
                    .active
                    .iter()
                    .position(|&c| c == column)
                    .map_or(0.0, |p| current.beta[p])
            };
            let residuals: Vec<f64> = history
                .iter()
                .map(|(x, y)| y - x.iter().map(|&(c, w)| w * coefficient(c)).sum::<f64>())
                .collect();
            fit = Some(current);
            let mut magnitudes: Vec<f64> = residuals.iter().map(|r| r.abs()).collect();
            magnitudes.sort_by(f64::total_cmp);
            let scale = 1.4826 * magnitudes[magnitudes.len() / 2];
            if scale <= 0.0 {
                break;
            }
            weights = residuals
                .iter()
                .map(|r| (HUBER * scale / r.abs().max(f64::MIN_POSITIVE)).min(1.0))
                .collect();
        }
        fit
    }

    /// One estimate per group of columns, the sum of its columns' coefficients (None: no column of the group
    /// was in a window, or there are not more windows than columns in use).
    pub fn solve(&self, groups: &[Vec<usize>]) -> Vec<Option<f64>> {
        let mut out = vec![None; groups.len()];
        let Some(Fit {
            active,
            l,
            beta,
            sigma2,
        }) = self.final_fit()
        else {
            return out;
        };
        let n = active.len();
        for (slot, group) in out.iter_mut().zip(groups) {
            let mut pick = vec![0.0; n];
            for column in group {
                if let Some(pos) = active.iter().position(|c| c == column) {
                    pick[pos] = 1.0;
                }
            }
            if pick.iter().all(|&v| v == 0.0) {
                continue;
            }
            let estimate: f64 = pick.iter().zip(&beta).map(|(p, v)| p * v).sum();
            let z = forward_substitute(&l, &pick);
            let variance = sigma2 * z.iter().map(|v| v * v).sum::<f64>();
            let significant = estimate.abs() > SIGNIFICANCE * variance.sqrt();
            // Below zero is noise or the allocator giving back what others held: no job keeps less than nothing.
            *slot = Some(if significant { estimate.max(0.0) } else { 0.0 });
        }
        out
    }
}

/// Lower-triangular L with L L' = A + ridge I, or None when A is not positive definite.
fn cholesky(a: &[Vec<f64>], ridge: f64) -> Option<Vec<Vec<f64>>> {
    let n = a.len();
    let mut l = vec![vec![0.0; n]; n];
    for i in 0..n {
        for j in 0..=i {
            let dot: f64 = l[i][..j].iter().zip(&l[j][..j]).map(|(x, y)| x * y).sum();
            let sum = a[i][j] + if i == j { ridge } else { 0.0 } - dot;
            if i == j {
                if sum <= 0.0 {
                    return None;
                }
                l[i][i] = sum.sqrt();
            } else {
                l[i][j] = sum / l[j][j];
            }
        }
    }
    Some(l)
}

fn forward_substitute(l: &[Vec<f64>], b: &[f64]) -> Vec<f64> {
    let mut z = vec![0.0; b.len()];
    for i in 0..b.len() {
        let s: f64 = (0..i).map(|m| l[i][m] * z[m]).sum();
        z[i] = (b[i] - s) / l[i][i];
    }
    z
}

fn back_substitute(l: &[Vec<f64>], z: &[f64]) -> Vec<f64> {
    let n = z.len();
    let mut x = vec![0.0; n];
    for i in (0..n).rev() {
        let s: f64 = (i + 1..n).map(|m| l[m][i] * x[m]).sum();
        x[i] = (z[i] - s) / l[i][i];
    }
    x
}

/// One series of windows: the open one, the closed ones still waiting for a job, and the fit so far.
#[derive(Debug, Clone, Default)]
struct Series {
    /// Falls count as 0 (the growth series).
    clamp_falls: bool,
    /// The retained series: a job counts 1 in the window it started in, and the second columns count the jobs
    /// in flight at the window's ends. Otherwise (growth): a job is spread over its windows by run time, and
    /// the second columns count the jobs started in the window.
    in_flight_columns: bool,
    start: u64,
    base: Option<f64>,
    current: Vec<(usize, f64)>,
    pending: VecDeque<Window>,
    closed: u64,
    normal: Normal,
}

impl Series {
    fn new(clamp_falls: bool, in_flight_columns: bool) -> Self {
        Series {
            clamp_falls,
            in_flight_columns,
            normal: if in_flight_columns {
                Normal::robust()
            } else {
                Normal::default()
            },
            ..Series::default()
        }
    }

    /// Closes the open window at `memory`; `observed = false` drops it (the time a reclaim took).
    fn close(&mut self, memory: f64, now: u64, observed: bool, running: &[usize]) {
        let mut weights = std::mem::take(&mut self.current);
        if self.in_flight_columns {
            for &class in running {
                add_weight(&mut weights, second(class), 1.0);
                add_weight(&mut self.current, second(class), -1.0);
            }
        }
        let window = Window {
            seq: self.closed,
            start: self.start,
            end: now,
            change: self.base.map_or(0.0, |base| memory - base),
            observed: observed && self.base.is_some(),
            weights,
            open: running.len().min(u32::MAX as usize) as u32,
        };
        self.closed += 1;
        self.start = now;
        self.base = Some(memory);
        self.pending.push_back(window);
        self.settle();
    }

    /// Counts a finished job in the windows it ran in: in the growth series spread by run time (its second
    /// column: 1 in the window it started in); in the retained series 1 in the window it started in (what it
    /// keeps is usually allocated early, and a job still running at a reclaim is its second column's business).
    fn job_finished(&mut self, class: usize, start: u64, end: u64, closed_at_start: u64) {
        let start_column = if self.in_flight_columns {
            per_job(class)
        } else {
            second(class)
        };
        if self.closed == closed_at_start {
            add_weight(&mut self.current, start_column, 1.0);
        } else if let Some(window) = self.pending.iter_mut().find(|w| w.seq == closed_at_start) {
            add_weight(&mut window.weights, start_column, 1.0);
        }
        let spread = !self.in_flight_columns;
        let duration = end.saturating_sub(start).max(1) as f64;
        for window in self.pending.iter_mut().rev() {
            if window.seq < closed_at_start {
                break;
            }
            let overlap = window.end.min(end).saturating_sub(window.start.max(start));
            if spread && overlap > 0 {
                add_weight(
                    &mut window.weights,
                    per_job(class),
                    overlap as f64 / duration,
                );
            }
            window.open = window.open.saturating_sub(1);
        }
        let overlap = end.saturating_sub(self.start.max(start));
        let share = if end == start && start >= self.start {
            1.0
        } else {
            overlap as f64 / duration
        };
        if spread && share > 0.0 {
            add_weight(&mut self.current, per_job(class), share);
        }
        self.settle();
    }

    /// Fits the windows no running job overlaps any more (and the oldest beyond MAX_PENDING).
    fn settle(&mut self) {
        while let Some(front) = self.pending.front() {
            if front.open > 0 && self.pending.len() <= MAX_PENDING {
                break;
            }
            if let Some(window) = self.pending.pop_front() {
                if window.observed && !window.weights.is_empty() {
                    let change = if self.clamp_falls {
                        window.change.max(0.0)
                    } else {
                        window.change
                    };
                    self.normal.add(&window.weights, change);
                }
            }
        }
    }
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
}

impl Default for Attribution {
    fn default() -> Self {
        Self::new()
    }
}

/// What a report needs, copied out so that the fit can run without the caller's lock.
#[derive(Debug, Clone)]
pub struct Snapshot {
    names: Vec<String>,
    jobs: Vec<u64>,
    allocated: Vec<Option<i64>>,
    growth: Normal,
    retained: Normal,
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
        self.growth.close(memory as f64, now, true, &running);
    }

    /// A reclaim (GC + purge) starts; `memory` is read just before it.
    pub fn reclaim_started(&mut self, memory: u64, now: u64) {
        if !self.reclaiming {
            let running = self.running_classes();
            self.growth.close(memory as f64, now, true, &running);
        }
        self.reclaiming = true;
    }

    /// The reclaim is over; `memory` is the floor read just after it. What it gave back counts for no job.
    pub fn reclaim_finished(&mut self, memory: u64, now: u64) {
        let running = self.running_classes();
        self.growth.close(memory as f64, now, false, &running);
        self.retained.close(memory as f64, now, true, &running);
        self.reclaiming = false;
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

/// Orders rows: retained per job descending, then growth, then allocated (unknown last), then by name.
pub fn rank(rows: &mut [ClassFigures]) {
    fn key(v: Option<i64>) -> (bool, std::cmp::Reverse<i64>) {
        (v.is_none(), std::cmp::Reverse(v.unwrap_or(0)))
    }
    rows.sort_by(|a, b| {
        key(a.retained)
            .cmp(&key(b.retained))
            .then(key(a.growth).cmp(&key(b.growth)))
            .then(key(a.allocated).cmp(&key(b.allocated)))
            .then(a.class.cmp(&b.class))
    });
}

impl Snapshot {
    /// Fits both series and returns one row per class with a finished job, ranked by [`rank`].
    pub fn report(&self) -> Vec<ClassFigures> {
        let k = self.names.len();
        // Growth per job: the spread share plus the share of the window it started in; retained per job: the
        // per-job column alone (the other is what jobs in flight hold).
        let both: Vec<Vec<usize>> = (0..k).map(|c| vec![per_job(c), second(c)]).collect();
        let one: Vec<Vec<usize>> = (0..k).map(|c| vec![per_job(c)]).collect();
        let growth = self.growth.solve(&both);
        let retained = self.retained.solve(&one);
        let mut rows: Vec<ClassFigures> = (0..k)
            .filter(|&i| self.jobs[i] > 0)
            .map(|i| ClassFigures {
                class: self.names[i].clone(),
                jobs: self.jobs[i],
                retained: retained[i].map(|v| v.round() as i64),
                growth: growth[i].map(|v| v.round() as i64),
                allocated: self.allocated[i],
            })
            .collect();
        rank(&mut rows);
        rows
    }
}

#[cfg(test)]
mod tests {
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
    fn a_job_spread_over_windows_weighs_one_in_all() {
        let mut a = Attribution::new();
        const W: u64 = MIN_WINDOW_NS;
        a.reading(0, 0);
        let t = a.job_started("Long", "l", 0, None);
        a.reading(0, W);
        a.reading(0, 2 * W);
        a.job_finished(t, 4 * W, None);
        let pending: f64 = a
            .growth
            .pending
            .iter()
            .flat_map(|w| w.weights.iter().map(|(_, w)| w))
            .sum::<f64>()
            + a.growth.current.iter().map(|(_, w)| w).sum::<f64>();
        let fitted = a.growth.normal.windows;
        assert_eq!(fitted, 1); // the first window had no reading at its start
        assert!(a.growth.pending.is_empty());
        assert!((pending - 0.5).abs() < 1e-9, "{pending}");
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
    fn a_hung_job_cannot_hold_windows_forever() {
        let mut a = Attribution::new();
        a.job_started("Hung", "h", 0, None);
        for i in 0..(MAX_PENDING as u64 + 10) {
            a.reading(i, (i + 1) * MIN_WINDOW_NS);
        }
        assert_eq!(a.growth.pending.len(), MAX_PENDING);
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

    #[test]
    fn ranking_puts_unknown_last_and_breaks_ties_by_growth() {
        let f = |class: &str, retained, growth| ClassFigures {
            class: class.into(),
            jobs: 1,
            retained,
            growth,
            allocated: None,
        };
        let mut rows = vec![
            f("Unknown", None, Some(9)),
            f("Light", Some(0), Some(0)),
            f("Churn", Some(0), Some(500)),
            f("Leak", Some(6), Some(6)),
        ];
        rank(&mut rows);
        let names: Vec<&str> = rows.iter().map(|r| r.class.as_str()).collect();
        assert_eq!(names, ["Leak", "Churn", "Light", "Unknown"]);
    }
}
