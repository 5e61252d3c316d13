//! The windows the memory readings cut time into, and the series they form.

use std::collections::VecDeque;

use super::fit::Normal;

/// Closed windows still waiting for a job that overlaps them; beyond this many the oldest is fitted as it is.
pub const MAX_PENDING: usize = 4096;
/// A reading closes a growth window only when the window is at least this old, so that most jobs fall in one
/// or two windows whenever in their run they allocate (a reclaim closes it whatever its age).
pub const MIN_WINDOW_NS: u64 = 500_000_000;

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
pub(super) fn per_job(class: usize) -> usize {
    2 * class
}

/// The class's second column: in the retained series the jobs in flight at the window's end minus those at
/// its start (what a running job holds); in the growth series the jobs that started in the window (what a job
/// allocates at its start rather than over its run).
pub(super) fn second(class: usize) -> usize {
    2 * class + 1
}

fn add_weight(weights: &mut Vec<(usize, f64)>, class: usize, w: f64) {
    match weights.iter_mut().find(|(c, _)| *c == class) {
        Some((_, total)) => *total += w,
        None => weights.push((class, w)),
    }
}

/// One series of windows: the open one, the closed ones still waiting for a job, and the fit so far.
#[derive(Debug, Clone, Default)]
pub(super) struct Series {
    /// Falls count as 0 (the growth series).
    clamp_falls: bool,
    /// The retained series: a job counts 1 in the window it started in, and the second columns count the jobs
    /// in flight at the window's ends. Otherwise (growth): a job is spread over its windows by run time, and
    /// the second columns count the jobs started in the window.
    in_flight_columns: bool,
    pub(super) start: u64,
    base: Option<f64>,
    pub(super) current: Vec<(usize, f64)>,
    pending: VecDeque<Window>,
    pub(super) closed: u64,
    pub(super) normal: Normal,
}

impl Series {
    pub(super) fn new(clamp_falls: bool, in_flight_columns: bool) -> Self {
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

    /// Closes the open window at `memory`; `observed = false` drops it (the time a reclaim took). `running`: the
    /// classes of the jobs running across its end; `done_but_held`: of jobs that have ended but whose working
    /// set is still in `memory` (the retained series: they ended after the reclaim's GC), counted in flight.
    pub(super) fn close(
        &mut self,
        memory: f64,
        now: u64,
        observed: bool,
        running: &[usize],
        done_but_held: &[usize],
    ) {
        let mut weights = std::mem::take(&mut self.current);
        if self.in_flight_columns {
            for &class in running.iter().chain(done_but_held) {
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
    pub(super) fn job_finished(
        &mut self,
        class: usize,
        start: u64,
        end: u64,
        closed_at_start: u64,
    ) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attribution::Attribution;

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
    fn a_hung_job_cannot_hold_windows_forever() {
        let mut a = Attribution::new();
        a.job_started("Hung", "h", 0, None);
        for i in 0..(MAX_PENDING as u64 + 10) {
            a.reading(i, (i + 1) * MIN_WINDOW_NS);
        }
        assert_eq!(a.growth.pending.len(), MAX_PENDING);
    }
}
