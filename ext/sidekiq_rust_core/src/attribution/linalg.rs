//! The linear algebra of the fit: the Cholesky factor of the normal equations, the triangular solves and the
//! inverse from the factor.

/// Lower-triangular L with L L' = A + ridge I, or None when A is not positive definite.
pub(super) fn cholesky(a: &[Vec<f64>], ridge: f64) -> Option<Vec<Vec<f64>>> {
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

pub(super) fn forward_substitute(l: &[Vec<f64>], b: &[f64]) -> Vec<f64> {
    let mut z = vec![0.0; b.len()];
    for i in 0..b.len() {
        let s: f64 = (0..i).map(|m| l[i][m] * z[m]).sum();
        z[i] = (b[i] - s) / l[i][i];
    }
    z
}

pub(super) fn back_substitute(l: &[Vec<f64>], z: &[f64]) -> Vec<f64> {
    let n = z.len();
    let mut x = vec![0.0; n];
    for i in (0..n).rev() {
        let s: f64 = (i + 1..n).map(|m| l[m][i] * x[m]).sum();
        x[i] = (z[i] - s) / l[i][i];
    }
    x
}

/// A^-1 from the Cholesky factor L of A (L L' = A), one column at a time.
pub(super) fn inverse(l: &[Vec<f64>]) -> Vec<Vec<f64>> {
    let n = l.len();
    let mut inverse = vec![vec![0.0; n]; n];
    for j in 0..n {
        let mut unit = vec![0.0; n];
        unit[j] = 1.0;
        let column = back_substitute(l, &forward_substitute(l, &unit));
        for (i, value) in column.into_iter().enumerate() {
            inverse[i][j] = value;
        }
    }
    inverse
}
