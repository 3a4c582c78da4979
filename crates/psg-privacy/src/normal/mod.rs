//! Gaussian noise from Philox4x32-10 and Box-Muller, bit-identical on the CPU and on a CUDA GPU.
//!
//! The CPU functions here and the kernels in [`NOISE_CUDA_SOURCE`] run the same arithmetic in
//! the same order with correctly rounded operations only (+ - * / sqrt and integer-to-float
//! conversions), so `gaussian_noise` on the CPU and `psg_gaussian_noise_f32` on the GPU return
//! the same bits for the same arguments.
//!
//! # Which counter gives which element
//!
//! Element `i` of a call with global offset `offset` has global index `e = offset + i`. Its
//! Philox input is key = `seed` (see [`crate::philox::key_from_seed`]) and counter =
//! `(block | draw << 62, step)` (see [`crate::philox::counter`]), where `draw` is 0 in standard
//! mode and 0, 1, 2, 3 in secure mode. With Philox's four output words `x0, x1, x2, x3`:
//!
//! - **f32**: `block = e / 4`, lane `e % 4`. Lanes 0 and 1 are `r cos(theta), r sin(theta)` of
//!   the Box-Muller pair with radial word `x0` and angle word `x1`; lanes 2 and 3 the same with
//!   `x2, x3`. Here `u = (float(x_radial) + 0.5f) * 2^-32` (each step rounded to f32), `r =
//!   sqrt(-2 ln u)` and `theta = 2 pi x_angle / 2^32`, all in f32.
//! - **f64**: `block = e / 2`, lane `e % 2`: `r cos(theta), r sin(theta)` with radial word
//!   `x0 | x1 << 32` and angle word `x2 | x3 << 32`, `u = (double(radial) + 0.5) * 2^-64` and
//!   `theta = 2 pi angle / 2^64`, all in f64.
//! - **Secure mode** ([`NoiseMode::Secure`]): with `zd` the element's standard normal from
//!   `draw = d` (counter block `block | d << 62`), the unscaled value is
//!   `(((z0 + z1) + z2) + z3) * 0.5`. Standard mode's value is `z0`.
//! - The output is `std * value` (or `out + std * value` when adding in place).
//!
//! Counters never repeat as long as every tensor noised at one step gets its own range of
//! global indices (for example its offset in the flattened model) and every step its own `step`.
//! Global indices must stay below [`MAX_ELEMENTS`] = 2^62, which keeps the `draw` bits free.
//!
//! The normals are accurate: tested against f64 references, the f32 logarithm is within 0.84 ulp
//! and sine and cosine within 1.7 ulps; in f64 the logarithm is within 1 ulp and sine and cosine
//! within 2 ulps of a reference that is itself good to about 1 ulp. The smallest `u` caps the
//! Box-Muller radius: at 6.76 in f32 (a true radius is larger with probability 2^-33, about
//! 1.2e-10) and at 9.49 in f64 (probability 2^-65).

mod cuda;
mod math_f32;
mod math_f64;
mod secure_seed;

use crate::error::{Error, Result};
use crate::philox::{counter, key_from_seed, philox4x32_10};

pub use cuda::NOISE_CUDA_SOURCE;
pub use secure_seed::secure_seed;

/// Global element indices must stay below this (2^62): the top two counter bits name the draw.
pub const MAX_ELEMENTS: u64 = 1 << 62;
/// Where the draw index sits in the block word of the counter.
const DRAW_SHIFT: u32 = 62;

/// How each noise value is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum NoiseMode {
    /// One normal draw per value.
    #[default]
    Standard,
    /// Opacus' secure mode: the sum of four independent normal draws divided by 2 (still
    /// standard normal), a defence against floating-point representation attacks on the noise
    /// (Holohan and Braghin, arXiv:2107.10138, section 5.1, with n = 2). Draw `d` uses counter
    /// block `block | d << 62`. psg sums the unit draws and scales once (`std * (sum / 2)`);
    /// Opacus scales each draw (`sum(std * z) / 2`), which differs only in rounding. Pair it
    /// with a seed from [`secure_seed`].
    Secure,
}

/// Standard normals of f32 block `block` from draw `draw` (lanes 0..4).
fn draw_f32(seed: u64, step: u64, block: u64, draw: u64) -> [f32; 4] {
    let x = philox4x32_10(
        counter(block | draw << DRAW_SHIFT, step),
        key_from_seed(seed),
    );
    let [z0, z1] = math_f32::box_muller(x[0], x[1]);
    let [z2, z3] = math_f32::box_muller(x[2], x[3]);
    [z0, z1, z2, z3]
}

/// Standard normals of f64 block `block` from draw `draw` (lanes 0..2).
fn draw_f64(seed: u64, step: u64, block: u64, draw: u64) -> [f64; 2] {
    let x = philox4x32_10(
        counter(block | draw << DRAW_SHIFT, step),
        key_from_seed(seed),
    );
    let radial = u64::from(x[0]) | u64::from(x[1]) << 32;
    let angle = u64::from(x[2]) | u64::from(x[3]) << 32;
    math_f64::box_muller(radial, angle)
}

/// The unscaled values of an f32 block in `mode`.
fn block_f32(seed: u64, step: u64, block: u64, mode: NoiseMode) -> [f32; 4] {
    match mode {
        NoiseMode::Standard => draw_f32(seed, step, block, 0),
        NoiseMode::Secure => {
            let d = [0, 1, 2, 3].map(|draw| draw_f32(seed, step, block, draw));
            std::array::from_fn(|l| (((d[0][l] + d[1][l]) + d[2][l]) + d[3][l]) * 0.5)
        }
    }
}

/// The unscaled values of an f64 block in `mode`.
fn block_f64(seed: u64, step: u64, block: u64, mode: NoiseMode) -> [f64; 2] {
    match mode {
        NoiseMode::Standard => draw_f64(seed, step, block, 0),
        NoiseMode::Secure => {
            let d = [0, 1, 2, 3].map(|draw| draw_f64(seed, step, block, draw));
            std::array::from_fn(|l| (((d[0][l] + d[1][l]) + d[2][l]) + d[3][l]) * 0.5)
        }
    }
}

/// `n` zeros, or [`Error::HostMemory`] where the host cannot hold them (not `vec!`'s panic or
/// abort).
fn zeros<T: Clone + Default>(n: usize) -> Result<Vec<T>> {
    let mut out = Vec::new();
    out.try_reserve_exact(n)
        .map_err(|_| Error::HostMemory { elements: n })?;
    out.resize(n, T::default());
    Ok(out)
}

/// Checks `std` and the global index range `offset .. offset + len`.
fn check(std: f64, offset: u64, len: usize) -> Result<()> {
    if !(std.is_finite() && std >= 0.0) {
        return Err(Error::InvalidNoiseStd { std });
    }
    let len = len as u64;
    match offset.checked_add(len) {
        Some(end) if end <= MAX_ELEMENTS => Ok(()),
        _ => Err(Error::ElementRangeOutOfBounds { offset, len }),
    }
}

/// Calls `visit(i, value)` for the `len` elements from global index `offset`, one Philox block
/// (`W` lanes) at a time.
fn for_each_value<T: Copy, const W: usize>(
    offset: u64,
    len: usize,
    block: impl Fn(u64) -> [T; W],
    mut visit: impl FnMut(usize, T),
) {
    let width = W as u64;
    let mut i = 0;
    while i < len {
        let e = offset + i as u64;
        let values = block(e / width);
        for &value in &values[(e % width) as usize..] {
            if i == len {
                break;
            }
            visit(i, value);
            i += 1;
        }
    }
}

/// `n` values of `std * N(0, 1)` in f32 for global indices `offset .. offset + n`.
///
/// Bit-identical to the CUDA kernel `psg_gaussian_noise_f32` (standard mode) or
/// `psg_gaussian_noise_secure_f32` (secure mode) with the same arguments.
///
/// # Errors
///
/// [`Error::InvalidNoiseStd`] unless `std` is finite and >= 0; [`Error::ElementRangeOutOfBounds`]
/// when `offset + n` exceeds [`MAX_ELEMENTS`].
///
/// # Example
///
/// ```
/// use psg_privacy::normal::{gaussian_noise, NoiseMode};
///
/// let a = gaussian_noise(42, 7, 0, 10, 1.0, NoiseMode::Standard)?;
/// let b = gaussian_noise(42, 7, 4, 6, 1.0, NoiseMode::Standard)?;
/// assert_eq!(a[4..], b[..]); // element e's value depends only on (seed, step, e)
/// # Ok::<(), psg_privacy::Error>(())
/// ```
pub fn gaussian_noise(
    seed: u64,
    step: u64,
    offset: u64,
    n: usize,
    std: f32,
    mode: NoiseMode,
) -> Result<Vec<f32>> {
    check(f64::from(std), offset, n)?;
    let mut out = zeros(n)?;
    fill(&mut out, seed, step, offset, std, mode, false)?;
    Ok(out)
}

/// Adds `std * N(0, 1)` noise in place: `out[i] = out[i] + std * value(offset + i)`.
///
/// Bit-identical to `psg_add_gaussian_noise_f32` (or its `_secure_` twin).
///
/// # Errors
///
/// As [`gaussian_noise`].
pub fn add_gaussian_noise(
    out: &mut [f32],
    seed: u64,
    step: u64,
    offset: u64,
    std: f32,
    mode: NoiseMode,
) -> Result<()> {
    fill(out, seed, step, offset, std, mode, true)
}

/// Shared body of the f32 functions.
fn fill(
    out: &mut [f32],
    seed: u64,
    step: u64,
    offset: u64,
    std: f32,
    mode: NoiseMode,
    add: bool,
) -> Result<()> {
    check(f64::from(std), offset, out.len())?;
    let block = |b| block_f32(seed, step, b, mode);
    for_each_value(offset, out.len(), block, |i, z| {
        out[i] = if add { out[i] + std * z } else { std * z };
    });
    Ok(())
}

/// `n` values of `std * N(0, 1)` in f64; bit-identical to `psg_gaussian_noise_f64` (or
/// `psg_gaussian_noise_secure_f64`).
///
/// # Errors
///
/// As [`gaussian_noise`].
pub fn gaussian_noise_f64(
    seed: u64,
    step: u64,
    offset: u64,
    n: usize,
    std: f64,
    mode: NoiseMode,
) -> Result<Vec<f64>> {
    check(std, offset, n)?;
    let mut out = zeros(n)?;
    fill_f64(&mut out, seed, step, offset, std, mode, false)?;
    Ok(out)
}

/// Adds f64 noise in place; bit-identical to `psg_add_gaussian_noise_f64` (or its `_secure_`
/// twin).
///
/// # Errors
///
/// As [`gaussian_noise`].
pub fn add_gaussian_noise_f64(
    out: &mut [f64],
    seed: u64,
    step: u64,
    offset: u64,
    std: f64,
    mode: NoiseMode,
) -> Result<()> {
    fill_f64(out, seed, step, offset, std, mode, true)
}

/// Shared body of the f64 functions.
fn fill_f64(
    out: &mut [f64],
    seed: u64,
    step: u64,
    offset: u64,
    std: f64,
    mode: NoiseMode,
    add: bool,
) -> Result<()> {
    check(std, offset, out.len())?;
    let block = |b| block_f64(seed, step, b, mode);
    for_each_value(offset, out.len(), block, |i, z| {
        out[i] = if add { out[i] + std * z } else { std * z };
    });
    Ok(())
}

#[cfg(test)]
mod tests;
