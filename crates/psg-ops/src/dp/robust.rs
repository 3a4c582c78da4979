//! Robust aggregations of clipped gradients, and why psg reports no epsilon for them on its own.
//!
//! Gaussian noise gives (epsilon, delta)-DP only when it is scaled to the aggregate's L2
//! sensitivity: how far adding or removing one sample can move the aggregate. For a sum of
//! gradients clipped to norm C that is exactly C. For the aggregations here psg derives no useful
//! bound: each one's movement depends on the *other* samples (which order statistic is the
//! median, which samples count as outliers, how the rest are weighted), or discards the clipping
//! (signs). A caller who can bound it (for instance on bounded inputs) supplies the bound with a
//! written justification ([`UserSensitivity`](super::UserSensitivity)), which then appears in
//! every epsilon report.

use psg_macros::batch_reduce;
use psg_runtime::{ReductionDef, Result, Tensor};

use crate::OutlierRule;

/// A robust aggregation along the batch axis, applied to the clipped per-sample gradients.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RobustOp {
    /// The coordinate-wise median ([`crate::clipped_median`]).
    Median,
    /// The mean of the values an outlier rule keeps ([`crate::outlier_mean`]).
    OutlierMean(OutlierRule),
    /// The Gaussian-density-weighted sum ([`crate::gaussian_weighted_sum()`]).
    GaussianWeightedSum,
    /// The sum of the per-sample signs ([`crate::sign_sum()`]).
    SignSum,
    /// The sign of the sum of signs ([`crate::majority_vote()`]).
    MajorityVote,
}

impl RobustOp {
    /// A short name, e.g. `"median"`.
    pub fn name(&self) -> &'static str {
        match self {
            RobustOp::Median => "median",
            RobustOp::OutlierMean(_) => "outlier-removed mean",
            RobustOp::GaussianWeightedSum => "Gaussian-density-weighted sum",
            RobustOp::SignSum => "sign sum",
            RobustOp::MajorityVote => "majority vote",
        }
    }

    /// Why psg derives no sensitivity bound for it, in words.
    pub fn why_unbounded(&self) -> &'static str {
        match self {
            RobustOp::Median => {
                "one sample shifts each coordinate's median to a neighbouring order statistic, \
                 whose distance depends on the other samples: on unbounded inputs it is \
                 arbitrary, and clipping bounds it only by 2C per coordinate, far above C in L2"
            }
            RobustOp::OutlierMean(_) => {
                "one sample changes which other samples are kept and how many, so the mean of \
                 the kept values can jump by much more than one clipped gradient's share"
            }
            RobustOp::GaussianWeightedSum => {
                "one sample moves each column's mean and standard deviation, which re-weights \
                 every other sample"
            }
            RobustOp::SignSum => {
                "signs discard the clipping; one sample moves each coordinate's count by up to 1, \
                 about sqrt(P) in L2 with P all parameters and no NaN gradients, which a caller \
                 may state but psg does not assume"
            }
            RobustOp::MajorityVote => {
                "one sample can flip the vote of every coordinate, a change of up to 2 per \
                 coordinate whatever the clipping"
            }
        }
    }

    /// The aggregate of `g[b] * factors[b]` over the batch (a fresh tensor).
    pub(super) fn apply(&self, g: &Tensor, factors: &Tensor) -> Result<Tensor> {
        let clipped = || clip_rows(g, factors);
        match self {
            RobustOp::Median => crate::clipped_median(g, factors),
            RobustOp::OutlierMean(rule) => Ok(crate::outlier_mean(&clipped()?, *rule)?.mean),
            RobustOp::GaussianWeightedSum => crate::gaussian_weighted_sum(&clipped()?),
            RobustOp::SignSum => crate::sign_sum(&clipped()?),
            RobustOp::MajorityVote => crate::majority_vote(&clipped()?),
        }
    }
}

/// The clipped per-sample gradients `g[b] * factors[b]`, shaped like `g`.
#[batch_reduce(crate = "psg_runtime")]
fn clip_rows(g: Batch, factors: PerSample) -> Batch {
    g.zip(factors).map(|x, f| x * f)
}

/// The batch reductions this module defines (its CUDA sources in every dtype), for the NVRTC
/// check, snapshots and benchmarks.
pub fn dp_reductions() -> Vec<&'static ReductionDef> {
    vec![&clip_rows::DEF]
}
