//! Gaussian-density weighting: each value weighted by the density of its column's normal
//! distribution N(mean, std) at that value, so values far from the bulk count less.

use psg_macros::batch_reduce;

/// Per column: the density-weighted sum `sum_b g[b] * N(g[b]; mu, sigma)` and the weighted mean
/// (that sum over the sum of the weights), with mu and sigma the column's mean and std
/// (Bessel-corrected).
///
/// A degenerate column, whose std is 0 (all values equal), NaN (one sample) or infinite (the
/// squares overflow: the limit of an ever wider density is equal weights), weights every sample
/// by 1: the weighted sum is then the plain sum and the weighted mean the plain mean. An empty
/// batch gives a sum of 0 and a mean of NaN.
///
/// The density's normalization `1 / (sigma sqrt(2 pi))` is the same for every sample of a column,
/// so it multiplies the sum of `g[b] * exp(-z^2 / 2)` once (and cancels from the mean) instead of
/// every term; the degenerate case, too, is decided once per column (the kernel sums are NaN
/// there and unused, and the plain sum and count are exactly what weights of 1 give).
#[batch_reduce(crate = "psg_runtime")]
pub fn gaussian_weighted(g: Batch) -> (f32, f32) {
    let (mu, sigma) = (g.mean(), g.std());
    let kernels = g.map(|x| normal_kernel(x, mu, sigma)).sum();
    let weighted = g.map(|x| x * normal_kernel(x, mu, sigma)).sum();
    let (plain, n) = (g.sum(), g.count());
    let ok = sigma > 0.0 && sigma < f32::INFINITY;
    (
        if ok {
            weighted * (1.0 / (sigma * 2.5066282746310002))
        } else {
            plain
        },
        if ok { weighted / kernels } else { plain / n },
    )
}

/// The density-weighted sum alone (see [`gaussian_weighted`]).
#[batch_reduce(crate = "psg_runtime")]
pub fn gaussian_weighted_sum(g: Batch) -> f32 {
    let (mu, sigma) = (g.mean(), g.std());
    let weighted = g.map(|x| x * normal_kernel(x, mu, sigma)).sum();
    if sigma > 0.0 && sigma < f32::INFINITY {
        weighted * (1.0 / (sigma * 2.5066282746310002))
    } else {
        g.sum()
    }
}

pub(crate) fn defs() -> Vec<&'static psg_runtime::ReductionDef> {
    vec![&gaussian_weighted::DEF, &gaussian_weighted_sum::DEF]
}
