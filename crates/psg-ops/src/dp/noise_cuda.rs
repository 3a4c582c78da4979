//! Launching `psg-privacy`'s noise kernels ([`NOISE_CUDA_SOURCE`]) on a tensor's device.

use psg_privacy::normal::{NoiseMode, NOISE_CUDA_SOURCE};
use psg_runtime::{CudaDevice, DType, KernelArg, KernelSource, LaunchConfig, Tensor};

use super::error::{DpError, DpResult};
use super::noise::NoiseKey;

/// The eight kernels, indexed by [`kernel_index`]. Static text: the device finds them by address.
static KERNELS: [KernelSource; 8] = [
    KernelSource::new_static("psg_gaussian_noise_f32", NOISE_CUDA_SOURCE),
    KernelSource::new_static("psg_add_gaussian_noise_f32", NOISE_CUDA_SOURCE),
    KernelSource::new_static("psg_gaussian_noise_secure_f32", NOISE_CUDA_SOURCE),
    KernelSource::new_static("psg_add_gaussian_noise_secure_f32", NOISE_CUDA_SOURCE),
    KernelSource::new_static("psg_gaussian_noise_f64", NOISE_CUDA_SOURCE),
    KernelSource::new_static("psg_add_gaussian_noise_f64", NOISE_CUDA_SOURCE),
    KernelSource::new_static("psg_gaussian_noise_secure_f64", NOISE_CUDA_SOURCE),
    KernelSource::new_static("psg_add_gaussian_noise_secure_f64", NOISE_CUDA_SOURCE),
];

/// Threads per CUDA block.
const BLOCK: u32 = 256;
/// At most this many threads; the kernels' grid-stride loops cover the rest (a few waves of an
/// H100's 132 SMs x 2048 threads).
const MAX_THREADS: u64 = 1 << 21;

/// The noise kernels (all eight: standard and secure, write and add, f32 and f64), for the NVRTC
/// check. They are `psg-privacy`'s [`NOISE_CUDA_SOURCE`] under each kernel's name.
pub fn noise_kernel_sources() -> Vec<&'static KernelSource> {
    KERNELS.iter().collect()
}

fn kernel_index(dtype: DType, mode: NoiseMode, add: bool) -> usize {
    let f64_part = if dtype == DType::F64 { 4 } else { 0 };
    let secure_part = if mode == NoiseMode::Secure { 2 } else { 0 };
    f64_part + secure_part + usize::from(add)
}

/// Writes (or with `add`, adds) the noise of `key` into `out`'s device memory, in place.
/// `noise::check` has validated the dtype, `std` and the index range.
pub(super) fn launch(
    dev: &CudaDevice,
    out: &Tensor,
    std: f64,
    key: NoiseKey,
    mode: NoiseMode,
    add: bool,
) -> DpResult<()> {
    let n = out.len() as u64;
    if n == 0 {
        return Ok(());
    }
    let dtype = out.dtype();
    // Each thread makes whole Philox blocks: 4 f32 or 2 f64 values.
    let width: u64 = if dtype == DType::F64 { 2 } else { 4 };
    let philox_blocks = (key.offset % width + n).div_ceil(width);
    let threads = philox_blocks.min(MAX_THREADS) as usize;
    let std_arg = match dtype {
        DType::F64 => KernelArg::F64(std),
        DType::F32 => KernelArg::F32(std as f32),
        dtype => return Err(DpError::UnsupportedDType { tensor: 0, dtype }),
    };
    // The kernels take `unsigned long long`; I64 passes the same 8 bytes.
    let u64_arg = |v: u64| KernelArg::I64(i64::from_ne_bytes(v.to_ne_bytes()));
    dev.launch(
        &KERNELS[kernel_index(dtype, mode, add)],
        LaunchConfig::for_items(threads, BLOCK)?,
        &[
            KernelArg::Ptr(out.cuda_ptr()?),
            u64_arg(n),
            u64_arg(key.seed),
            u64_arg(key.step),
            u64_arg(key.offset),
            std_arg,
        ],
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_names_follow_the_index() {
        for dtype in [DType::F32, DType::F64] {
            for mode in [NoiseMode::Standard, NoiseMode::Secure] {
                for add in [false, true] {
                    let name = &KERNELS[kernel_index(dtype, mode, add)].name;
                    assert_eq!(name.contains("_add_"), add, "{name}");
                    assert_eq!(
                        name.contains("_secure_"),
                        mode == NoiseMode::Secure,
                        "{name}"
                    );
                    assert!(name.ends_with(&format!("_{dtype}")), "{name}");
                }
            }
        }
    }
}
