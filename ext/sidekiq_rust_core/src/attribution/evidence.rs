//! Whether a figure speaks: the levels at which an estimate is told from zero (Student's t critical values,
//! the growth series' two standard errors), the smallest figure reported, and the sandwich (HC3) standard error
//! and effective windows that a robust fit's figure is tested on again.

use super::fit::{Fit, Normal};

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

/// A class whose jobs kept, in all (its retained per job times its jobs), less than this share of what the
/// jobs of every class kept is reported as 0: it did not grow the memory, whatever its test. A class whose jobs
/// hold many objects while they run grows Ruby's heap, and the allocator's bytes in use keep some of that
/// (the heap pages' bookkeeping): measured at 56 KB a job (1.8% of the floors' rise) beside a 3 MB leaker on a
/// shuffled order, where that small figure passed the test and would have been named next to the leaker.
pub const MIN_SHARE: f64 = 0.05;

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
    /// How far to trust a group's estimate beyond the model's standard error: the sandwich (HC3) standard error
    /// over the kept windows of a robust fit (each window's residual, over one minus its leverage, weighed by
    /// how far it moves the estimate) and the number of windows the estimate effectively rests on (how evenly
    /// its variance spreads over the windows, by design: sum(c)^2 / sum(c^2) with c = influence^2 / (1 -
    /// leverage)). A steady queue that hands the classes out in turn leaves few windows that hold two classes
    /// in different numbers: the model's standard error, from the residuals of all windows, would be small
    /// although the split between the two rests on those few. Infinite when one window alone decides it;
    /// None for a plain fit.
    pub(super) fn evidence(
        &self,
        fit: &Fit,
        inverse: &[Vec<f64>],
        group: &[usize],
    ) -> Option<(f64, f64)> {
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
