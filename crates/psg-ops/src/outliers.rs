//! Outlier removal along the batch axis, by three rules:
//!
//! - z-score: a value is an outlier when `|x - mean| > k * std` (Bessel-corrected std). A column
//!   whose std is 0 or NaN (one sample) loses nothing: equal values (their variance is exactly
//!   0, the mean's rounding taken back), and values whose deviations from the mean are so
//!   small that their squares underflow to 0 (below about 4e-23 in f32).
//! - MAD: an outlier when `|x - median| > k * 1.4826 * MAD`, MAD being the median of
//!   `|x - median|` (1.4826 makes it a consistent estimate of the std for normal data). A column
//!   whose MAD is 0 or NaN loses nothing.
//! - trimming: the `m` lowest and `m` highest values *by rank* are removed from each column
//!   (ties are split by rank, not removed wholesale by value), with `m = floor(alpha * B)` or a
//!   given count.
//!
//! For each rule: the mean of the kept values and the count kept per column
//! ([`outlier_mean`]), and the cleaned per-sample tensor with removed entries replaced by zero
//! or NaN ([`remove_outliers`]) so other reductions can follow. Under the default non-finite
//! policy (propagate), a NaN in a column makes its mean NaN.

use psg_macros::batch_reduce;
use psg_runtime::{Error, Result, Tensor};

/// An outlier rule.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum OutlierRule {
    /// Remove values more than `k` standard deviations from the column's mean.
    ZScore {
        /// Threshold in standard deviations (> 0).
        k: f64,
    },
    /// Remove values more than `k` scaled MADs (1.4826 * MAD) from the column's median.
    Mad {
        /// Threshold in scaled MADs (> 0).
        k: f64,
    },
    /// Remove the `floor(alpha * B)` lowest and highest values of each column.
    TrimFraction {
        /// Fraction trimmed from each end, in [0, 0.5).
        alpha: f64,
    },
    /// Remove the `m` lowest and `m` highest values of each column.
    TrimCount {
        /// Count trimmed from each end (2m < B).
        m: usize,
    },
}

/// How [`remove_outliers`] marks removed entries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Removed {
    /// Replace removed entries by 0 (a sum over the batch then ignores them).
    Zero,
    /// Replace removed entries by NaN (marked, so that they can be told apart from real zeros).
    NaN,
}

/// The mean of the kept values and the number kept, per column.
#[derive(Debug)]
pub struct OutlierMean {
    /// Mean of the kept values (shape `g.shape()[1..]`).
    pub mean: Tensor,
    /// Number of values kept (same shape, g's dtype: exact up to 2^24 in f32, but only up to
    /// 256 in bf16 and 2048 in f16, whose larger counts round to a neighbour).
    pub kept: Tensor,
}

#[batch_reduce(crate = "psg_runtime")]
fn zscore_mean(g: Batch, k: f64) -> (f32, f32) {
    let (mu, sigma) = (g.mean(), g.std());
    // A std of 0 removes nothing, as the MAD's rule does: the values are all equal, or their
    // deviations' squares underflow (f32 values near 1e-30), where k * 0 would remove them all
    // (k > 0, so k * inf is inf).
    let spread = if sigma > 0.0 { sigma } else { f32::INFINITY };
    let kept = g.filter(|x| !((x - mu).abs() > k * spread));
    (kept.mean(), kept.count())
}

#[batch_reduce(crate = "psg_runtime")]
fn zscore_clean(g: Batch, k: f64, fill: f64) -> Batch {
    let (mu, sigma) = (g.mean(), g.std());
    let spread = if sigma > 0.0 { sigma } else { f32::INFINITY };
    g.map(|x| if (x - mu).abs() > k * spread { fill } else { x })
}

#[batch_reduce(crate = "psg_runtime")]
fn mad_mean(g: Batch, k: f64) -> (f32, f32) {
    let med = g.median();
    let mad = g.map(|x| (x - med).abs()).median();
    let kept = g.filter(|x| !(mad > 0.0) || !((x - med).abs() > k * 1.4826 * mad));
    (kept.mean(), kept.count())
}

#[batch_reduce(crate = "psg_runtime")]
fn mad_clean(g: Batch, k: f64, fill: f64) -> Batch {
    let med = g.median();
    let mad = g.map(|x| (x - med).abs()).median();
    g.map(|x| {
        if mad > 0.0 && (x - med).abs() > k * 1.4826 * mad {
            fill
        } else {
            x
        }
    })
}

/// Trimmed mean by rank: the kept ranks are [m, n - m). Values tied with the boundary values
/// `lo` and `hi` are counted by rank, so ties are neither all kept nor all removed.
#[batch_reduce(crate = "psg_runtime")]
fn trim_mean(g: Batch, m: f64) -> (f32, f32) {
    let n = g.count();
    let lo = g.kth(m);
    let hi = g.kth(n - 1.0 - m);
    let upto_lo = g.filter(|x| x <= lo).count();
    let below_hi = g.filter(|x| x < hi).count();
    let inner = g.filter(|x| x > lo && x < hi).sum();
    let kept = n - 2.0 * m;
    let total = inner + lo * (upto_lo - m) + hi * (n - m - below_hi);
    (if lo == hi { lo } else { total / kept }, kept)
}

/// A threshold k > 0, finite, and a normal number in f32 where g's data computes in f32 (k =
/// 1e-50 would be 0 there).
fn check_threshold(rule: &str, k: f64, g: &Tensor) -> Result<()> {
    if !(k.is_finite() && k > 0.0) {
        return Err(Error::InvalidParameter(format!(
            "{rule} outlier rule: the threshold k must be a finite number > 0 (3.0 is usual), got {k:?}"
        )));
    }
    crate::clip::fits_f32(
        &format!("{rule} outlier rule"),
        "the threshold k",
        k,
        g.dtype(),
    )
}

/// The number trimmed from each end for a batch of `b` samples, checked.
fn trim_count(rule: &OutlierRule, b: usize) -> Result<usize> {
    let m = match *rule {
        OutlierRule::TrimFraction { alpha } => {
            if !(0.0..0.5).contains(&alpha) {
                return Err(Error::InvalidParameter(format!(
                    "trim outlier rule: alpha is the fraction removed from each end and must lie in [0, 0.5), got {alpha:?}"
                )));
            }
            (alpha * b as f64).floor() as usize
        }
        OutlierRule::TrimCount { m } => m,
        _ => 0,
    };
    if b == 0 {
        // An empty (Poisson-sampled) batch: nothing to trim, and nothing kept.
        return Ok(0);
    }
    if m.saturating_mul(2) >= b {
        return Err(Error::InvalidParameter(format!(
            "trim outlier rule: removing {m} values from each end of a batch of {b} would remove everything; use 2m < B"
        )));
    }
    Ok(m)
}

/// The mean of the values each column keeps under `rule`, and how many it keeps.
pub fn outlier_mean(g: &Tensor, rule: OutlierRule) -> Result<OutlierMean> {
    let (mean, kept) = match rule {
        OutlierRule::ZScore { k } => {
            check_threshold("z-score", k, g)?;
            crate::as_op("outlier_mean", zscore_mean(g, k))?
        }
        OutlierRule::Mad { k } => {
            check_threshold("MAD", k, g)?;
            crate::as_op("outlier_mean", mad_mean(g, k))?
        }
        OutlierRule::TrimFraction { .. } | OutlierRule::TrimCount { .. } => {
            let m = trim_count(&rule, crate::as_op("outlier_mean", g.batch_size())?)?;
            crate::as_op("outlier_mean", trim_mean(g, m as f64))?
        }
    };
    Ok(OutlierMean { mean, kept })
}

/// The per-sample tensor with each column's outliers under `rule` replaced as `removed` says.
pub fn remove_outliers(g: &Tensor, rule: OutlierRule, removed: Removed) -> Result<Tensor> {
    let fill = match removed {
        Removed::Zero => 0.0,
        Removed::NaN => f64::NAN,
    };
    match rule {
        OutlierRule::ZScore { k } => {
            check_threshold("z-score", k, g)?;
            crate::as_op("remove_outliers", zscore_clean(g, k, fill))
        }
        OutlierRule::Mad { k } => {
            check_threshold("MAD", k, g)?;
            crate::as_op("remove_outliers", mad_clean(g, k, fill))
        }
        OutlierRule::TrimFraction { .. } | OutlierRule::TrimCount { .. } => {
            let m = trim_count(&rule, crate::as_op("remove_outliers", g.batch_size())?)?;
            crate::as_op("remove_outliers", trim_clean(g, m as f64, fill))
        }
    }
}

/// Cleaned tensor for trimming: an entry is removed when its stable rank in its column (ties
/// broken by sample index) is below m or at least n - m. A column holding a NaN loses nothing,
/// as under the z-score and MAD rules: ranked (last), the NaN would be trimmed away at the top
/// and the cleaned column would hide it, where the trimmed mean is NaN.
#[batch_reduce(crate = "psg_runtime")]
fn trim_clean(g: Batch, m: f64, fill: f64) -> Batch {
    let n = g.count();
    let nans = g.filter(|x| x.is_nan()).count();
    g.with_rank().map(|x, r| {
        if nans == 0.0 && (r < m || r >= n - m) {
            fill
        } else {
            x
        }
    })
}

pub(crate) fn defs() -> Vec<&'static psg_runtime::ReductionDef> {
    vec![
        &zscore_mean::DEF,
        &zscore_clean::DEF,
        &mad_mean::DEF,
        &mad_clean::DEF,
        &trim_mean::DEF,
        &trim_clean::DEF,
    ]
}
