//! Sign aggregation (signSGD): per-sample signs, their sum and the majority vote.

use psg_macros::batch_reduce;

/// The sign of every per-sample gradient element: -1, 0 (for +-0) or +1, NaN for NaN; a tensor
/// shaped like `g`.
#[batch_reduce(crate = "psg_runtime")]
pub fn sign(g: Batch) -> Batch {
    g.sign()
}

/// Sum over the batch axis of the per-sample signs (the vote count of signSGD), in g's dtype:
/// exact up to 2^24 in f32, but only up to 256 in bf16 and 2048 in f16, whose larger counts
/// round to a neighbour (257 bf16 votes of +1 give 256); its sign, the majority, is exact.
#[batch_reduce(crate = "psg_runtime")]
pub fn sign_sum(g: Batch) -> f32 {
    g.sign().sum()
}

/// The majority vote: the sign of [`sign_sum`] (0 on a tie).
#[batch_reduce(crate = "psg_runtime")]
pub fn majority_vote(g: Batch) -> f32 {
    g.sign().sum().sign()
}

/// The definitions in this module, for tests, benchmarks and the NVRTC check.
pub(crate) fn defs() -> Vec<&'static psg_runtime::ReductionDef> {
    vec![&sign::DEF, &sign_sum::DEF, &majority_vote::DEF]
}
