//! The DP-SGD step: clip each sample, aggregate, add calibrated Gaussian noise, record the step
//! with the accountant.

use std::fmt;

use psg_privacy::accountant::{PldAccountant, RdpAccountant};
use psg_privacy::normal::NoiseMode;
use psg_runtime::{DType, Tensor};

use super::aggregation::Aggregation;
use super::clipping::Clipping;
use super::error::{DpError, DpResult};
use super::generator::NoiseGenerator;
use super::noise::{add_noise, add_noise_to_fresh, NoiseKey};
use super::report::{EpsilonReport, SensitivityBasis};
use super::robust::RobustOp;

/// The parameters of DP-SGD (Opacus' `noise_multiplier`, `max_grad_norm`, sample rate and
/// `expected_batch_size`), and the aggregation.
#[derive(Debug, Clone, PartialEq)]
pub struct DpSgdConfig {
    /// The noise's standard deviation over the sensitivity (sigma; finite, >= 0; 0 gives
    /// epsilon = inf).
    pub noise_multiplier: f64,
    /// How each sample is clipped.
    pub clipping: Clipping,
    /// The Poisson sampling rate q of each example, in (0, 1]: usually expected batch size /
    /// dataset size.
    pub sample_rate: f64,
    /// What [`Aggregation::ClippedMean`] divides the noisy sum by (Opacus: sample rate times
    /// dataset size), not the sampled batch's own size, which varies under Poisson sampling.
    pub expected_batch_size: f64,
    /// What is done with the clipped gradients.
    pub aggregation: Aggregation,
}

impl DpSgdConfig {
    /// Opacus' DP-SGD: the clipped mean ([`Aggregation::ClippedMean`]) with these parameters.
    pub fn new(
        noise_multiplier: f64,
        clipping: Clipping,
        sample_rate: f64,
        expected_batch_size: f64,
    ) -> Self {
        DpSgdConfig {
            noise_multiplier,
            clipping,
            sample_rate,
            expected_batch_size,
            aggregation: Aggregation::ClippedMean,
        }
    }

    /// The same configuration with another aggregation.
    pub fn with_aggregation(mut self, aggregation: Aggregation) -> Self {
        self.aggregation = aggregation;
        self
    }

    /// Checks every parameter.
    ///
    /// # Errors
    ///
    /// [`psg_privacy::Error::InvalidNoiseMultiplier`] (negative, infinite or NaN),
    /// [`psg_privacy::Error::InvalidSampleRate`] (outside (0, 1]), [`DpError::InvalidClipNorm`],
    /// [`DpError::ClipNormCountMismatch`] (no per-layer norms), [`DpError::InvalidExpectedBatchSize`],
    /// or a supplied sensitivity's error ([`super::UserSensitivity::validate`]).
    pub fn validate(&self) -> DpResult<()> {
        let sigma = self.noise_multiplier;
        if !(sigma.is_finite() && sigma >= 0.0) {
            return Err(psg_privacy::Error::InvalidNoiseMultiplier {
                noise_multiplier: sigma,
            }
            .into());
        }
        let q = self.sample_rate;
        if !(q > 0.0 && q <= 1.0) {
            return Err(psg_privacy::Error::InvalidSampleRate {
                sample_rate: q,
                expected: "in (0, 1] for a DP-SGD step (a rate of 0 samples no data and makes \
                           the expected batch size 0)",
            }
            .into());
        }
        self.clipping.validate()?;
        let e = self.expected_batch_size;
        if !(e.is_finite() && e > 0.0) {
            return Err(DpError::InvalidExpectedBatchSize { value: e });
        }
        if let Aggregation::Robust {
            sensitivity: Some(s),
            ..
        } = &self.aggregation
        {
            s.validate()?;
        }
        Ok(())
    }
}

/// What one DP-SGD step returns.
#[derive(Debug, Clone)]
pub struct DpStep {
    /// The noisy aggregate of each parameter tensor, shaped like one sample of it, on its device.
    pub gradients: Vec<Tensor>,
    /// B, the number of samples this step saw.
    pub batch_size: usize,
    /// The standard deviation of the noise in `gradients`: `sigma * S`, divided by the expected
    /// batch size for [`Aggregation::ClippedMean`].
    pub noise_std: f64,
    /// The key each tensor's noise came from. They include the seed: whoever holds them can
    /// recompute and subtract the noise, so never publish them with the gradients.
    pub noise_keys: Vec<NoiseKey>,
    /// How the noise values were made.
    pub noise_mode: NoiseMode,
}

/// A DP-SGD run: its configuration, noise generator and privacy accountant.
///
/// Each [`DpSgd::step`] clips, aggregates, adds noise from the generator (fresh counters every
/// step) and records one step `(noise_multiplier, sample_rate)` with an [`RdpAccountant`];
/// [`DpSgd::epsilon`] reports the privacy spent, for Poisson sampling at the sample rate.
pub struct DpSgd {
    config: DpSgdConfig,
    noise: NoiseGenerator,
    accountant: RdpAccountant,
    steps: u64,
}

impl DpSgd {
    /// A run with no steps yet.
    ///
    /// # Errors
    ///
    /// As [`DpSgdConfig::validate`], and [`DpError::ResumeMismatch`] for a generator past step 0
    /// ([`NoiseGenerator::at_step`]): a resumed run's epsilon counts the steps before the
    /// checkpoint, which [`DpSgd::resume`] takes.
    pub fn new(config: DpSgdConfig, noise: NoiseGenerator) -> DpResult<Self> {
        Self::resume(config, noise, RdpAccountant::new())
    }

    /// A run resumed from a checkpoint: `noise` continues at the step the run had reached
    /// ([`NoiseGenerator::at_step`], with the run's seed) and `accountant` holds the steps taken
    /// so far (saved from [`DpSgd::accountant`], or rebuilt with [`RdpAccountant::steps`] from
    /// each phase's noise multiplier, sample rate and step count). [`DpSgd::epsilon`] then
    /// counts every step of the run, and [`DpSgd::steps`] the steps before the checkpoint too.
    ///
    /// ```
    /// use psg_ops::dp::{Clipping, DpSgd, DpSgdConfig, NoiseGenerator};
    /// use psg_privacy::accountant::RdpAccountant;
    ///
    /// let config = DpSgdConfig::new(1.1, Clipping::flat(1.0), 0.01, 640.0);
    /// // 1000 steps were taken before the checkpoint.
    /// let mut taken = RdpAccountant::new();
    /// taken.steps(1.1, 0.01, 1000)?;
    /// let run = DpSgd::resume(config.clone(), NoiseGenerator::new(7).at_step(1000), taken)?;
    /// assert_eq!(run.steps(), 1000);
    /// assert!(run.epsilon(1e-5)?.epsilon() > 1.0);
    /// // Without the accountant the steps before the checkpoint would go uncounted: refused.
    /// assert!(DpSgd::new(config, NoiseGenerator::new(7).at_step(1000)).is_err());
    /// # Ok::<(), psg_ops::dp::DpError>(())
    /// ```
    ///
    /// # Errors
    ///
    /// As [`DpSgdConfig::validate`], and [`DpError::ResumeMismatch`] where the generator's step
    /// differs from the steps the accountant records: fewer recorded steps would under-report
    /// epsilon, and a generator behind them would repeat noise already added.
    pub fn resume(
        config: DpSgdConfig,
        noise: NoiseGenerator,
        accountant: RdpAccountant,
    ) -> DpResult<Self> {
        config.validate()?;
        let steps = accountant.total_steps();
        if noise.step() != steps {
            return Err(DpError::ResumeMismatch {
                generator_step: noise.step(),
                accountant_steps: steps,
            });
        }
        Ok(DpSgd {
            config,
            noise,
            accountant,
            steps,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &DpSgdConfig {
        &self.config
    }

    /// The noise generator (its mode, step and where its seeds come from).
    pub fn noise_generator(&self) -> &NoiseGenerator {
        &self.noise
    }

    /// The accountant, holding one entry per step taken. Its epsilon is the run's only where
    /// [`DpSgd::epsilon`] gives one, so it is refused where that is refused.
    ///
    /// # Errors
    ///
    /// [`DpError::NoPrivacyGuarantee`] for a robust aggregation without a supplied sensitivity:
    /// the accountant's epsilon would assume the clipping norm bounds it, which nobody stated.
    pub fn accountant(&self) -> DpResult<&RdpAccountant> {
        self.config.aggregation.guarantee()?;
        Ok(&self.accountant)
    }

    /// Steps taken.
    pub fn steps(&self) -> u64 {
        self.steps
    }

    /// One DP-SGD step on the per-sample gradients of a model, one `[B, ...]` tensor per
    /// parameter tensor (f32 or f64, one device, one B; B may be 0 under Poisson sampling).
    ///
    /// Clips each sample (flat or per layer), aggregates, adds Gaussian noise of standard deviation
    /// `noise_multiplier * sensitivity` to the aggregate (for the clipped mean: to the sum, then
    /// divides by the expected batch size; psg divides first and adds the noise divided, the same
    /// up to rounding), and records one step with the accountant.
    ///
    /// # Errors
    ///
    /// [`DpError::NoGradients`], [`DpError::BatchSizeMismatch`], [`DpError::UnsupportedDType`],
    /// [`DpError::ClipNormCountMismatch`], a device mismatch or device error
    /// ([`DpError::Runtime`]), or the CSPRNG's error in secure mode. Nothing is recorded then.
    pub fn step(&mut self, grads: &[&Tensor]) -> DpResult<DpStep> {
        let batch_size = check_gradients(grads)?;
        let config = &self.config;
        let factors = config.clipping.factors(grads)?;
        let e = config.expected_batch_size;
        let std = config
            .aggregation
            .output_noise_std(config.noise_multiplier, &config.clipping, e);
        let mode = self.noise.mode();
        // A user's aggregation may return memory it keeps (a cached tensor, a borrowed view):
        // its output gets the noise in a copy, never in place.
        let fresh = !matches!(
            config.aggregation,
            Aggregation::Robust {
                op: RobustOp::Custom(_),
                ..
            }
        );
        let mut gradients = Vec::with_capacity(grads.len());
        let mut noise_keys = Vec::with_capacity(grads.len());
        for (g, f) in grads.iter().zip(&factors) {
            let aggregate = config.aggregation.apply(g, f, e)?;
            let key = self.noise.next_key(aggregate.len(), aggregate.dtype())?;
            gradients.push(if fresh {
                add_noise_to_fresh(aggregate, std, key, mode)?
            } else {
                add_noise(&aggregate, std, key, mode)?
            });
            noise_keys.push(key);
        }
        self.noise.advance()?;
        self.accountant
            .step(config.noise_multiplier, config.sample_rate)?;
        self.steps += 1;
        Ok(DpStep {
            gradients,
            batch_size,
            noise_std: std,
            noise_keys,
            noise_mode: mode,
        })
    }

    /// The privacy spent so far at `delta`, for Poisson sampling at the sample rate. With no
    /// steps taken, epsilon is 0 (see [`RdpAccountant::epsilon`]).
    ///
    /// # Errors
    ///
    /// [`DpError::NoPrivacyGuarantee`] for a robust aggregation without a supplied sensitivity;
    /// [`psg_privacy::Error::InvalidDelta`] unless `0 < delta < 1`.
    pub fn epsilon(&self, delta: f64) -> DpResult<EpsilonReport> {
        self.report(&self.accountant, self.steps, delta, false)
    }

    /// The privacy that would be spent after `more` further steps like these: for stopping
    /// *before* a budget is exceeded.
    ///
    /// # Errors
    ///
    /// As [`DpSgd::epsilon`].
    pub fn epsilon_after(&self, more: u64, delta: f64) -> DpResult<EpsilonReport> {
        let mut accountant = self.accountant.clone();
        let c = &self.config;
        accountant.steps(c.noise_multiplier, c.sample_rate, more)?;
        self.report(&accountant, self.steps.saturating_add(more), delta, false)
    }

    /// The privacy spent so far at `delta` as [`PldAccountant`] counts it (privacy loss
    /// distributions, as dp_accounting does): the same steps as [`DpSgd::epsilon`], a smaller
    /// epsilon (8-13% in typical settings), at a cost of a tenth of a second or more a call, so
    /// for reports rather than a check every step. Budgets ([`super::Budget`]) count with RDP.
    ///
    /// # Errors
    ///
    /// As [`DpSgd::epsilon`], and [`psg_privacy::Error::PldTooLarge`] where the PLD would be
    /// too large (very little noise or very many steps).
    pub fn epsilon_pld(&self, delta: f64) -> DpResult<EpsilonReport> {
        self.report(&self.accountant, self.steps, delta, true)
    }

    fn report(
        &self,
        accountant: &RdpAccountant,
        steps: u64,
        delta: f64,
        pld: bool,
    ) -> DpResult<EpsilonReport> {
        let c = &self.config;
        c.aggregation.guarantee()?;
        let spent = if pld {
            let mut tight = PldAccountant::new();
            for run in accountant.history() {
                tight.steps(run.noise_multiplier, run.sample_rate, run.steps)?;
            }
            tight.epsilon(delta)?
        } else {
            accountant.epsilon(delta)?
        };
        let (sensitivity, basis) = match &c.aggregation {
            Aggregation::Robust {
                sensitivity: Some(s),
                ..
            } => (s.value, SensitivityBasis::Caller(s.clone())),
            _ => (
                c.clipping.sensitivity(),
                SensitivityBasis::Clipping(c.clipping.clone()),
            ),
        };
        Ok(EpsilonReport {
            spent,
            steps,
            sample_rate: c.sample_rate,
            noise_multiplier: c.noise_multiplier,
            sensitivity,
            basis,
            secure_noise: self.noise.is_secure(),
            pld,
        })
    }
}

/// B, after checking the set is non-empty, of one batch size and of a dtype noise supports.
fn check_gradients(grads: &[&Tensor]) -> DpResult<usize> {
    let first = grads.first().ok_or(DpError::NoGradients)?.batch_size()?;
    for (tensor, g) in grads.iter().enumerate() {
        let batch_size = g.batch_size()?;
        if batch_size != first {
            return Err(DpError::BatchSizeMismatch {
                tensor,
                batch_size,
                first,
            });
        }
        if !matches!(g.dtype(), DType::F32 | DType::F64) {
            return Err(DpError::UnsupportedDType {
                tensor,
                dtype: g.dtype(),
            });
        }
    }
    Ok(first)
}

impl fmt::Display for DpSgd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &self.config;
        write!(
            f,
            "DP-SGD ({}, {}, noise multiplier {}, Poisson sample rate {}, expected batch size {}) \
             after {} steps; noise: {}",
            c.aggregation.name(),
            c.clipping,
            c.noise_multiplier,
            c.sample_rate,
            c.expected_batch_size,
            self.steps,
            self.noise
        )
    }
}

impl fmt::Debug for DpSgd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DpSgd")
            .field("config", &self.config)
            .field("noise", &self.noise)
            .field("steps", &self.steps)
            .finish_non_exhaustive()
    }
}
