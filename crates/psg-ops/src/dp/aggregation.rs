//! What a DP-SGD step does with the clipped per-sample gradients, and whether psg can state a
//! privacy guarantee for it. The distinction is in the type: the sum-type variants carry a
//! sensitivity psg knows; [`Aggregation::Robust`] has none unless the caller supplies one.

use psg_runtime::Tensor;

use super::clipping::Clipping;
use super::error::{DpError, DpResult};
use super::robust::RobustOp;
use crate::Denominator;

/// A sensitivity bound the caller vouches for, with the reason it holds.
///
/// psg cannot check it: the guarantee of every epsilon reported with it is only as good as the
/// justification, which every [`EpsilonReport`](super::EpsilonReport) repeats.
#[derive(Debug, Clone, PartialEq)]
pub struct UserSensitivity {
    /// The L2 sensitivity of the aggregate under adding or removing one sample (> 0, finite):
    /// the noise's standard deviation is `noise_multiplier * value`.
    pub value: f64,
    /// Why one sample cannot move the aggregate further (non-empty).
    pub justification: String,
}

impl UserSensitivity {
    /// A checked sensitivity.
    ///
    /// # Errors
    ///
    /// [`DpError::InvalidSensitivity`] unless `value` is finite and > 0;
    /// [`DpError::MissingJustification`] for a blank justification.
    pub fn new(value: f64, justification: impl Into<String>) -> DpResult<Self> {
        let s = UserSensitivity {
            value,
            justification: justification.into(),
        };
        s.validate()?;
        Ok(s)
    }

    /// Checks the value and the justification, as [`UserSensitivity::new`].
    ///
    /// # Errors
    ///
    /// As [`UserSensitivity::new`].
    pub fn validate(&self) -> DpResult<()> {
        if !(self.value.is_finite() && self.value > 0.0) {
            return Err(DpError::InvalidSensitivity { value: self.value });
        }
        if self.justification.trim().is_empty() {
            return Err(DpError::MissingJustification { value: self.value });
        }
        Ok(())
    }
}

/// How a DP-SGD step aggregates the clipped per-sample gradients, and so what it can promise.
///
/// | variant | output | noise std | epsilon |
/// | --- | --- | --- | --- |
/// | `ClippedSum` | sum + noise | `sigma * S` | yes |
/// | `ClippedMean` | (sum + noise) / expected batch size | `sigma * S` on the sum | yes |
/// | `Robust { sensitivity: Some(s), .. }` | aggregate + noise | `sigma * s.value` | yes, resting on `s.justification` |
/// | `Robust { sensitivity: None, .. }` | aggregate + noise | `sigma * S` (a scale, no bound) | no: [`DpError::NoPrivacyGuarantee`] |
///
/// `sigma` is the noise multiplier, `S` the clipping's sensitivity ([`Clipping::sensitivity`]).
#[derive(Debug, Clone, PartialEq)]
pub enum Aggregation {
    /// The sum of the clipped gradients. Sensitivity `S`: one sample's clipped gradient.
    ClippedSum,
    /// Opacus' DP-SGD gradient: the noisy clipped sum divided by the expected batch size (a
    /// constant, so B may vary under Poisson sampling). Same guarantee as the sum (division by a
    /// data-independent constant is post-processing).
    ClippedMean,
    /// A robust aggregation. Without a sensitivity its output gets noise of `sigma * S` but no
    /// epsilon: see [`RobustOp::why_unbounded`].
    Robust {
        /// The aggregation.
        op: RobustOp,
        /// A bound the caller vouches for, or `None` for no privacy guarantee.
        sensitivity: Option<UserSensitivity>,
    },
}

impl Aggregation {
    /// A short name, e.g. `"clipped mean"`.
    pub fn name(&self) -> &'static str {
        match self {
            Aggregation::ClippedSum => "clipped sum",
            Aggregation::ClippedMean => "clipped mean",
            Aggregation::Robust { op, .. } => op.name(),
        }
    }

    /// The L2 sensitivity epsilon is computed for: `S` for the sum-type variants (of the sum,
    /// before ClippedMean's division), the supplied value for a robust one, `None` when there is
    /// none (no epsilon).
    pub fn sensitivity(&self, clipping: &Clipping) -> Option<f64> {
        match self {
            Aggregation::ClippedSum | Aggregation::ClippedMean => Some(clipping.sensitivity()),
            Aggregation::Robust { sensitivity, .. } => sensitivity.as_ref().map(|s| s.value),
        }
    }

    /// `Ok` when an epsilon can be reported, else [`DpError::NoPrivacyGuarantee`] saying why.
    ///
    /// # Errors
    ///
    /// [`DpError::NoPrivacyGuarantee`] for a robust aggregation without a sensitivity.
    pub fn guarantee(&self) -> DpResult<()> {
        match self {
            Aggregation::Robust {
                op,
                sensitivity: None,
            } => Err(DpError::NoPrivacyGuarantee {
                aggregation: op.name(),
                why: op.why_unbounded(),
            }),
            _ => Ok(()),
        }
    }

    /// The standard deviation of the noise in the step's output, for noise multiplier `sigma`.
    pub(super) fn output_noise_std(&self, sigma: f64, clipping: &Clipping, expected: f64) -> f64 {
        match self {
            Aggregation::ClippedSum => sigma * clipping.sensitivity(),
            Aggregation::ClippedMean => sigma * clipping.sensitivity() / expected,
            Aggregation::Robust { sensitivity, .. } => {
                let s = sensitivity.as_ref().map(|s| s.value);
                sigma * s.unwrap_or_else(|| clipping.sensitivity())
            }
        }
    }

    /// The aggregate of the clipped gradients `g[b] * factors[b]`, before noise (a fresh tensor).
    /// ClippedMean divides here, so its noise is added already divided by `expected`.
    pub(super) fn apply(&self, g: &Tensor, factors: &Tensor, expected: f64) -> DpResult<Tensor> {
        Ok(match self {
            Aggregation::ClippedSum => crate::clipped_sum(g, factors)?,
            Aggregation::ClippedMean => {
                crate::clipped_mean(g, factors, Denominator::Expected(expected))?
            }
            Aggregation::Robust { op, .. } => op.apply(g, factors)?,
        })
    }
}
