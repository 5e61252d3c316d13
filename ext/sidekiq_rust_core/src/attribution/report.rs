//! The per-class figures: fitting both series of a snapshot and ranking the rows.

use super::fit::{Estimate, Normal};

/// A class's retained figure is unknown until its jobs started in this many retained windows: with one, its
/// figure is that window's change whatever it was, and no standard error can say otherwise.
pub const MIN_WINDOWS: u64 = 5;
use super::window::{per_job, second};

/// One finished class's figures, bytes per job.
#[derive(Debug, Clone, PartialEq)]
pub struct ClassFigures {
    pub class: String,
    pub jobs: u64,
    pub retained: Option<i64>,
    pub growth: Option<i64>,
    pub allocated: Option<i64>,
    /// The standard error of `retained` (bytes per job; None while `retained` is unknown): how far to trust it.
    pub retained_error: Option<i64>,
    /// Retained windows (between two measuring reclaims) in which a job of the class started.
    pub windows: u64,
}

/// What a report needs, copied out so that the fit can run without the caller's lock.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub(super) names: Vec<String>,
    pub(super) jobs: Vec<u64>,
    pub(super) allocated: Vec<Option<i64>>,
    pub(super) growth: Normal,
    pub(super) retained: Normal,
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
        let value = |e: &Option<Estimate>| e.map(|e| e.value.round() as i64);
        let growth = self.growth.solve(&both);
        let mut retained = self.retained.solve(&one);
        for (i, estimate) in retained.iter_mut().enumerate() {
            if self.retained.windows_of(per_job(i)) < MIN_WINDOWS {
                *estimate = None;
            }
        }
        let mut rows: Vec<ClassFigures> = (0..k)
            .filter(|&i| self.jobs[i] > 0)
            .map(|i| ClassFigures {
                class: self.names[i].clone(),
                jobs: self.jobs[i],
                retained: value(&retained[i]),
                growth: value(&growth[i]),
                allocated: self.allocated[i],
                retained_error: retained[i].map(|e| e.standard_error.round() as i64),
                windows: self.retained.windows_of(per_job(i)),
            })
            .collect();
        rank(&mut rows);
        rows
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranking_puts_unknown_last_and_breaks_ties_by_growth() {
        let f = |class: &str, retained, growth| ClassFigures {
            class: class.into(),
            jobs: 1,
            retained,
            growth,
            allocated: None,
            retained_error: None,
            windows: 0,
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
