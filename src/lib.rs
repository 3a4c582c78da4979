//! # psg: per-sample-gradient operations on NVIDIA GPUs
//!
//! psg computes statistics of per-sample gradients `g[B, ...]` (row b = sample b) along the batch
//! axis — mean, std, median, outlier removal, Gaussian-density weighting, clipping, sign — for
//! differentially private and robust training, with one fused CUDA kernel per operation and a CPU
//! backend that runs the same definitions where there is no GPU. New reductions are written in
//! Rust syntax with [`batch_reduce`]:
//!
//! ```
//! use psg::prelude::*;
//!
//! /// Mean of the values within k standard deviations of the column's mean.
//! #[batch_reduce]
//! fn trimmed_mean(g: Batch, k: f32) -> f32 {
//!     let (mu, sigma) = (g.mean(), g.std());
//!     // Equal values have sigma = 0, but their f32 mean can round off them: keep such a column.
//!     g.filter(|x| !(sigma > 0.0) || (x - mu).abs() <= k * sigma).mean()
//! }
//!
//! let device = Device::Cpu; // or psg::select_device().device
//! let g = Tensor::from_slice(&[1.0f32, 2.0, 3.0, 100.0], &[4, 1], &device)?;
//! let m = trimmed_mean(&g, 1.0)?;
//! assert_eq!(m.to_vec::<f32>()?, vec![2.0]);
//! // Seven copies of 0.1 have a std of 0 and a mean that rounds off 0.1: all are kept.
//! let same = Tensor::from_slice(&[0.1f32; 7], &[7, 1], &device)?;
//! assert!(!trimmed_mean(&same, 1.0)?.to_vec::<f32>()?[0].is_nan());
//! # Ok::<(), psg::Error>(())
//! ```
//!
//! ## The DSL
//!
//! A batch reduction takes one [`Batch`] (the column: the B values of one coordinate), any
//! number of [`PerSample`] vectors (length B, broadcast over columns) and scalar parameters
//! (`f32` or `f64`), and returns one scalar per column (`f32`), a tuple of them, or a `Batch`
//! shaped like the input. Column methods: `map filter zip sign sum mean var std min max count
//! median median_low quantile kth`; scalar methods: `abs sqrt exp ln floor powi min max clamp
//! sign is_nan is_finite`; the functions `normal_pdf(x, mu, sigma)` and `normal_kernel(x, mu, sigma)`
//! (the density without its `1 / (sigma sqrt(2 pi))`); arithmetic, comparisons and
//! `if`/`else`. Scalars have the accumulator type (f32 for f32, f16 and bf16 input, f64 for
//! f64), so one definition serves every dtype. Anything else is a compile error that says what is
//! allowed.

#![deny(missing_docs)]

pub use psg_macros::batch_reduce;
// Inlined, so that `cargo doc -p psg --no-deps` documents the built-ins, the DP API and the
// runtime under psg's own pages instead of linking to crates it did not build.
#[doc(inline)]
pub use psg_ops as ops;
#[doc(inline)]
pub use psg_privacy as privacy;
#[doc(inline)]
pub use psg_runtime as runtime;
pub use psg_runtime::{select_device, DType, Device, DeviceChoice, Error, Result, Tensor};

/// Marker for the column input of a [`batch_reduce`] function: the B values of one coordinate.
/// It exists for documentation; the macro replaces it with `&Tensor`.
pub enum Batch {}

/// Marker for a per-sample input of a [`batch_reduce`] function: a length-B vector broadcast over
/// every column (e.g. clip factors). The macro replaces it with `&Tensor` of shape `[B]`.
pub enum PerSample {}

/// The usual imports: the macro, the tensor and device types, and the built-in operations.
///
/// Its `Result` takes an optional error type, so code with other errors still reads as usual
/// after a glob import:
///
/// ```
/// use psg::prelude::*;
///
/// fn parse(text: &str) -> Result<u32, String> {
///     text.parse().map_err(|e| format!("{e}"))
/// }
/// fn zeros() -> Result<Tensor> {
///     Tensor::zeros(DType::F32, &[2, 3], &Device::Cpu)
/// }
/// assert_eq!(parse("7"), Ok(7));
/// assert_eq!(zeros().unwrap().shape(), &[2, 3]);
/// ```
pub mod prelude {
    pub use crate::{batch_reduce, Batch, PerSample};
    pub use psg_ops as ops;
    pub use psg_runtime::{select_device, DType, Device, Error, Result, Tensor};
}

/// The README's examples, compiled and run as doctests so that they stay true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
