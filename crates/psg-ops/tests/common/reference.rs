//! Plain, obviously-correct references (sorts, loops in f64) for every built-in.

/// The column sorted in IEEE total order.
pub fn sorted(col: &[f32]) -> Vec<f32> {
    let mut v = col.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    v
}

pub fn sum(col: &[f32]) -> f64 {
    col.iter().map(|&x| f64::from(x)).sum()
}

pub fn mean(col: &[f32]) -> f64 {
    sum(col) / col.len() as f64
}

pub fn var(col: &[f32], correction: f64) -> f64 {
    let m = mean(col);
    let ss: f64 = col.iter().map(|&x| (f64::from(x) - m).powi(2)).sum();
    ss / (col.len() as f64 - correction).max(0.0)
}

/// Sum of |x| (the scale a float sum's rounding error is relative to).
pub fn abs_sum(col: &[f32]) -> f64 {
    col.iter().map(|&x| f64::from(x).abs()).sum()
}

/// The k-th smallest in total order; NaN if any NaN (PyTorch's propagation) or k out of range.
pub fn kth(col: &[f32], k: usize) -> f32 {
    if col.iter().any(|x| x.is_nan()) || k >= col.len() {
        return f32::NAN;
    }
    sorted(col)[k]
}

/// NumPy's median (mean of the two middle values), computed in f32 as the kernels do.
pub fn median(col: &[f32]) -> f32 {
    let n = col.len();
    if n == 0 || col.iter().any(|x| x.is_nan()) {
        return f32::NAN;
    }
    let s = sorted(col);
    if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    }
}

/// torch.median: the lower middle value.
pub fn median_low(col: &[f32]) -> f32 {
    if col.is_empty() {
        return f32::NAN;
    }
    kth(col, (col.len() - 1) / 2)
}

/// torch.quantile (linear), in f32 as the kernels do.
pub fn quantile(col: &[f32], q: f32) -> f32 {
    let n = col.len();
    if n == 0 || col.iter().any(|x| x.is_nan()) {
        return f32::NAN;
    }
    let s = sorted(col);
    let pos = q * (n as f32 - 1.0);
    let lo = pos.floor();
    let hi = if pos > lo { lo + 1.0 } else { lo };
    let (a, b, w) = (s[lo as usize], s[hi as usize], pos - lo);
    // No interpolation needed at an infinite end: the value itself (torch's formula gives NaN
    // there; for finite ends it is kept, -0 + 0 = +0 included).
    if !(a.is_finite() && b.is_finite()) && (w == 0.0 || a == b) {
        return a;
    }
    if w < 0.5 {
        a + w * (b - a)
    } else {
        b - (b - a) * (1.0 - w)
    }
}

/// Minimum with NaN propagation and -0 < +0; NaN when empty.
pub fn min(col: &[f32]) -> f32 {
    if col.is_empty() || col.iter().any(|x| x.is_nan()) {
        return f32::NAN;
    }
    sorted(col)[0]
}

pub fn max(col: &[f32]) -> f32 {
    if col.is_empty() || col.iter().any(|x| x.is_nan()) {
        return f32::NAN;
    }
    *sorted(col).last().unwrap()
}

/// sign with sign(+-0) = 0 and sign(NaN) = NaN.
pub fn sign(x: f32) -> f32 {
    if x > 0.0 {
        1.0
    } else if x < 0.0 {
        -1.0
    } else if x == 0.0 {
        0.0
    } else {
        f32::NAN
    }
}

/// Mean and count of the values kept by a predicate.
pub fn kept_mean(col: &[f32], keep: impl Fn(f64) -> bool) -> (f64, usize) {
    let kept: Vec<f64> = col
        .iter()
        .map(|&x| f64::from(x))
        .filter(|&x| keep(x))
        .collect();
    (kept.iter().sum::<f64>() / kept.len() as f64, kept.len())
}

pub fn zscore_mean(col: &[f32], k: f64) -> (f64, usize) {
    let (m, s) = (mean(col), var(col, 1.0).sqrt());
    kept_mean(col, |x| !((x - m).abs() > k * s))
}

/// MAD rule: the median and MAD as the kernels compute them (in f32).
pub fn mad_mean(col: &[f32], k: f64) -> (f64, usize) {
    let med = median(col);
    let dev: Vec<f32> = col.iter().map(|&x| (x - med).abs()).collect();
    let mad = f64::from(median(&dev));
    let med = f64::from(med);
    kept_mean(col, |x| !(mad > 0.0) || (x - med).abs() <= k * 1.4826 * mad)
}

/// Trimmed mean by rank: the mean of sorted[m..n-m].
pub fn trim_mean(col: &[f32], m: usize) -> (f64, usize) {
    let s = sorted(col);
    let kept = &s[m..s.len() - m];
    (sum(kept) / kept.len() as f64, kept.len())
}

/// The stable rank of each element (ties by index).
pub fn stable_ranks(col: &[f32]) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..col.len()).collect();
    idx.sort_by(|&a, &b| col[a].total_cmp(&col[b]).then(a.cmp(&b)));
    let mut rank = vec![0; col.len()];
    for (r, &i) in idx.iter().enumerate() {
        rank[i] = r;
    }
    rank
}

/// Gaussian-density weighted sum and mean, with weight 1 when std is 0 or NaN.
pub fn gaussian_weighted(col: &[f32]) -> (f64, f64) {
    let (m, s) = (mean(col), var(col, 1.0).sqrt());
    let w = |x: f64| {
        if s > 0.0 {
            (-0.5 * ((x - m) / s).powi(2)).exp() / (s * (2.0 * std::f64::consts::PI).sqrt())
        } else {
            1.0
        }
    };
    let ws: f64 = col.iter().map(|&x| w(f64::from(x))).sum();
    let wx: f64 = col.iter().map(|&x| f64::from(x) * w(f64::from(x))).sum();
    (wx, wx / ws)
}
