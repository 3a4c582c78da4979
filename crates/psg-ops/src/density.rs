//! Gaussian-density weighting: each value weighted by the density of its column's normal
//! distribution N(mean, std) at that value, so values far from the bulk count less.

use psg_macros::batch_reduce;

/// Per column: the density-weighted sum `sum_b g[b] * N(g[b]; mu, sigma)` and the weighted mean
/// (that sum over the sum of the weights), with mu and sigma the column's mean and std
/// (Bessel-corrected).
///
/// A degenerate column, whose std is 0 (all values equal) or NaN (one sample), weights every
/// sample by 1: the weighted sum is then the plain sum and the weighted mean the plain mean. An
/// empty batch gives a sum of 0 and a mean of NaN.
#[batch_reduce(crate = "psg_runtime")]
pub fn gaussian_weighted(g: Batch) -> (f32, f32) {
    let (mu, sigma) = (g.mean(), g.std());
    let weights = g
        .map(|x| {
            if sigma > 0.0 {
                normal_pdf(x, mu, sigma)
            } else {
                1.0
            }
        })
        .sum();
    let weighted = g
        .map(|x| {
            x * if sigma > 0.0 {
                normal_pdf(x, mu, sigma)
            } else {
                1.0
            }
        })
        .sum();
    (weighted, weighted / weights)
}

/// The density-weighted sum alone (see [`gaussian_weighted`]).
#[batch_reduce(crate = "psg_runtime")]
pub fn gaussian_weighted_sum(g: Batch) -> f32 {
    let (mu, sigma) = (g.mean(), g.std());
    g.map(|x| {
        x * if sigma > 0.0 {
            normal_pdf(x, mu, sigma)
        } else {
            1.0
        }
    })
    .sum()
}

pub(crate) fn defs() -> Vec<&'static psg_runtime::ReductionDef> {
    vec![&gaussian_weighted::DEF, &gaussian_weighted_sum::DEF]
}
