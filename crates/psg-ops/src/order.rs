//! Order statistics along the batch axis: median, lower median, quantiles and the k-th
//! smallest. Exact (bit-equal to sorting the column in IEEE total order); if a column holds a
//! NaN the result is NaN, as PyTorch.

use psg_macros::batch_reduce;
use psg_runtime::{Error, Result, Tensor};

/// The median over the batch axis; for an even count, the mean of the two middle values
/// (NumPy's `median`). NaN for an empty batch.
#[batch_reduce(crate = "psg_runtime")]
pub fn median(g: Batch) -> f32 {
    g.median()
}

/// The lower median over the batch axis: for an even count, the lower of the two middle values
/// (`torch.median(g, dim=0)`).
#[batch_reduce(crate = "psg_runtime")]
pub fn median_low(g: Batch) -> f32 {
    g.median_low()
}

#[batch_reduce(crate = "psg_runtime")]
fn quantile_q(g: Batch, q: f64) -> f32 {
    g.quantile(q)
}

#[batch_reduce(crate = "psg_runtime")]
fn kth_smallest(g: Batch, k: f64) -> f32 {
    g.kth(k)
}

/// The q-quantile over the batch axis with linear interpolation (`torch.quantile`'s default).
/// `q` must lie in [0, 1].
pub fn quantile(g: &Tensor, q: f64) -> Result<Tensor> {
    if !(0.0..=1.0).contains(&q) {
        return Err(Error::InvalidParameter(format!(
            "quantile: q must lie in [0, 1] (0.5 is the median), got {q:?}"
        )));
    }
    crate::as_op("quantile", quantile_q(g, q))
}

/// The k-th smallest value over the batch axis (0-based, `torch.kthvalue(g, k + 1, dim=0)`).
/// `k` must lie in `[0, B)`.
pub fn kth(g: &Tensor, k: usize) -> Result<Tensor> {
    let b = crate::as_op("kth", g.batch_size())?;
    if k >= b {
        return Err(Error::InvalidParameter(format!(
            "kth: k = {k} is outside [0, {b}) for a batch of {b} samples (k is 0-based: 0 is the minimum)"
        )));
    }
    crate::as_op("kth", kth_smallest(g, k as f64))
}

/// Minimum over the batch axis (NaN propagates; -0 < +0).
#[batch_reduce(crate = "psg_runtime")]
pub fn min(g: Batch) -> f32 {
    g.min()
}

/// Maximum over the batch axis (NaN propagates; -0 < +0).
#[batch_reduce(crate = "psg_runtime")]
pub fn max(g: Batch) -> f32 {
    g.max()
}

pub(crate) fn defs() -> Vec<&'static psg_runtime::ReductionDef> {
    vec![
        &median::DEF,
        &median_low::DEF,
        &quantile_q::DEF,
        &kth_smallest::DEF,
        &min::DEF,
        &max::DEF,
    ]
}
