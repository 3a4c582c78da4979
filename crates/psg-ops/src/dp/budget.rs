//! Tracking a privacy budget through training: epsilon after each epoch, and whether the budget
//! is spent (so that a training loop can stop).

use std::fmt;

use super::error::{DpError, DpResult};
use super::report::EpsilonReport;
use super::step::DpSgd;

/// A privacy budget: train while epsilon at `delta` stays at most `target_epsilon`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Budget {
    /// The largest epsilon allowed (finite, > 0).
    pub target_epsilon: f64,
    /// The delta epsilon is computed at (in (0, 1); usually below 1 / dataset size).
    pub delta: f64,
}

impl Budget {
    /// A checked budget.
    ///
    /// # Errors
    ///
    /// [`psg_privacy::Error::InvalidTargetEpsilon`] unless `target_epsilon` is finite and > 0;
    /// [`psg_privacy::Error::InvalidDelta`] unless `0 < delta < 1`.
    pub fn new(target_epsilon: f64, delta: f64) -> DpResult<Self> {
        if !(target_epsilon.is_finite() && target_epsilon > 0.0) {
            return Err(psg_privacy::Error::InvalidTargetEpsilon { target_epsilon }.into());
        }
        if !(delta > 0.0 && delta < 1.0) {
            return Err(psg_privacy::Error::InvalidDelta { delta }.into());
        }
        Ok(Budget {
            target_epsilon,
            delta,
        })
    }

    /// Where `dp` stands against this budget.
    ///
    /// # Errors
    ///
    /// As [`DpSgd::epsilon`] ([`DpError::NoPrivacyGuarantee`] for an aggregation without one:
    /// no budget can be checked then).
    pub fn status(&self, dp: &DpSgd) -> DpResult<BudgetStatus> {
        Ok(BudgetStatus {
            spent: dp.epsilon(self.delta)?,
            target_epsilon: self.target_epsilon,
        })
    }

    /// Whether one more step keeps epsilon within the budget: the check to make *before* a step.
    ///
    /// # Errors
    ///
    /// As [`Budget::status`].
    pub fn allows_next_step(&self, dp: &DpSgd) -> DpResult<bool> {
        Ok(dp.epsilon_after(1, self.delta)?.epsilon() <= self.target_epsilon)
    }
}

/// The privacy spent against a budget.
#[derive(Debug, Clone, PartialEq)]
pub struct BudgetStatus {
    /// Epsilon so far, with what it assumes.
    pub spent: EpsilonReport,
    /// The budget's target.
    pub target_epsilon: f64,
}

impl BudgetStatus {
    /// Whether the budget is spent: epsilon has reached (or passed) the target.
    pub fn exhausted(&self) -> bool {
        let epsilon = self.spent.epsilon();
        epsilon.is_nan() || epsilon >= self.target_epsilon
    }

    /// The epsilon left before the target (0 when exhausted).
    pub fn remaining(&self) -> f64 {
        (self.target_epsilon - self.spent.epsilon()).max(0.0)
    }
}

impl fmt::Display for BudgetStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = if self.exhausted() {
            "spent"
        } else {
            "not spent"
        };
        write!(
            f,
            "budget epsilon {} {state}: {}",
            self.target_epsilon, self.spent
        )
    }
}

/// Reports epsilon at the end of each epoch of `steps_per_epoch` steps.
///
/// ```
/// use psg_ops::dp::{Clipping, DpSgd, DpSgdConfig, EpochTracker, NoiseGenerator};
/// use psg_runtime::{Device, Tensor};
///
/// let config = DpSgdConfig::new(1.0, Clipping::flat(1.0), 0.5, 2.0);
/// let mut dp = DpSgd::new(config, NoiseGenerator::new(3))?;
/// let epochs = EpochTracker::for_sample_rate(0.5, 1e-5)?; // 2 steps per epoch
/// let g = Tensor::from_slice(&[0.5f32, -1.0, 2.0, 0.25], &[2, 2], &Device::Cpu)?;
/// dp.step(&[&g])?;
/// assert!(epochs.after_step(&dp)?.is_none());
/// dp.step(&[&g])?;
/// let report = epochs.after_step(&dp)?.expect("end of epoch 1");
/// assert_eq!(report.epoch, 1);
/// assert!(report.to_string().contains("Poisson sampling"));
/// # Ok::<(), psg_ops::dp::DpError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EpochTracker {
    steps_per_epoch: u64,
    delta: f64,
}

impl EpochTracker {
    /// Epochs of `steps_per_epoch` (>= 1) steps, epsilon at `delta`.
    ///
    /// # Errors
    ///
    /// [`psg_runtime::Error::InvalidParameter`] for 0 steps per epoch;
    /// [`psg_privacy::Error::InvalidDelta`] unless `0 < delta < 1`.
    pub fn new(steps_per_epoch: u64, delta: f64) -> DpResult<Self> {
        if steps_per_epoch == 0 {
            return Err(DpError::Runtime(psg_runtime::Error::InvalidParameter(
                "an epoch needs at least 1 step".into(),
            )));
        }
        if !(delta > 0.0 && delta < 1.0) {
            return Err(psg_privacy::Error::InvalidDelta { delta }.into());
        }
        Ok(EpochTracker {
            steps_per_epoch,
            delta,
        })
    }

    /// Epochs of `floor(1 / sample_rate)` steps, as Opacus' Poisson data loader has.
    ///
    /// # Errors
    ///
    /// [`psg_privacy::Error::InvalidSampleRate`] outside (0, 1]; as [`EpochTracker::new`].
    pub fn for_sample_rate(sample_rate: f64, delta: f64) -> DpResult<Self> {
        if !(sample_rate > 0.0 && sample_rate <= 1.0) {
            return Err(psg_privacy::Error::InvalidSampleRate {
                sample_rate,
                expected: "in (0, 1]",
            }
            .into());
        }
        Self::new((1.0 / sample_rate).floor() as u64, delta)
    }

    /// Steps in an epoch.
    pub fn steps_per_epoch(&self) -> u64 {
        self.steps_per_epoch
    }

    /// Call after each step: the report when `dp`'s last step ended an epoch, else `None`.
    ///
    /// # Errors
    ///
    /// As [`DpSgd::epsilon`], at epoch ends only.
    pub fn after_step(&self, dp: &DpSgd) -> DpResult<Option<EpochReport>> {
        let steps = dp.steps();
        if steps == 0 || !steps.is_multiple_of(self.steps_per_epoch) {
            return Ok(None);
        }
        Ok(Some(EpochReport {
            epoch: steps / self.steps_per_epoch,
            epsilon: dp.epsilon(self.delta)?,
        }))
    }
}

/// Epsilon at the end of an epoch.
#[derive(Debug, Clone, PartialEq)]
pub struct EpochReport {
    /// The epoch that ended (1 for the first).
    pub epoch: u64,
    /// The privacy spent by then.
    pub epsilon: EpsilonReport,
}

impl fmt::Display for EpochReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "epoch {}: {}", self.epoch, self.epsilon)
    }
}
