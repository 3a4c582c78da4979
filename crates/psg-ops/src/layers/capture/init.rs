//! Seeded initial parameters (PyTorch's default for Linear: uniform in ±1/sqrt(fan_in)).

use psg_runtime::{Device, Result, Tensor};

/// SplitMix64: small, seeded, and the same on every machine.
pub(crate) struct SplitMix(u64);

impl SplitMix {
    pub fn new(seed: u64) -> Self {
        SplitMix(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [-bound, bound).
    pub fn symmetric(&mut self, bound: f32) -> f32 {
        let u = (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32;
        (2.0 * u - 1.0) * bound
    }
}

/// A tensor of `shape` with elements uniform in [-bound, bound), from `rng`.
pub(crate) fn uniform(
    rng: &mut SplitMix,
    shape: &[usize],
    bound: f32,
    device: &Device,
) -> Result<Tensor> {
    // Fallible: a mistyped width (100 000 x 100 000 is 40 GB) is an error, not an abort.
    let mut values = psg_runtime::host_zeros::<f32>(shape)?;
    for v in &mut values {
        *v = rng.symmetric(bound);
    }
    Tensor::from_vec(values, shape, device)
}
