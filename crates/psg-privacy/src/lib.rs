//! Privacy for psg: an RDP accountant that reproduces Opacus, a PLD accountant that reproduces
//! dp_accounting (a tighter epsilon), and Gaussian noise from a counter-based generator that gives
//! the same bits on the CPU and on a CUDA GPU.
//!
//! ```
//! use psg_privacy::accountant::RdpAccountant;
//!
//! // DP-SGD: noise multiplier 1.5, Poisson sample rate 0.04, 2250 steps.
//! let mut accountant = RdpAccountant::new();
//! for _ in 0..2250 {
//!     accountant.step(1.5, 0.04)?;
//! }
//! let spent = accountant.epsilon(1e-5)?;
//! // Holds for Poisson sampling of each example at rate 0.04.
//! println!("{spent}");
//! assert!((spent.epsilon - 7.329_111_171_438_654_5).abs() < 1e-9);
//! # Ok::<(), psg_privacy::Error>(())
//! ```
//!
//! - [`accountant`]: the accountants ([`RdpAccountant`](accountant::RdpAccountant) and the
//!   tighter [`PldAccountant`](accountant::PldAccountant)) and noise calibration (through
//!   either).
//! - [`sampling`]: [`PoissonSampler`](sampling::PoissonSampler), the batches the epsilon assumes,
//!   drawn from the OS CSPRNG.
//! - [`philox`]: the Philox4x32-10 generator.
//! - [`normal`]: normal variates from Philox, on the CPU and as CUDA C source
//!   ([`normal::NOISE_CUDA_SOURCE`]), bit-identical, plus secure mode.

#![deny(missing_docs)]

pub mod accountant;
mod error;
pub mod normal;
pub mod philox;
pub mod sampling;

pub use error::{Error, Result};
