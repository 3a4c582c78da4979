//! psg's runtime: devices, tensors, the NVRTC JIT with its caches, and the CPU/CUDA runner of batch
//! reductions.
//!
//! A batch reduction maps each column `g[:, p]` of per-sample gradients `g[B, P]` (the B values
//! of one coordinate across the batch) to a few numbers. The runtime runs any reduction described
//! by a [`ReductionDef`] (which `#[batch_reduce]` generates) on the CPU or a CUDA GPU:
//!
//! ```
//! use psg_runtime::{
//!     run_reduction, Column, CpuKernels, Device, Element, KernelSource, LaunchShape,
//!     OutputKind, ReductionDef, Tensor,
//! };
//!
//! // The CPU body: the sum of one column, in the accumulator type.
//! fn column_sum<T: Element>(col: &Column<'_, T>, out: &mut [T::Acc]) {
//!     for b in 0..col.len() {
//!         out[0] += col.load(b);
//!     }
//! }
//!
//! // CUDA kernels, one per dtype (used only on a GPU; written out here for f32 only).
//! const SUM_F32: &str = r#"extern "C" __global__ void column_sum_f32(
//!     const float* g, float* out, long long B, long long P) {
//!     long long p = (long long)blockIdx.x * blockDim.x + threadIdx.x;
//!     if (p >= P) return;
//!     float s = 0.0f;
//!     for (long long b = 0; b < B; ++b) s += g[b * P + p];
//!     out[p] = s;
//! }"#;
//!
//! let def = ReductionDef {
//!     name: "column_sum",
//!     n_per_sample: 0,
//!     n_scalars: 0,
//!     scalar_names: &[],
//!     per_sample_names: &[],
//!     outputs: OutputKind::Scalars(1),
//!     launch: LaunchShape::ThreadPerColumn { block: 256 },
//!     cuda: [
//!         KernelSource::new_static("column_sum_f32", SUM_F32),
//!         KernelSource::new_static("column_sum_f64", "/* ... */"),
//!         KernelSource::new_static("column_sum_f16", "/* ... */"),
//!         KernelSource::new_static("column_sum_bf16", "/* ... */"),
//!     ],
//!     tiled: None,
//!     cpu: CpuKernels {
//!         f32: column_sum::<f32>,
//!         f64: column_sum::<f64>,
//!         f16: column_sum::<half::f16>,
//!         bf16: column_sum::<half::bf16>,
//!     },
//! };
//!
//! // g[B = 3, P = 2]: sample-major, so each row is one sample's gradient.
//! let g = Tensor::from_slice(&[1.0f32, 10.0, 2.0, 20.0, 3.0, 30.0], &[3, 2], &Device::Cpu)?;
//! let sums = run_reduction(&def, &g, &[], &[])?;
//! assert_eq!(sums[0].shape(), &[2]);
//! assert_eq!(sums[0].to_vec::<f32>()?, vec![6.0, 60.0]);
//! # Ok::<(), psg_runtime::Error>(())
//! ```
//!
//! [`select_device`] picks CUDA device 0 when libcuda, a GPU and libnvrtc are all usable and the
//! CPU otherwise, and says why. Kernels compile with NVRTC for the device's architecture to a
//! CUBIN, cached in memory per device and on disk (see [`cache_dir`]; `PSG_CACHE_DIR` moves it,
//! `PSG_CACHE=off` turns it off). NVRTC needs its folder on `LD_LIBRARY_PATH` before the process
//! starts: with the PyPI wheel `nvidia-cuda-nvrtc==13.0.88`, that is `.../nvidia/cu13/lib`.
//!
//! Nothing here panics on bad input or a missing GPU: every failure is an [`Error`] that says what
//! was wrong and what to do.

#![deny(missing_docs)]

pub mod cache_key;
pub mod cpu_pool;
pub mod cuda;
pub mod device;
pub mod disk_cache;
pub mod dtype;
pub mod element;
pub mod error;
pub mod jit;
pub mod nvrtc;
pub mod reduce;
pub mod tensor;

pub use cache_key::CACHE_VERSION;
pub use cuda::{
    cuda_device_count, CudaDevice, DeviceBuffer, KernelArg, KernelCacheStats, KernelOrigin,
    LaunchConfig, OtherHandles,
};
pub use device::{cuda_device, select_device, try_select_device, Device, DeviceChoice};
pub use disk_cache::cache_dir;
pub use dtype::DType;
pub use element::{Accumulator, Element};
pub use error::{Error, Result};
pub use jit::{compile_cubin, compile_ptx, CompileTarget, JitMode, KernelSource};
pub use nvrtc::{nvrtc_build, nvrtc_status, nvrtc_version, supported_archs};
pub use reduce::{
    run_reduction, Column, CpuColumnFn, CpuKernels, LaunchShape, OutputKind, ReductionDef,
    TiledKernels, COLUMN_TILE_LOG2, MID_MAX_B, PACKED_BINS_MAX_B, SMALL_MAX_B,
    SPILL_MAX_COLUMNS_PER_SM, SPILL_MIN_KEPT_QUARTERS, TILE_SHARED_PREFERRED, TILE_TARGET_BYTES,
};
pub use tensor::{host_filled, host_zeros, Tensor};

/// The `cudarc` this runtime is built on, for interop code that needs its raw types
/// (e.g. `cudarc::driver::sys::CUstream` for [`CudaDevice::with_borrowed_stream`]).
pub use cudarc;
/// The `half` crate whose `f16` and `bf16` are tensor element types.
pub use half;

#[cfg(test)]
mod tests {
    /// Handles cross threads: rayon tasks, PyTorch's threads, a global device.
    #[test]
    fn public_handles_are_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<crate::Tensor>();
        check::<crate::Device>();
        check::<crate::CudaDevice>();
        check::<crate::DeviceBuffer>();
        check::<crate::ReductionDef>();
        check::<crate::KernelSource>();
        check::<crate::Error>();
    }
}
