//! The robust least-squares fit of the windows' changes on the jobs that ran in them.

use std::collections::VecDeque;

/// An estimate within this many standard errors of zero is reported as 0 (3: with a handful of classes, a class
/// that keeps nothing is still reported as 0 in far more than 9 fits of 10), once there are many more windows
/// than columns; with few, Student's t quantile of the same level (two-sided 0.27%), see [`critical`].
pub const SIGNIFICANCE: f64 = 3.0;
/// The growth series' figures (RSS growth, the bloat signal) are reported as 0 within this many standard errors.
pub const GROWTH_SIGNIFICANCE: f64 = 2.0;
/// Student's t quantiles at 1 - 0.00135 for 1 to 10 degrees of freedom.
const T_QUANTILES: [f64; 10] = [235.8, 19.21, 9.22, 6.62, 5.51, 4.90, 4.53, 4.28, 4.09, 3.96];
/// An estimate below this many bytes per job is reported as 0 whatever its standard error (a few Ruby objects
/// a job leaves in a cache are not what a restart is explained by).
pub const MIN_BYTES: f64 = 1024.0;
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
    history: Option<VecDeque<Observation>>,
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

struct Fit {
    active: Vec<usize>,
    l: Vec<Vec<f64>>,
    beta: Vec<f64>,
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
    window_weights: Vec<f64>,
}

/// How many standard errors from zero an estimate must be with `dof` degrees of freedom: the table up to 10,
/// then the Cornish-Fisher expansion of t around [`SIGNIFICANCE`] (three terms: a few percent low at 11, closer
/// beyond).
pub fn critical(dof: u64) -> f64 {
    if dof == 0 {
        return f64::INFINITY;
    }
    if let Some(&t) = T_QUANTILES.get(dof as usize - 1) {
        return t;
    }
    let (z, v) = (SIGNIFICANCE, dof as f64);
    z + (z.powi(3) + z) / (4.0 * v)
        + (5.0 * z.powi(5) + 16.0 * z.powi(3) + 3.0 * z) / (96.0 * v * v)
        + (3.0 * z.powi(7) + 19.0 * z.powi(5) + 17.0 * z.powi(3) - 15.0 * z) / (384.0 * v.powi(3))
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
    /// them in which a class keeps clearly less than nothing is no explanation: the full one is kept (and its
    /// standard errors say how little it knows: the figures stay at 0 rather than name a class wrongly).
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
        let impossible = reduced.active.iter().any(|&c| {
            reduced
                .group(&[c])
                .is_some_and(|(b, e)| b < -critical(reduced.dof) * e)
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

    /// How far to trust a group's estimate beyond the model's standard error: the sandwich (HC3) standard error
    /// over the kept windows of a robust fit (each window's residual, over one minus its leverage, weighed by
    /// how far it moves the estimate) and the number of windows the estimate effectively rests on (how evenly
    /// its variance spreads over the windows, by design: sum(c)^2 / sum(c^2) with c = influence^2 / (1 -
    /// leverage)). A steady queue that hands the classes out in turn leaves few windows that hold two classes
    /// in different numbers: the model's standard error, from the residuals of all windows, would be small
    /// although the split between the two rests on those few. Infinite when one window alone decides it;
    /// None for a plain fit.
    fn evidence(&self, fit: &Fit, inverse: &[Vec<f64>], group: &[usize]) -> Option<(f64, f64)> {
        let history = self.history.as_ref()?;
        if fit.window_weights.len() != history.len() {
            return None;
        }
        let width = fit.active.iter().max().map_or(0, |c| c + 1);
        let mut position = vec![None; width];
        for (p, &c) in fit.active.iter().enumerate() {
            position[c] = Some(p);
        }
        let picked: Vec<usize> = group
            .iter()
            .filter_map(|&c| position.get(c).copied().flatten())
            .collect();
        // v = A^-1 g: how the group's sum moves with each column's X'y.
        let v: Vec<f64> = (0..fit.active.len())
            .map(|p| picked.iter().map(|&q| inverse[p][q]).sum())
            .collect();
        let (mut variance, mut spread, mut spread_squares) = (0.0, 0.0, 0.0);
        for ((x, y), &w) in history.iter().zip(&fit.window_weights) {
            if w == 0.0 {
                continue;
            }
            let row: Vec<(usize, f64)> = x
                .iter()
                .filter(|&&(_, value)| value != 0.0)
                .filter_map(|&(c, value)| position.get(c).copied().flatten().map(|p| (p, value)))
                .collect();
            let residual = y - row
                .iter()
                .map(|&(p, value)| value * fit.beta[p])
                .sum::<f64>();
            let influence = w * row.iter().map(|&(p, value)| value * v[p]).sum::<f64>();
            let leverage = w * row
                .iter()
                .map(|&(p, a)| row.iter().map(|&(q, b)| a * b * inverse[p][q]).sum::<f64>())
                .sum::<f64>();
            let free = 1.0 - leverage;
            if free < 1e-6 {
                // A MB off in this window would move the figure by more than a KB a job.
                if influence.abs() > 1e-3 {
                    return Some((f64::INFINITY, 1.0));
                }
                continue;
            }
            variance += (influence * residual / free).powi(2);
            let c = influence * influence / free;
            spread += c;
            spread_squares += c * c;
        }
        let windows = if spread_squares > 0.0 {
            spread * spread / spread_squares
        } else {
            f64::INFINITY
        };
        Some((variance.sqrt(), windows))
    }
}

impl Fit {
    /// (X'WX)^-1 over the active columns, from the Cholesky factor.
    fn inverse(&self) -> Vec<Vec<f64>> {
        let n = self.active.len();
        let mut inverse = vec![vec![0.0; n]; n];
        for j in 0..n {
            let mut unit = vec![0.0; n];
            unit[j] = 1.0;
            let column = back_substitute(&self.l, &forward_substitute(&self.l, &unit));
            for (i, value) in column.into_iter().enumerate() {
                inverse[i][j] = value;
            }
        }
        inverse
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_critical_value_falls_to_three_standard_errors() {
        assert_eq!(critical(0), f64::INFINITY);
        assert_eq!(critical(1), 235.8);
        assert!(critical(11) < critical(10) && critical(11) > 0.95 * critical(10));
        assert!((critical(30) - 3.27).abs() < 0.03, "{}", critical(30));
        assert!((critical(1000) - SIGNIFICANCE).abs() < 0.01);
        for dof in 1..200 {
            assert!(critical(dof + 1) < critical(dof), "{dof}");
        }
    }
}
