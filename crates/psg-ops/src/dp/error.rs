//! The DP module's error type: invalid privacy parameters, an epsilon asked of an aggregation
//! without a privacy guarantee, and the runtime's and accountant's errors passed through.

use psg_runtime::DType;

/// Everything that can go wrong in [`crate::dp`]. Messages say what was wrong and what to do.
///
/// Converts into [`psg_runtime::Error`] (runtime errors unchanged, the rest as
/// [`psg_runtime::Error::InvalidParameter`] with the same message), so `?` works in functions
/// that return the runtime's `Result`.
#[derive(Debug, thiserror::Error)]
pub enum DpError {
    /// A tensor, device or kernel error from the runtime or an operation.
    #[error(transparent)]
    Runtime(#[from] psg_runtime::Error),
    /// An error from `psg-privacy`: an invalid noise multiplier, sample rate, delta, target
    /// epsilon or noise standard deviation, a noise range past 2^62 elements, or an unreadable OS
    /// CSPRNG.
    #[error(transparent)]
    Privacy(#[from] psg_privacy::Error),
    /// A clip norm that is not a finite number > 0.
    #[error(
        "clip norm {value:?}{} is invalid: it must be a finite number > 0 (the largest L2 norm a \
         sample's gradient keeps; Opacus calls it max_grad_norm)",
        layer.map(|l| format!(" (of tensor #{l})")).unwrap_or_default()
    )]
    InvalidClipNorm {
        /// The value given.
        value: f64,
        /// For per-layer clipping, which tensor's norm.
        layer: Option<usize>,
    },
    /// Per-layer clipping configured with no clip norm at all.
    #[error(
        "per-layer clipping needs one clip norm per parameter tensor, and none was given; pass \
         Clipping::per_layer(vec![c1, c2, ...]) or use Clipping::flat(c)"
    )]
    NoClipNorms,
    /// Per-layer clipping with a number of clip norms other than the number of tensors.
    #[error(
        "per-layer clipping has {norms} clip norms but the step got {tensors} tensors; give one \
         clip norm per parameter tensor, in the same order"
    )]
    ClipNormCountMismatch {
        /// Clip norms configured.
        norms: usize,
        /// Per-sample tensors passed.
        tensors: usize,
    },
    /// An expected batch size that is not a finite number > 0.
    #[error(
        "expected batch size {value:?} is invalid: it must be a finite number > 0 (sample rate \
         times dataset size; Opacus divides the noisy sum by it)"
    )]
    InvalidExpectedBatchSize {
        /// The value given.
        value: f64,
    },
    /// A step without any per-sample tensor.
    #[error("the step got no per-sample gradient tensors; pass one [B, ...] tensor per parameter tensor")]
    NoGradients,
    /// Per-sample tensors of one step with different batch sizes.
    #[error(
        "per-sample tensor #{tensor} has batch size {batch_size} but tensor #0 has {first}; every \
         tensor of one step holds the same B samples (first dimension)"
    )]
    BatchSizeMismatch {
        /// Which tensor differs.
        tensor: usize,
        /// Its batch size.
        batch_size: usize,
        /// Tensor #0's batch size.
        first: usize,
    },
    /// A dtype the noise kernels do not support.
    #[error(
        "tensor #{tensor} is {dtype}: DP noise is generated in f32 or f64 only (rounding noise to \
         f16 or bf16 would weaken the defences it is built with); convert the per-sample \
         gradients to f32 first, on their device: `g.to_dtype(DType::F32)` (exact for f16 and \
         bf16)"
    )]
    UnsupportedDType {
        /// Which tensor (0 for single-tensor calls).
        tensor: usize,
        /// Its dtype.
        dtype: DType,
    },
    /// A caller-supplied sensitivity that is not a finite number > 0.
    #[error("the supplied sensitivity {value:?} is invalid: it must be a finite number > 0")]
    InvalidSensitivity {
        /// The value given.
        value: f64,
    },
    /// A caller-supplied sensitivity without a justification.
    #[error(
        "the supplied sensitivity {value:?} has no justification: state why one sample cannot \
         move the aggregate by more than this in L2 norm (it becomes part of every epsilon \
         report)"
    )]
    MissingJustification {
        /// The value given.
        value: f64,
    },
    /// Epsilon asked of an aggregation whose sensitivity is unknown.
    #[error(
        "no privacy guarantee: the {aggregation} aggregation has no sensitivity psg can bound \
         ({why}), so no epsilon is reported; use ClippedSum or ClippedMean, or supply a \
         sensitivity with its justification (Aggregation::Robust {{ sensitivity: \
         Some(UserSensitivity {{ .. }}), .. }})"
    )]
    NoPrivacyGuarantee {
        /// The aggregation's name.
        aggregation: &'static str,
        /// Why its sensitivity is unbounded, in words.
        why: &'static str,
    },
    /// A run started or resumed with a noise generator whose step differs from the steps its
    /// accountant records: fewer recorded steps under-report epsilon, and a generator behind
    /// the recorded steps repeats noise already used.
    #[error(
        "the noise generator is at step {generator_step} but the accountant records \
         {accountant_steps} steps: a run resumed from a checkpoint needs both, \
         NoiseGenerator::at_step(n) and an RdpAccountant holding those n steps, passed to \
         DpSgd::resume (a new run's generator starts at step 0); with fewer steps recorded \
         epsilon would leave out the steps already taken"
    )]
    ResumeMismatch {
        /// The generator's step ([`crate::dp::NoiseGenerator::step`]).
        generator_step: u64,
        /// The steps the accountant records
        /// ([`psg_privacy::accountant::RdpAccountant::total_steps`]).
        accountant_steps: u64,
    },
    /// The noise generator's step counter ran out (after 2^64 - 1 steps).
    #[error(
        "the noise generator's step counter is exhausted; start a new generator with a new seed"
    )]
    StepCounterExhausted,
}

/// `Result` with [`DpError`].
pub type DpResult<T> = std::result::Result<T, DpError>;

impl From<DpError> for psg_runtime::Error {
    fn from(e: DpError) -> Self {
        match e {
            DpError::Runtime(e) => e,
            other => psg_runtime::Error::InvalidParameter(other.to_string()),
        }
    }
}
