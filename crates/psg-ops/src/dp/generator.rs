//! Handing out noise counters so that they never repeat: within a step every tensor gets its own
//! range of Philox counters, and every step its own step number (and, in secure mode, its own
//! seed from the OS CSPRNG).

use std::fmt;

use psg_privacy::normal::{secure_seed, NoiseMode, MAX_ELEMENTS};
use psg_runtime::{DType, Tensor};

use super::error::{DpError, DpResult};
use super::noise::{add_noise, NoiseKey};

/// Gives every tensor noised in a step a disjoint range of Philox counters, and moves to a fresh
/// step (and, in secure mode, a fresh seed) with [`NoiseGenerator::advance`].
///
/// Philox counters are (block, step), and a block's four words make four f32 values or two f64
/// values (see [`psg_privacy::normal`]): the words of one step are handed out consecutively from
/// 0, f32 tensors from where the last one ended (so that their noise is one long draw cut in
/// pieces), f64 tensors from the next whole block (an f64 value reads all four words of its
/// block), so no two tensors of a step share a word; and the step number grows by one per step,
/// so no two steps do. Two generators with the same seed *do* repeat each other's noise: use one
/// generator per training run, and [`NoiseGenerator::at_step`] when resuming.
///
/// Not `Clone`, for the same reason. Its `Display` states the mode and where seeds come from.
///
/// ```
/// use psg_ops::dp::NoiseGenerator;
/// use psg_runtime::DType;
///
/// let mut noise = NoiseGenerator::new(7);
/// let a = noise.next_key(10, DType::F32)?; // f32 elements 0 .. 10 of step 0: blocks 0 .. 2.5
/// let b = noise.next_key(5, DType::F32)?; // f32 elements 10 .. 15: blocks 2.5 .. 3.75
/// let c = noise.next_key(3, DType::F64)?; // f64 elements 8 .. 11: blocks 4 .. 5.5
/// assert_eq!((a.offset, b.offset, c.offset, c.step), (0, 10, 8, 0));
/// noise.advance()?;
/// assert_eq!(noise.next_key(3, DType::F32)?.step, 1);
/// assert!(noise.to_string().contains("fixed seed"));
/// # Ok::<(), psg_ops::dp::DpError>(())
/// ```
pub struct NoiseGenerator {
    mode: NoiseMode,
    os_seeded: bool,
    seed: u64,
    step: u64,
    /// The next free 32-bit Philox word of the step (a quarter block): an f32 element's unit.
    next_word: u64,
}

impl NoiseGenerator {
    /// Standard-mode noise (one normal draw per value) from a fixed seed: reproducible, and
    /// predictable to anyone who knows the seed.
    pub fn new(seed: u64) -> Self {
        Self::with_mode(seed, NoiseMode::Standard)
    }

    /// Noise of `mode` from a fixed seed. With [`NoiseMode::Secure`] this gives secure mode's
    /// arithmetic but not its unpredictability: for reproducible tests, not for a privacy claim
    /// (use [`NoiseGenerator::secure`]).
    pub fn with_mode(seed: u64, mode: NoiseMode) -> Self {
        NoiseGenerator {
            mode,
            os_seeded: false,
            seed,
            step: 0,
            next_word: 0,
        }
    }

    /// Secure mode, as Opacus' `secure_mode=True`: every step's seed is read from the OS CSPRNG
    /// (`/dev/urandom`, through [`psg_privacy::normal::secure_seed`]), now and at each
    /// [`NoiseGenerator::advance`], and every noise value is the sum of four normal draws divided
    /// by 2 (a defence against floating-point attacks on the noise).
    ///
    /// # Errors
    ///
    /// [`DpError::Privacy`] with [`psg_privacy::Error::SecureSeedUnavailable`] when the CSPRNG
    /// cannot be read.
    pub fn secure() -> DpResult<Self> {
        Ok(NoiseGenerator {
            mode: NoiseMode::Secure,
            os_seeded: true,
            seed: secure_seed()?,
            step: 0,
            next_word: 0,
        })
    }

    /// The same generator starting at step `step` instead of 0: for resuming a run from a
    /// checkpoint without reusing the steps already taken. Pass it to [`crate::dp::DpSgd::resume`]
    /// with the accountant of those steps ([`crate::dp::DpSgd::new`] refuses it: the run's
    /// epsilon would leave them out).
    pub fn at_step(mut self, step: u64) -> Self {
        self.step = step;
        self.next_word = 0;
        self
    }

    /// How each noise value is made.
    pub fn mode(&self) -> NoiseMode {
        self.mode
    }

    /// Whether seeds come from the OS CSPRNG at every step (only [`NoiseGenerator::secure`]).
    pub fn is_os_seeded(&self) -> bool {
        self.os_seeded
    }

    /// Whether this is Opacus' secure mode in full: four-draw noise *and* OS-CSPRNG seeds.
    pub fn is_secure(&self) -> bool {
        self.os_seeded && self.mode == NoiseMode::Secure
    }

    /// The current step number (0 for a new generator).
    pub fn step(&self) -> u64 {
        self.step
    }

    /// Reserves the counters of `len` elements of `dtype` in the current step and returns the key
    /// that addresses them (its `offset` is in `dtype`'s elements). f32 ranges follow each other
    /// word for word; an f64 range starts at the next whole block. The key includes the seed:
    /// whoever holds it can recompute the noise. (f16 and bf16 count as f32 here; noise is made
    /// in f32 or f64 only.)
    ///
    /// # Errors
    ///
    /// [`psg_privacy::Error::ElementRangeOutOfBounds`] when the step's indices would pass 2^62
    /// (nothing is reserved then).
    pub fn next_key(&mut self, len: usize, dtype: DType) -> DpResult<NoiseKey> {
        let len = len as u64;
        // Elements of `dtype` a block holds; the words one element takes.
        let per_block: u64 = if dtype == DType::F64 { 2 } else { 4 };
        let (offset, end_word) = if per_block == 4 {
            (Some(self.next_word), self.next_word.checked_add(len))
        } else {
            let block = self.next_word.div_ceil(4);
            let offset = block.checked_mul(2);
            let end = offset
                .and_then(|o| o.checked_add(len))
                .and_then(|e| e.div_ceil(2).checked_mul(4));
            (offset, end)
        };
        let out_of_range = psg_privacy::Error::ElementRangeOutOfBounds {
            offset: offset.unwrap_or(u64::MAX),
            len,
        };
        let (offset, end_word) = match (offset, end_word) {
            (Some(o), Some(e)) if o.checked_add(len).is_some_and(|end| end <= MAX_ELEMENTS) => {
                (o, e)
            }
            _ => return Err(out_of_range.into()),
        };
        self.next_word = end_word;
        Ok(NoiseKey {
            seed: self.seed,
            step: self.step,
            offset,
        })
    }

    /// Ends the current step: the next keys belong to step + 1, from element index 0, and in
    /// secure mode under a new seed from the OS CSPRNG.
    ///
    /// # Errors
    ///
    /// [`DpError::StepCounterExhausted`] after 2^64 - 1 steps, or the CSPRNG's error in secure
    /// mode; the generator is unchanged then.
    pub fn advance(&mut self) -> DpResult<()> {
        let step = self
            .step
            .checked_add(1)
            .ok_or(DpError::StepCounterExhausted)?;
        if self.os_seeded {
            self.seed = secure_seed()?;
        }
        self.step = step;
        self.next_word = 0;
        Ok(())
    }

    /// `t` plus Gaussian noise of standard deviation `std` under the next key of this step (a new
    /// tensor, same device; see [`add_noise`]).
    ///
    /// # Errors
    ///
    /// As [`NoiseGenerator::next_key`] and [`add_noise`].
    pub fn add_noise(&mut self, t: &Tensor, std: f64) -> DpResult<Tensor> {
        let key = self.next_key(t.len(), t.dtype())?;
        add_noise(t, std, key, self.mode)
    }
}

impl fmt::Display for NoiseGenerator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.mode, self.os_seeded) {
            (NoiseMode::Secure, true) => f.write_str(
                "secure mode: each step's seed is drawn from the OS CSPRNG (/dev/urandom), and \
                 each noise value is the sum of four normal draws divided by 2 (Opacus' secure \
                 mode, a defence against floating-point attacks)",
            ),
            (NoiseMode::Standard, true) => f.write_str(
                "standard noise (one normal draw per value), seeds from the OS CSPRNG at every \
                 step",
            ),
            (NoiseMode::Secure, false) => f.write_str(
                "secure-mode arithmetic (four normal draws per value) but a fixed seed: \
                 reproducible, NOT secure (anyone who knows the seed can recompute the noise); \
                 use NoiseGenerator::secure() for a privacy claim",
            ),
            (NoiseMode::Standard, false) => f.write_str(
                "standard noise (one normal draw per value) from a fixed seed: reproducible, NOT \
                 secure (anyone who knows the seed can recompute the noise); use \
                 NoiseGenerator::secure() for a privacy claim",
            ),
        }
    }
}

/// Prints everything but an OS-drawn seed, which is a secret.
impl fmt::Debug for NoiseGenerator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("NoiseGenerator");
        d.field("mode", &self.mode)
            .field("os_seeded", &self.os_seeded);
        if self.os_seeded {
            d.field("seed", &"<secret>");
        } else {
            d.field("seed", &self.seed);
        }
        d.field("step", &self.step)
            .field("next_word", &self.next_word)
            .finish()
    }
}
