//! Differentially private aggregation: calibrated Gaussian noise on the GPU and the CPU (the same
//! bits on both), the DP-SGD step, and a privacy accountant that tracks epsilon.
//!
//! ```
//! use psg_ops::dp::{Budget, Clipping, DpSgd, DpSgdConfig, EpochTracker, NoiseGenerator};
//! use psg_runtime::{select_device, Tensor};
//!
//! // Per-sample gradients of a model with two parameter tensors (a [2, 2] weight and a [2]
//! // bias) for a batch of B = 3 samples: one [B, ...] tensor per parameter tensor.
//! let device = select_device().device;
//! let w = [0.1f32, -0.2, 0.3, 0.4, 2.0, -1.0, 0.5, 0.0, -3.0, 1.5, 0.2, 0.7];
//! let w = Tensor::from_slice(&w, &[3, 2, 2], &device)?;
//! let b = Tensor::from_slice(&[0.05f32, -0.1, 0.9, 0.2, -0.4, 0.3], &[3, 2], &device)?;
//!
//! // Opacus' DP-SGD: clip each sample to norm 1 (over both tensors), noise multiplier 1.1,
//! // Poisson sampling of each example at rate q = 256 / 60000, and the noisy sum divided by
//! // the expected batch size 256. Secure mode: a seed from the OS CSPRNG at every step.
//! let q = 256.0 / 60_000.0;
//! let config = DpSgdConfig::new(1.1, Clipping::flat(1.0), q, 256.0);
//! let mut dp = DpSgd::new(config, NoiseGenerator::secure()?)?;
//! let budget = Budget::new(8.0, 1e-5)?;
//! let epochs = EpochTracker::for_sample_rate(q, 1e-5)?; // 234 steps per epoch
//!
//! for _ in 0..3 {
//!     if !budget.allows_next_step(&dp)? {
//!         break; // the next step would spend more than epsilon = 8
//!     }
//!     let step = dp.step(&[&w, &b])?;
//!     // One noisy gradient per parameter tensor, on the gradients' device.
//!     assert_eq!(step.gradients[0].shape(), &[2, 2]);
//!     assert_eq!(step.gradients[1].shape(), &[2]);
//!     if let Some(report) = epochs.after_step(&dp)? {
//!         println!("{report}"); // epsilon at the end of each epoch
//!     }
//! }
//! let spent = dp.epsilon(1e-5)?;
//! // "epsilon = 0.666... at delta = 0.00001 after 3 steps (RDP order 13); holds for Poisson
//! // sampling of each example at rate 0.004266..., with noise multiplier 1.1 and L2
//! // sensitivity 1 (from flat clipping to C = 1)"
//! println!("{spent}");
//! assert!(spent.epsilon() > 0.0 && !budget.status(&dp)?.exhausted());
//! # Ok::<(), psg_ops::dp::DpError>(())
//! ```
//!
//! # What each aggregation guarantees
//!
//! | aggregation | sensitivity | epsilon reported |
//! | --- | --- | --- |
//! | [`Aggregation::ClippedSum`] | C (flat) or sqrt(sum C_l^2) (per layer) | yes |
//! | [`Aggregation::ClippedMean`] (Opacus) | the same, on the sum before dividing by the expected batch size | yes |
//! | [`Aggregation::Robust`] with a [`UserSensitivity`] | the caller's value | yes, resting on the caller's stated justification |
//! | [`Aggregation::Robust`] without | unknown | no: [`DpError::NoPrivacyGuarantee`] |
//!
//! A robust aggregation (median, outlier removal, density weighting, signs) can move by far more
//! than one clipped gradient when one sample is added or removed, by an amount that depends on
//! the other samples; [`RobustOp::why_unbounded`] says how for each. A user's own aggregation
//! ([`RobustOp::Custom`], for instance a `#[batch_reduce]` function) runs on the clipped
//! gradients the same way, with the same rule: an epsilon only with a stated sensitivity.
//!
//! # What the epsilon assumes
//!
//! Epsilon comes from an RDP accountant that matches Opacus and **holds for Poisson sampling at
//! rate q**: every example joins each batch independently with probability q (so B varies).
//! Shuffled fixed-size batches are a different mechanism it does not cover. Who is in a batch
//! must also stay secret: batches drawn from a known seed can be replayed, and an example then
//! has the protection of the steps it was in without subsampling (for noise multiplier 1, 512
//! steps at q = 1/64 and delta = 1e-5: about 31 by the same RDP accounting for an example drawn
//! 21 times, where the accountant reports 2.5). Draw the batches with
//! [`PoissonSampler::secure`] (the OS CSPRNG, as Opacus' secure mode does). Before any step
//! psg reports epsilon = 0 (outputs that never read the data are (0, 0)-DP), where Opacus' formula
//! gives about 0.103 at delta = 1e-5; a step with sample rate 0 is refused (it samples no data,
//! and the expected batch size would be 0).
//!
//! # Noise
//!
//! Element `i` of a tensor noised under [`NoiseKey`] `{seed, step, offset}` gets Philox counter
//! `(offset + i, step)` (see [`psg_privacy::normal`]); a [`NoiseGenerator`] hands each tensor of a
//! step its own offsets and each step its own number, so counters never repeat. The CPU and the
//! GPU give the same bits. [`NoiseGenerator::secure`] is Opacus' secure mode: a seed from the OS
//! CSPRNG at every step and each value the sum of four normal draws divided by 2; a fixed seed is
//! reproducible but predictable, and the generator's `Display` says which it is.

mod aggregation;
mod budget;
mod clipping;
mod error;
mod generator;
mod noise;
mod noise_cuda;
mod report;
mod robust;
mod step;

pub use aggregation::{Aggregation, UserSensitivity};
pub use budget::{Budget, BudgetStatus, EpochReport, EpochTracker};
pub use clipping::Clipping;
pub use error::{DpError, DpResult};
pub use generator::NoiseGenerator;
pub use noise::{add_noise, noise, NoiseKey};
pub use noise_cuda::noise_kernel_sources;
pub use psg_privacy::normal::NoiseMode;
pub use psg_privacy::sampling::PoissonSampler;
pub use report::{EpsilonReport, SensitivityBasis};
pub use robust::{dp_reductions, CustomOp, RobustOp};
pub use step::{DpSgd, DpSgdConfig, DpStep};
