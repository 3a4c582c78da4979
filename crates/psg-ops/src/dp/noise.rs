//! Gaussian noise for tensors on either device: the CPU through `psg_privacy::normal`, a CUDA
//! device through the same crate's kernels, with the same bits for the same key.

use psg_privacy::normal::{self, NoiseMode, MAX_ELEMENTS};
use psg_runtime::{DType, Device, Tensor};

use super::error::{DpError, DpResult};
use super::noise_cuda;

/// Where a tensor's noise lies in Philox's counter space: element `i` of the tensor (row-major)
/// gets the noise of global element index `offset + i` at step `step` under key `seed`.
///
/// The same key gives the same noise on the CPU and on a GPU. Keys of different tensors of one
/// step must cover disjoint index ranges, and different steps must use different `step`s;
/// [`NoiseGenerator`](super::NoiseGenerator) hands keys out that way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct NoiseKey {
    /// The Philox key (a secret in secure mode).
    pub seed: u64,
    /// The training step (the high half of the Philox counter).
    pub step: u64,
    /// The global element index of the tensor's first element.
    pub offset: u64,
}

/// Checks what the kernels cannot: the dtype, `std`, and the index range `offset .. offset + len`.
pub(super) fn check(dtype: DType, len: usize, std: f64, key: NoiseKey) -> DpResult<()> {
    if !matches!(dtype, DType::F32 | DType::F64) {
        return Err(DpError::UnsupportedDType { tensor: 0, dtype });
    }
    // In f32 a positive std must neither overflow nor round to 0 (which would add no noise).
    let fits =
        dtype != DType::F32 || ((std as f32).is_finite() && (std == 0.0 || std as f32 > 0.0));
    if !(std.is_finite() && std >= 0.0 && fits) {
        return Err(psg_privacy::Error::InvalidNoiseStd { std }.into());
    }
    let len = len as u64;
    match key.offset.checked_add(len) {
        Some(end) if end <= MAX_ELEMENTS => Ok(()),
        _ => Err(psg_privacy::Error::ElementRangeOutOfBounds {
            offset: key.offset,
            len,
        }
        .into()),
    }
}

/// A tensor of `shape` holding `std * N(0, 1)` noise under `key`, on `device`, in `dtype` (f32 or
/// f64). Bit-identical on the CPU and on a GPU.
///
/// # Errors
///
/// [`DpError::UnsupportedDType`] for f16 and bf16; [`psg_privacy::Error::InvalidNoiseStd`] unless
/// `std` is finite and >= 0 (and, for f32, finite as an f32 and not a positive value that rounds
/// to 0); [`psg_privacy::Error::ElementRangeOutOfBounds`]
/// when `key.offset + len` passes 2^62; runtime errors from the device.
pub fn noise(
    dtype: DType,
    shape: &[usize],
    device: &Device,
    std: f64,
    key: NoiseKey,
    mode: NoiseMode,
) -> DpResult<Tensor> {
    // An overflowing shape is a shape error, not an element range past 2^62 from the offset.
    let Some(len) = shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d)) else {
        return Err(psg_runtime::Error::Shape(format!(
            "noise: the shape {shape:?} has more elements than a usize holds; use a smaller shape"
        ))
        .into());
    };
    check(dtype, len, std, key)?;
    let out = Tensor::uninit(dtype, shape, device)?;
    fill(out, std, key, mode, false)
}

/// A copy of `t` (f32 or f64) with `std * N(0, 1)` noise under `key` added to each element:
/// `t[i] + std * z(key.offset + i)`, rounded as the CPU functions of [`psg_privacy::normal`] do,
/// on `t`'s device. Bit-identical on the CPU and on a GPU.
///
/// ```
/// use psg_ops::dp::{add_noise, NoiseKey};
/// use psg_privacy::normal::{gaussian_noise, NoiseMode};
/// use psg_runtime::{Device, Tensor};
///
/// let t = Tensor::from_slice(&[1.0f32, 2.0, 3.0], &[3], &Device::Cpu)?;
/// let key = NoiseKey { seed: 42, step: 0, offset: 100 };
/// let noisy = add_noise(&t, 0.5, key, NoiseMode::Standard)?.to_vec::<f32>()?;
/// let z = gaussian_noise(42, 0, 100, 3, 0.5, NoiseMode::Standard)?;
/// assert_eq!(noisy, vec![1.0 + z[0], 2.0 + z[1], 3.0 + z[2]]);
/// # Ok::<(), psg_ops::dp::DpError>(())
/// ```
///
/// # Errors
///
/// As [`noise`].
pub fn add_noise(t: &Tensor, std: f64, key: NoiseKey, mode: NoiseMode) -> DpResult<Tensor> {
    check(t.dtype(), t.len(), std, key)?;
    let copy = match t.device() {
        // The CPU path builds a new vector anyway.
        Device::Cpu => t.clone(),
        Device::Cuda(_) if t.is_empty() => return Ok(t.clone()),
        Device::Cuda(_) => device_copy(t)?,
    };
    fill(copy, std, key, mode, true)
}

/// Adds noise to a tensor this module owns alone (a fresh aggregate), in place on a GPU.
pub(super) fn add_noise_to_fresh(
    fresh: Tensor,
    std: f64,
    key: NoiseKey,
    mode: NoiseMode,
) -> DpResult<Tensor> {
    check(fresh.dtype(), fresh.len(), std, key)?;
    fill(fresh, std, key, mode, true)
}

/// A copy of a CUDA tensor in new device memory (the one-row gather of its flattened elements).
fn device_copy(t: &Tensor) -> DpResult<Tensor> {
    let row = t.reshape(&[1, t.len()])?;
    Ok(crate::gather_rows(&row, &[0])?.reshape(t.shape())?)
}

/// Writes (or with `add`, adds) the noise into `out` and returns it. On a GPU, `out`'s memory is
/// written in place, so it must not be shared with a tensor the caller still sees.
fn fill(out: Tensor, std: f64, key: NoiseKey, mode: NoiseMode, add: bool) -> DpResult<Tensor> {
    match out.device() {
        Device::Cuda(dev) => {
            noise_cuda::launch(&dev, &out, std, key, mode, add)?;
            Ok(out)
        }
        Device::Cpu => fill_cpu(&out, std, key, mode, add),
    }
}

fn fill_cpu(t: &Tensor, std: f64, key: NoiseKey, mode: NoiseMode, add: bool) -> DpResult<Tensor> {
    let NoiseKey { seed, step, offset } = key;
    match t.dtype() {
        DType::F32 => {
            let std = std as f32;
            let v = if add {
                let mut v = t.to_vec::<f32>()?;
                normal::add_gaussian_noise(&mut v, seed, step, offset, std, mode)?;
                v
            } else {
                normal::gaussian_noise(seed, step, offset, t.len(), std, mode)?
            };
            Ok(Tensor::from_vec(v, t.shape(), &Device::Cpu)?)
        }
        DType::F64 => {
            let v = if add {
                let mut v = t.to_vec::<f64>()?;
                normal::add_gaussian_noise_f64(&mut v, seed, step, offset, std, mode)?;
                v
            } else {
                normal::gaussian_noise_f64(seed, step, offset, t.len(), std, mode)?
            };
            Ok(Tensor::from_vec(v, t.shape(), &Device::Cpu)?)
        }
        dtype => Err(DpError::UnsupportedDType { tensor: 0, dtype }),
    }
}
