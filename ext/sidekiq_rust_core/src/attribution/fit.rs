//! The robust least-squares fit of the windows' changes on the jobs that ran in them.

use std::collections::VecDeque;

/// An estimate within this many standard errors of zero is reported as 0.
pub const SIGNIFICANCE: f64 = 2.0;
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
    pub(super) windows: u64,
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
    pub(super) fn robust() -> Self {
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
