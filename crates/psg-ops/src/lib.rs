//! # psg-ops
//!
//! psg's built-in operations on per-sample gradients `g[B, ...]` (row b = sample b), along the
//! batch axis. Each is a `#[batch_reduce]` definition, so it runs on the CPU and, through the same
//! pipeline as user-defined reductions, on a CUDA GPU; the device is the one holding `g`.
//!
//! ```
//! use psg_runtime::{Device, Tensor};
//!
//! // g[B = 2, P = 2]: row b is sample b's gradient.
//! let g = Tensor::from_slice(&[1.0f32, 2.0, 3.0, 4.0], &[2, 2], &Device::Cpu)?;
//! let m = psg_ops::mean(&g)?;
//! assert_eq!(m.to_vec::<f32>()?, vec![2.0, 3.0]);
//! let s = psg_ops::std(&g, 1.0)?;
//! assert_eq!(s.to_vec::<f32>()?, vec![2.0f32.sqrt(), 2.0f32.sqrt()]);
//! # Ok::<(), psg_runtime::Error>(())
//! ```

#![deny(missing_docs)]

mod clip;
mod density;
pub mod dp;
pub mod layers;
mod moments;
mod nonfinite;
mod order;
mod outliers;
mod rows;
mod signs;

pub use clip::{
    clip_factors, clip_kernel_sources, clip_values, clip_values_relative, clipped_mean,
    clipped_median, clipped_sum, flat_clip_factors, per_layer_clip_factors, per_layer_norms,
    per_sample_norms, Denominator,
};
pub use density::{gaussian_weighted, gaussian_weighted_sum};
pub use moments::{mean, std, sum, var};
pub use nonfinite::{apply_nonfinite_policy, gather_kernel_sources, gather_rows, NonFinite};
pub use order::{kth, max, median, median_low, min, quantile};
pub use outliers::{outlier_mean, remove_outliers, OutlierMean, OutlierRule, Removed};
pub use rows::row_kernel_sources;
pub use signs::{majority_vote, sign, sign_sum};

/// Every built-in batch reduction's generated definition (CUDA sources for each dtype and CPU
/// functions): what the NVRTC check compiles, the snapshot tests record and benchmarks time.
pub fn builtin_reductions() -> Vec<&'static psg_runtime::ReductionDef> {
    let mut all = moments::defs();
    all.extend(signs::defs());
    all.extend(order::defs());
    all.extend(density::defs());
    all.extend(outliers::defs());
    all.extend(clip::defs());
    all
}
