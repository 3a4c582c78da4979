//! The crate's error type: every way a caller's input or the operating system can make a call fail.

/// Everything that can go wrong in `psg-privacy`. Messages say what was wrong and what to do.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A delta outside the open interval (0, 1).
    #[error(
        "delta {delta:?} is invalid: it must lie strictly between 0 and 1 (a common choice is a \
         value below 1 / dataset_size, e.g. 1e-5)"
    )]
    InvalidDelta {
        /// The value given.
        delta: f64,
    },
    /// A sampling rate outside the range the call accepts.
    #[error(
        "sample rate {sample_rate:?} is invalid: it must be {expected} (it is the Poisson sampling \
         probability of each example, usually batch_size / dataset_size)"
    )]
    InvalidSampleRate {
        /// The value given.
        sample_rate: f64,
        /// The accepted range, in words.
        expected: &'static str,
    },
    /// A noise multiplier that is negative, infinite or NaN.
    #[error(
        "noise multiplier {noise_multiplier:?} is invalid: it must be a finite number >= 0 (the \
         ratio of the Gaussian noise's standard deviation to the clipping norm)"
    )]
    InvalidNoiseMultiplier {
        /// The value given.
        noise_multiplier: f64,
    },
    /// An empty list of RDP orders.
    #[error("the list of RDP orders is empty: pass at least one order > 1, or use RdpAccountant::new() for the default orders")]
    EmptyOrders,
    /// An RDP order that is not a finite number > 1.
    #[error(
        "RDP order {order:?} is invalid: every order must be a finite number > 1 and at most \
         10000 (psg_privacy::accountant::MAX_ORDER)"
    )]
    InvalidOrder {
        /// The value given.
        order: f64,
    },
    /// A target epsilon that is not a finite number > 0.
    #[error("target epsilon {target_epsilon:?} is invalid: it must be a finite number > 0")]
    InvalidTargetEpsilon {
        /// The value given.
        target_epsilon: f64,
    },
    /// An epsilon that is not a finite number >= 0.
    #[error("epsilon {epsilon:?} is invalid: it must be a finite number >= 0")]
    InvalidEpsilon {
        /// The value given.
        epsilon: f64,
    },
    /// A PLD discretization interval that is not a finite number in (0, 1].
    #[error(
        "PLD discretization {interval:?} is invalid: it must be a finite number in (0, 1] \
         (dp_accounting's default, psg_privacy::accountant::DEFAULT_DISCRETIZATION, is 1e-4)"
    )]
    InvalidDiscretization {
        /// The value given.
        interval: f64,
    },
    /// A privacy loss distribution would hold more grid points than the accountant allows.
    #[error(
        "the privacy loss distribution needs {points:?} grid points, more than the limit of \
         {limit} (psg_privacy::accountant::MAX_PLD_POINTS): the noise is very small or the steps \
         very many for the discretization {discretization:?}; use \
         PldAccountant::with_discretization with a coarser interval, or RdpAccountant"
    )]
    PldTooLarge {
        /// The points it would need (`inf` where they overflow).
        points: f64,
        /// The limit.
        limit: u64,
        /// The accountant's discretization.
        discretization: f64,
    },
    /// Noise calibration asked for zero training steps.
    #[error(
        "the number of steps is 0: calibration needs at least one step (with epochs, pass \
         epochs >= 1; steps are int(epochs / sample_rate))"
    )]
    ZeroSteps,
    /// A calibration tolerance that is not a finite number > 0.
    #[error("epsilon tolerance {tolerance:?} is invalid: it must be a finite number > 0 (Opacus uses 0.01)")]
    InvalidTolerance {
        /// The value given.
        tolerance: f64,
    },
    /// Even a huge noise multiplier cannot reach the target epsilon.
    #[error(
        "the privacy budget is too low: even noise multiplier {noise_multiplier:?} gives epsilon \
         {epsilon:?} > target {target_epsilon:?}; raise the target epsilon or delta, or lower the \
         sample rate or the number of steps"
    )]
    BudgetTooLow {
        /// The target asked for.
        target_epsilon: f64,
        /// The largest multiplier tried.
        noise_multiplier: f64,
        /// The epsilon it gives.
        epsilon: f64,
    },
    /// A target epsilon below the smallest epsilon the RDP orders can show at this delta, at
    /// any noise.
    #[error(
        "target epsilon {target_epsilon:?} is below {floor:?}, the smallest epsilon that the RDP \
         orders (up to {max_order:?}) can show at delta {delta:?} whatever the noise (more noise \
         cannot help); raise the target epsilon or delta, or calibrate over larger orders \
         (calibrate_noise_multiplier_over, with an RdpAccountant::with_orders of the same \
         orders to account)"
    )]
    BelowOrdersFloor {
        /// The target asked for.
        target_epsilon: f64,
        /// The epsilon of an RDP of 0 at these orders and this delta.
        floor: f64,
        /// The delta asked for.
        delta: f64,
        /// The largest order used.
        max_order: f64,
    },
    /// The calibration bisection did not settle (a numerical failure; should not happen).
    #[error(
        "noise calibration did not converge after {iterations} bisection steps; try a larger \
         epsilon tolerance, and please report the inputs as a bug"
    )]
    CalibrationDidNotConverge {
        /// Bisection steps taken.
        iterations: u32,
    },
    /// A noise standard deviation that is negative, infinite or NaN, or that overflows f32 or
    /// rounds from a positive value to 0 in f32 for f32 noise.
    #[error(
        "noise standard deviation {std:?} is invalid: it must be a finite number >= 0 and, for \
         f32 noise, below 3.4e38 and either 0 or at least 1.4e-45 (below, it rounds to 0 in f32: \
         no noise at all). In DP-SGD it is the noise multiplier times the clip norm (over the \
         expected batch size for a mean): change one of those, or use f64 gradients"
    )]
    InvalidNoiseStd {
        /// The value given.
        std: f64,
    },
    /// Element indices `offset .. offset + len` leave the range Philox counters can address.
    #[error(
        "elements {offset} .. {offset} + {len} are out of range: global element indices must stay \
         below 2^62 so that Philox counters never repeat; use a smaller offset"
    )]
    ElementRangeOutOfBounds {
        /// The first element's global index.
        offset: u64,
        /// The number of elements.
        len: u64,
    },
    /// The host could not allocate the noise values asked for.
    #[error(
        "the host cannot allocate {elements} noise values; generate them in smaller ranges (the \
         offset and count select any part of the stream)"
    )]
    HostMemory {
        /// The number of values asked for.
        elements: usize,
    },
    /// The OS CSPRNG could not be read.
    #[error(
        "could not read a seed from the OS CSPRNG (/dev/urandom): {0}; on a platform without \
         /dev/urandom, draw a 64-bit seed from your own CSPRNG"
    )]
    SecureSeedUnavailable(#[source] std::io::Error),
    /// A sampled batch's indices do not fit in host memory.
    #[error(
        "a batch of {examples} examples does not fit in host memory; sample from fewer examples \
         (or at a lower rate)"
    )]
    BatchTooLarge {
        /// The number of indices the batch needed.
        examples: usize,
    },
    /// The OS CSPRNG could not be read for Poisson sampling.
    #[error(
        "could not read the OS CSPRNG (/dev/urandom) for Poisson sampling: {0}; on a platform \
         without /dev/urandom, include each example with probability q using your own CSPRNG \
         (a seeded sampler makes the batches public and voids the epsilon)"
    )]
    SamplerRandomnessUnavailable(#[source] std::io::Error),
}

/// `Result` with this crate's [`Error`] by default (another error type can be given).
pub type Result<T, E = Error> = std::result::Result<T, E>;
