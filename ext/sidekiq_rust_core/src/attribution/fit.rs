//! The robust least-squares fit of the windows' changes on the jobs that ran in them: the normal equations grown
//! window by window, Huber's reweighting, the choice of the in-flight columns, and one estimate per group.

use std::collections::VecDeque;

use super::evidence::{critical, GROWTH_SIGNIFICANCE, MIN_BYTES, MIN_SHARE};
use super::linalg::{back_substitute, cholesky, forward_substitute, inverse};

/// Fitted windows a robust fit keeps (the retained series: one window per reclaim).
pub const MAX_HISTORY: usize = 2048;
/// The in-flight columns of a robust series stay when dropping them raises the residual sum of squares by more
/// than this many residual variances each: an effect of 5 standard errors a column.
const HOLDS_NEEDED: f64 = 25.0;
/// A window whose residual is beyond this many robust scales weighs nothing in a robust fit.
const OUTLIER: f64 = 50.0;
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
    pub(super) windows: u64,
    /// Per column, the windows it weighed in.
    column_windows: Vec<u64>,
    pub(super) history: Option<VecDeque<Observation>>,
    /// The odd columns (the retained series' "held while in flight") are kept only when the windows need them
    /// (see `Normal::final_fit`).
    select_holds: bool,
}

/// One fitted window: its weights by column, and its change.
type Observation = (Vec<(usize, f64)>, f64);

/// One group's estimate: the figure reported (0 when the windows cannot tell it from zero) and its standard
/// error, bytes per job.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Estimate {
    pub value: f64,
    pub standard_error: f64,
}

pub(super) struct Fit {
    pub(super) active: Vec<usize>,
    l: Vec<Vec<f64>>,
    pub(super) beta: Vec<f64>,
    sigma2: f64,
    /// The residual sum of squares (weighted, for a robust fit).
    rss: f64,
    /// The variance the standard errors use: `sigma2`, or for a robust fit the residuals' variance with each
    /// window's square capped at 3 robust scales, when smaller (one job far off the rest, say a leaker that kept
    /// 700 MB once, inflates `sigma2` until nothing can be told from zero).
    error_variance: f64,
    /// Windows minus columns in use.
    dof: u64,
    /// The weight of each kept window in a robust fit (empty for a plain one).
    pub(super) window_weights: Vec<f64>,
}

impl Normal {
    pub(super) fn robust() -> Self {
        Normal {
            history: Some(VecDeque::new()),
            select_holds: true,
            ..Normal::default()
        }
    }

    fn grow(&mut self, k: usize) {
        if k <= self.xty.len() {
            return;
        }
        while self.xty.len() < k {
            self.xty.push(0.0);
            self.column_windows.push(0);
            self.xtx.push(Vec::new());
        }
        for row in &mut self.xtx {
            row.resize(k, 0.0);
        }
    }

    pub(super) fn add(&mut self, weights: &[(usize, f64)], y: f64) {
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
            if wi != 0.0 {
                self.column_windows[i] += 1;
            }
            self.xty[i] += w * wi * y;
            for &(j, wj) in weights {
                self.xtx[i][j] += w * wi * wj;
            }
        }
        self.yy += w * y * y;
        self.windows += 1;
    }

    /// The windows a column weighed in (0 for a column never seen).
    pub fn windows_of(&self, column: usize) -> u64 {
        self.column_windows.get(column).copied().unwrap_or(0)
    }

    /// Least squares over the columns in use but `excluded` (held at 0); None when there are not more windows
    /// than columns.
    fn fit(&self, excluded: &[usize]) -> Option<Fit> {
        let active: Vec<usize> = (0..self.xty.len())
            .filter(|&i| self.xtx[i][i] > 0.0 && !excluded.contains(&i))
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
        let dof = self.windows - n as u64;
        let sigma2 = rss.max(0.0) / dof as f64;
        Some(Fit {
            active,
            l,
            beta,
            sigma2,
            rss: rss.max(0.0),
            error_variance: sigma2,
            dof,
            window_weights: Vec::new(),
        })
    }

    /// The plain fit, or for a robust series the fit after weighing down the windows far off it. A robust
    /// series with `select_holds` drops its odd columns (what a job holds while in flight) unless the windows need
    /// them: the rise in the residual sum of squares without them is above [`HOLDS_NEEDED`] residual variances a
    /// column (real working sets in flight rise it by 10^5 and more; a few hundred kB held in turn by 10 to 20). When a queue hands out the classes in
    /// turn, the in-flight counts are a linear function of the start counts, and the model with them cannot
    /// tell "A keeps 8 MB, B keeps none" from "both keep 4 MB and A holds some while it runs". A fit without
    /// them in which a class keeps clearly less than nothing (beyond its t test, and by at least [`MIN_SHARE`] of
    /// what the jobs of every class kept: less is the heap's bookkeeping) is no explanation: the full one is kept
    /// (and its standard errors say how little it knows: the figures stay at 0 rather than name a class wrongly).
    /// Likewise no job holds less than nothing while it runs: an in-flight column clearly below zero (the fit
    /// trading one class's keep against another's hold, as jobs handed out in turn allow) is held at 0.
    fn final_fit(&self) -> Option<Fit> {
        if self.history.is_none() {
            return self.fit(&[]);
        }
        let (full, negative_holds) = self.fit_without_negative_holds()?;
        if !self.select_holds {
            return Some(full);
        }
        let holds: Vec<usize> = full.active.iter().copied().filter(|c| c % 2 == 1).collect();
        if holds.is_empty() {
            return Some(full);
        }
        let all_holds: Vec<usize> = holds.iter().chain(&negative_holds).copied().collect();
        let Some(reduced) = self.robust_fit(&all_holds) else {
            return Some(full);
        };
        // The rise is measured with the full fit's weights: the fit without the in-flight columns weighs down
        // (or out) exactly the floors that a working set in flight lifted, and its own residuals would hide them.
        let Some(reduced_rss) = self
            .weighted(&full.window_weights)
            .fit(&all_holds)
            .map(|f| f.rss)
        else {
            return Some(full);
        };
        let q = holds.len() as f64;
        let rise = (reduced_rss - full.rss) / full.sigma2.max(f64::MIN_POSITIVE);
        // A class that keeps clearly less than nothing is no explanation: the in-flight columns are needed (and
        // when they make the fit ambiguous, its standard errors say so and the figures stay at 0).
        // A class below zero by less than MIN_SHARE of what the jobs of every class kept (its figure times its
        // jobs) is the mirror of report's rule for a sliver above zero: the heap's bookkeeping of jobs in flight
        // that the in-flight columns would trade between classes (tens of KB a job beside a 3 MB leaker on a
        // queue that hands the classes out in turn), not a fit that explains nothing.
        let kept = |c: usize| {
            reduced
                .group(&[c])
                .map(|(b, e)| (b, e, b * self.jobs_in(c)))
        };
        let all_kept: f64 = reduced
            .active
            .iter()
            .filter_map(|&c| kept(c))
            .map(|(_, _, k)| k.max(0.0))
            .sum();
        let impossible = reduced.active.iter().any(|&c| {
            kept(c).is_some_and(|(b, e, k)| {
                b < -critical(reduced.dof) * e && -k >= MIN_SHARE * all_kept
            })
        });
        Some(if rise <= HOLDS_NEEDED * q && !impossible {
            reduced
        } else {
            full
        })
    }

    /// The robust fit with every in-flight column that comes out clearly below zero held at 0 (one at a time,
    /// the most negative first, refitting after each), and the columns held.
    fn fit_without_negative_holds(&self) -> Option<(Fit, Vec<usize>)> {
        let mut held = Vec::new();
        loop {
            let fit = self.robust_fit(&held)?;
            let threshold = critical(fit.dof);
            let most_negative = fit
                .active
                .iter()
                .filter(|&&c| c % 2 == 1)
                .filter_map(|&c| fit.group(&[c]).map(|(b, e)| (c, b, e)))
                .filter(|&(_, b, e)| b < -threshold * e)
                .min_by(|x, y| {
                    (x.1 / x.2.max(f64::MIN_POSITIVE))
                        .total_cmp(&(y.1 / y.2.max(f64::MIN_POSITIVE)))
                });
            match most_negative {
                Some((column, _, _)) if self.select_holds => held.push(column),
                _ => return Some((fit, held)),
            }
        }
    }

    /// The jobs a column counts over the kept windows (a per-job column: the jobs that started in them).
    fn jobs_in(&self, column: usize) -> f64 {
        self.history.as_ref().map_or(0.0, |history| {
            history
                .iter()
                .flat_map(|(x, _)| x.iter())
                .filter(|&&(c, _)| c == column)
                .map(|&(_, w)| w)
                .sum()
        })
    }

    /// The normal equations of the kept windows, each weighed by `weights`.
    fn weighted(&self, weights: &[f64]) -> Normal {
        let mut normal = Normal::default();
        if let Some(history) = &self.history {
            for ((x, y), &w) in history.iter().zip(weights) {
                normal.add_weighted(x, *y, w);
            }
        }
        normal
    }

    /// Huber's M-estimator over the kept windows, with the `excluded` columns held at 0 (the windows' weights in
    /// it: `Fit::window_weights`).
    fn robust_fit(&self, excluded: &[usize]) -> Option<Fit> {
        let history = self.history.as_ref()?;
        let mut weights = vec![1.0; history.len()];
        let mut fit = None;
        for _ in 0..ROBUST_ROUNDS {
            let normal = self.weighted(&weights);
            let mut current = normal.fit(excluded)?;
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
            let mut magnitudes: Vec<f64> = residuals.iter().map(|r| r.abs()).collect();
            magnitudes.sort_by(f64::total_cmp);
            let scale = 1.4826 * magnitudes[magnitudes.len() / 2];
            if scale > 0.0 {
                // Each window's squared residual counts up to (3 scales)^2: a window far off the rest weighs
                // like one just at the edge of the bulk, not like all the others together.
                let cap = (3.0 * scale).powi(2);
                let winsorized: f64 = residuals.iter().map(|r| (r * r).min(cap)).sum();
                let dof = (history.len() as f64 - current.active.len() as f64).max(1.0);
                current.error_variance = current.sigma2.min(winsorized / dof);
            }
            current.window_weights.clone_from(&weights);
            fit = Some(current);
            if scale <= 0.0 {
                break;
            }
            // Huber's weights, and none for a window so far off the rest (a job that kept 700 MB once, say) that
            // even its small weight would pull the fit along a direction the other windows hardly tell.
            weights = residuals
                .iter()
                .map(|r| {
                    if r.abs() > OUTLIER * scale {
                        0.0
                    } else {
                        (HUBER * scale / r.abs().max(f64::MIN_POSITIVE)).min(1.0)
                    }
                })
                .collect();
        }
        fit
    }

    /// One estimate per group of columns, the sum of its columns' coefficients (None: no column of the group
    /// was in a window, or there are not more windows than columns in use).
    pub fn solve(&self, groups: &[Vec<usize>]) -> Vec<Option<Estimate>> {
        let mut out = vec![None; groups.len()];
        let Some(fit) = self.final_fit() else {
            return out;
        };
        // The retained series (the leak signal, whose figure names a class) is tested at 3 standard errors with
        // Student's t; the growth series as before, at 2.
        let robust = self.history.is_some();
        let threshold = |dof| {
            if robust {
                critical(dof)
            } else {
                GROWTH_SIGNIFICANCE
            }
        };
        // Below zero is noise or the allocator giving back what others held: no job keeps less than nothing.
        let positive = |estimate: f64, error: f64, dof| {
            estimate > threshold(dof) * error && estimate >= MIN_BYTES
        };
        let mut inverse = None;
        for (slot, group) in out.iter_mut().zip(groups) {
            let Some((estimate, mut standard_error)) = fit.group(group) else {
                continue;
            };
            let mut value = if positive(estimate, standard_error, fit.dof) {
                estimate
            } else {
                0.0
            };
            // A figure that would be reported is tested again on its evidence (only those: it costs a pass over
            // the windows).
            if value > 0.0 && robust {
                let inverse = inverse.get_or_insert_with(|| fit.inverse());
                match self.evidence(&fit, inverse, group) {
                    // One window alone decides it: not known yet, however well it fits.
                    Some((error, _)) if error.is_infinite() => continue,
                    Some((error, windows)) => {
                        standard_error = standard_error.max(error);
                        // Resting on n windows, it is tested with at most n degrees of freedom.
                        let dof = fit.dof.min(windows.max(1.0) as u64);
                        if !positive(estimate, standard_error, dof) {
                            value = 0.0;
                        }
                    }
                    None => {}
                }
            }
            *slot = Some(Estimate {
                value,
                standard_error,
            });
        }
        out
    }
}

impl Fit {
    /// (X'WX)^-1 over the active columns, from the Cholesky factor.
    fn inverse(&self) -> Vec<Vec<f64>> {
        inverse(&self.l)
    }

    /// The sum of a group's coefficients and its standard error; None when no column of the group is active.
    fn group(&self, group: &[usize]) -> Option<(f64, f64)> {
        let mut pick = vec![0.0; self.active.len()];
        for column in group {
            if let Some(pos) = self.active.iter().position(|c| c == column) {
                pick[pos] = 1.0;
            }
        }
        if pick.iter().all(|&v| v == 0.0) {
            return None;
        }
        let estimate: f64 = pick.iter().zip(&self.beta).map(|(p, v)| p * v).sum();
        let z = forward_substitute(&self.l, &pick);
        let standard_error = (self.error_variance * z.iter().map(|v| v * v).sum::<f64>()).sqrt();
        Some((estimate, standard_error))
    }
}
