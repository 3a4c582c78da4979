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

/// The result of an internal step of the public function `op` (a reduction of its own, or a
/// check of g), with its errors naming `op`: the validation's messages begin "reduction
/// `scaled_sum_over`: ...", a name the user never wrote (they called `clipped_mean`), and a
/// tensor's own checks name no function.
pub(crate) fn as_op<T>(op: &str, result: psg_runtime::Result<T>) -> psg_runtime::Result<T> {
    use psg_runtime::Error;
    let rename = |m: String| match m
        .strip_prefix("reduction `")
        .and_then(|rest| rest.split_once('`'))
    {
        Some((_, tail)) => format!("{op}{tail}"),
        None => format!("{op}: {m}"),
    };
    result.map_err(|e| match e {
        Error::Shape(m) => Error::Shape(rename(m)),
        Error::DType(m) => Error::DType(rename(m)),
        Error::DeviceMismatch(m) => Error::DeviceMismatch(rename(m)),
        Error::InvalidParameter(m) => Error::InvalidParameter(rename(m)),
        other => other,
    })
}

#[cfg(test)]
mod tests {
    use psg_runtime::{Device, Error, Tensor};

    #[test]
    fn errors_of_internal_reductions_name_the_function_called() -> psg_runtime::Result<()> {
        let g = Tensor::from_slice(&[1.0f32, 2.0, 3.0, 4.0], &[2, 2], &Device::Cpu)?;
        let f3 = Tensor::from_slice(&[1.0f32, 1.0, 1.0], &[3], &Device::Cpu)?;
        let scalar = Tensor::from_slice(&[1.0f32], &[], &Device::Cpu)?;
        let messages = [
            crate::clipped_mean(&g, &f3, crate::Denominator::Expected(2.0)).err(),
            crate::clipped_sum(&g, &f3).err(),
            crate::clipped_median(&g, &f3).err(),
            crate::quantile(&scalar, 0.5).err(),
            crate::var(&scalar, 1.0).err(),
            crate::std(&scalar, 1.0).err(),
            crate::clip_values(&scalar, 1.0).err(),
            crate::clip_values_relative(&scalar, 0.5).err(),
            crate::kth(&scalar, 0).err(),
            crate::outlier_mean(&scalar, crate::OutlierRule::Mad { k: 3.0 }).err(),
            crate::remove_outliers(
                &scalar,
                crate::OutlierRule::TrimCount { m: 1 },
                crate::Removed::Zero,
            )
            .err(),
        ];
        let called = [
            "clipped_mean",
            "clipped_sum",
            "clipped_median",
            "quantile",
            "var",
            "std",
            "clip_values",
            "clip_values_relative",
            "kth",
            "outlier_mean",
            "remove_outliers",
        ];
        for (e, op) in messages.into_iter().zip(called) {
            let text = match e {
                Some(Error::Shape(m) | Error::InvalidParameter(m)) => m,
                other => panic!("{op}: expected a shape or parameter error, got {other:?}"),
            };
            assert!(text.starts_with(op), "{op}: {text}");
            assert!(!text.contains("reduction `"), "{op}: {text}");
        }
        Ok(())
    }
}
