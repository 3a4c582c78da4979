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

use std::fmt;

use psg_macros::batch_reduce;
use psg_runtime::{Error, ReductionDef, Result, Tensor};

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
    /// A user-defined aggregation, such as a `#[batch_reduce]` function (see [`CustomOp`]).
    Custom(CustomOp),
}

/// A user-defined aggregation for [`RobustOp::Custom`]: a function of one parameter tensor's
/// clipped per-sample gradients (`[B, ...]`, clipped by the step) that returns one value per
/// coordinate (shape `[...]`) in their dtype, on their device. A `#[batch_reduce]` function of
/// one output fits as it is; one with parameters, through a function that fixes them:
///
/// ```
/// use psg_macros::batch_reduce; // `psg::prelude::*` in an application
/// use psg_ops::dp::{Aggregation, CustomOp, RobustOp};
/// use psg_runtime::{Result, Tensor};
///
/// /// The mean of each coordinate's values clamped to its q and 1 - q quantiles.
/// #[batch_reduce(crate = "psg_runtime")] // plain `#[batch_reduce]` through the psg facade
/// fn winsorized_mean(g: Batch, q: f64) -> f32 {
///     let (lo, hi) = (g.quantile(q), g.quantile(1.0 - q));
///     g.map(|x| x.clamp(lo, hi)).mean()
/// }
///
/// fn winsorized_10(g: &Tensor) -> Result<Tensor> {
///     winsorized_mean(g, 0.1)
/// }
///
/// let aggregation = Aggregation::Robust {
///     op: RobustOp::Custom(CustomOp { name: "winsorized mean (10%)", op: winsorized_10 }),
///     sensitivity: None, // no epsilon, unless the caller can justify a bound
/// };
/// ```
///
/// psg bounds no user aggregation's sensitivity: without a [`UserSensitivity`](super::UserSensitivity)
/// the step adds noise but reports no epsilon.
#[derive(Clone, Copy)]
pub struct CustomOp {
    /// Its name, for reports and errors.
    pub name: &'static str,
    /// The aggregation of the clipped per-sample gradients `[B, ...]` to one tensor `[...]`.
    pub op: fn(&Tensor) -> Result<Tensor>,
}

impl fmt::Debug for CustomOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CustomOp")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// The same name: a custom op is known by its name (Rust does not promise that a function's
/// pointers compare equal across crates or codegen units).
impl PartialEq for CustomOp {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
    }
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
            RobustOp::Custom(c) => c.name,
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
                "one sample added or removed moves each coordinate's count by 1, which can turn \
                 a tie into a vote or a vote into a tie in every coordinate: a change of up to 1 \
                 per coordinate, sqrt(P) in L2 with P all parameters and no NaN gradients, \
                 whatever the clipping"
            }
            RobustOp::Custom(_) => {
                "it is user-defined: psg cannot tell how far one sample moves it, and assumes \
                 no bound"
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
            RobustOp::Custom(c) => {
                let out = (c.op)(&clipped()?)?;
                let want = &g.shape()[1..];
                let got = format!(
                    "the custom aggregation `{}` returned a {} tensor of shape {:?} on {}; a DP \
                     step needs one value per coordinate of the gradients: shape {want:?}, {}, \
                     on {}",
                    c.name,
                    out.dtype(),
                    out.shape(),
                    out.device().short_name(),
                    g.dtype(),
                    g.device().short_name()
                );
                if out.shape() != want {
                    return Err(Error::Shape(got));
                }
                if out.dtype() != g.dtype() {
                    return Err(Error::DType(got));
                }
                if !out.device().same_memory_space(&g.device()) {
                    return Err(Error::DeviceMismatch(got));
                }
                Ok(out)
            }
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
