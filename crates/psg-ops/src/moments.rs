//! Sum, mean, variance and standard deviation along the batch axis.

use psg_macros::batch_reduce;
use psg_runtime::{Error, Result, Tensor};

/// Sum over the batch axis of `g[B, ...]`: one value per coordinate; 0 for an empty batch.
#[batch_reduce(crate = "psg_runtime")]
pub fn sum(g: Batch) -> f32 {
    g.sum()
}

/// Mean over the batch axis; NaN for an empty batch (as `torch.mean`).
#[batch_reduce(crate = "psg_runtime")]
pub fn mean(g: Batch) -> f32 {
    g.mean()
}

#[batch_reduce(crate = "psg_runtime")]
fn var_corrected(g: Batch, correction: f64) -> f32 {
    g.var(correction)
}

#[batch_reduce(crate = "psg_runtime")]
fn std_corrected(g: Batch, correction: f64) -> f32 {
    g.std(correction)
}

fn check_correction(op: &str, correction: f64) -> Result<()> {
    if correction.is_finite() && correction >= 0.0 {
        Ok(())
    } else {
        Err(Error::InvalidParameter(format!(
            "{op}: correction must be a finite number >= 0 (1 is Bessel's correction, as torch.var; 0 is the population variance), got {correction}"
        )))
    }
}

/// Variance over the batch axis: `sum((x - mean)^2) / max(B - correction, 0)`, as
/// `torch.var(g, dim=0, correction=correction)`; `correction = 1.0` is Bessel's. One sample
/// with correction 1 gives NaN, as torch.
pub fn var(g: &Tensor, correction: f64) -> Result<Tensor> {
    check_correction("var", correction)?;
    crate::as_op("var", var_corrected(g, correction))
}

/// Standard deviation over the batch axis: the square root of [`var`].
pub fn std(g: &Tensor, correction: f64) -> Result<Tensor> {
    check_correction("std", correction)?;
    crate::as_op("std", std_corrected(g, correction))
}

/// The definitions in this module, for tests, benchmarks and the NVRTC check.
pub(crate) fn defs() -> Vec<&'static psg_runtime::ReductionDef> {
    vec![
        &sum::DEF,
        &mean::DEF,
        &var_corrected::DEF,
        &std_corrected::DEF,
    ]
}
