//! Launching a kernel on a device's stream: the grid, the arguments, the checks before the driver.

use std::ffi::c_void;

use cudarc::driver::sys::CUfunction_attribute;

use super::driver::{driver_error, guarded};
use super::CudaDevice;
use crate::error::{Error, Result};
use crate::jit::KernelSource;

/// Dynamic shared memory a block gets without opting in.
const DEFAULT_SHARED_LIMIT: u32 = 48 * 1024;

/// Most threads in one block on every supported GPU.
const MAX_THREADS_PER_BLOCK: u64 = 1024;

/// How a kernel is launched: blocks in the grid, threads in a block, dynamic shared memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LaunchConfig {
    /// Blocks in the grid, (x, y, z).
    pub grid: (u32, u32, u32),
    /// Threads in a block, (x, y, z).
    pub block: (u32, u32, u32),
    /// Dynamic shared memory per block, in bytes. Above 48 KiB the runtime opts the kernel in
    /// first (up to the device's limit).
    pub shared_bytes: u32,
}

impl LaunchConfig {
    /// One thread per item of `n`, in blocks of `block` threads (a 1-D grid).
    pub fn for_items(n: usize, block: u32) -> Result<Self> {
        if block == 0 {
            return Err(Error::InvalidParameter(
                "block size must be at least 1".into(),
            ));
        }
        let blocks = n.div_ceil(block as usize);
        let blocks = u32::try_from(blocks)
            .ok()
            .filter(|&b| b <= i32::MAX as u32)
            .ok_or_else(|| {
                Error::Shape(format!(
                    "{n} items in blocks of {block} need {blocks} blocks, more than a CUDA grid's \
                     2^31 - 1; split the work into smaller calls"
                ))
            })?;
        Ok(LaunchConfig {
            grid: (blocks, 1, 1),
            block: (block, 1, 1),
            shared_bytes: 0,
        })
    }
}

/// One kernel argument, passed by value. `Ptr` is a device address (`T*` in the kernel).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum KernelArg {
    /// A device pointer.
    Ptr(u64),
    /// A `long long` / `int64_t`.
    I64(i64),
    /// An `int`.
    I32(i32),
    /// An `unsigned int`.
    U32(u32),
    /// A `float`.
    F32(f32),
    /// A `double`.
    F64(f64),
}

impl KernelArg {
    /// The address the driver reads this argument's value from.
    fn as_param(&self) -> *mut c_void {
        match self {
            KernelArg::Ptr(v) => (v as *const u64).cast_mut().cast(),
            KernelArg::I64(v) => (v as *const i64).cast_mut().cast(),
            KernelArg::I32(v) => (v as *const i32).cast_mut().cast(),
            KernelArg::U32(v) => (v as *const u32).cast_mut().cast(),
            KernelArg::F32(v) => (v as *const f32).cast_mut().cast(),
            KernelArg::F64(v) => (v as *const f64).cast_mut().cast(),
        }
    }
}

fn check_config(kernel: &str, cfg: &LaunchConfig, max_shared: u32) -> Result<()> {
    let (g, b) = (cfg.grid, cfg.block);
    let threads = u64::from(b.0) * u64::from(b.1) * u64::from(b.2);
    if [g.0, g.1, g.2, b.0, b.1, b.2].contains(&0) {
        return Err(Error::InvalidParameter(format!(
            "kernel `{kernel}`: grid {g:?} and block {b:?} must have no zero dimension (skip the \
             launch when there is no work)"
        )));
    }
    if threads > MAX_THREADS_PER_BLOCK {
        return Err(Error::InvalidParameter(format!(
            "kernel `{kernel}`: block {b:?} has {threads} threads, more than {MAX_THREADS_PER_BLOCK}"
        )));
    }
    if g.0 > i32::MAX as u32 || g.1 > 65535 || g.2 > 65535 {
        return Err(Error::InvalidParameter(format!(
            "kernel `{kernel}`: grid {g:?} exceeds CUDA's limits (2^31 - 1, 65535, 65535)"
        )));
    }
    if cfg.shared_bytes > max_shared.max(DEFAULT_SHARED_LIMIT) {
        return Err(Error::InvalidParameter(format!(
            "kernel `{kernel}` asks for {} bytes of dynamic shared memory; this device allows at \
             most {max_shared} per block",
            cfg.shared_bytes
        )));
    }
    Ok(())
}

impl CudaDevice {
    /// How many blocks of `kernel` (with `block_threads` threads and `shared_bytes` of dynamic
    /// shared memory each) the whole device runs at once: the size of a persistent grid.
    pub fn resident_blocks(
        &self,
        kernel: &KernelSource,
        block_threads: u32,
        shared_bytes: u32,
    ) -> Result<u32> {
        let (function, _) = self.function(kernel)?;
        guarded("cuOccupancyMaxActiveBlocksPerMultiprocessor", || {
            self.bind()?;
            if shared_bytes > DEFAULT_SHARED_LIMIT {
                let attr = CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES;
                let bytes = i32::try_from(shared_bytes).unwrap_or(i32::MAX);
                function
                    .set_attribute(attr, bytes)
                    .map_err(|e| driver_error("cuFuncSetAttribute", e))?;
            }
            let per_sm = function
                .occupancy_max_active_blocks_per_multiprocessor(
                    block_threads,
                    shared_bytes as usize,
                    None,
                )
                .map_err(|e| driver_error("cuOccupancyMaxActiveBlocksPerMultiprocessor", e))?;
            Ok(per_sm.max(1) * self.multiprocessor_count())
        })
    }

    /// Compiles `kernel` (through the caches) and enqueues it on this device's stream with `args`
    /// in order. Returns once it is enqueued; errors inside the kernel surface at the next
    /// synchronising call.
    ///
    /// The arguments must match the kernel's parameters in number, order and type, and every
    /// `Ptr` must point to live device memory of this device large enough for what the kernel
    /// touches; the runtime cannot check what a kernel does with them.
    pub fn launch(
        &self,
        kernel: &KernelSource,
        cfg: LaunchConfig,
        args: &[KernelArg],
    ) -> Result<()> {
        check_config(&kernel.name, &cfg, self.inner.max_shared_optin)?;
        let (function, _) = self.function(kernel)?;
        guarded("cuLaunchKernel", || {
            self.bind()?;
            if cfg.shared_bytes > DEFAULT_SHARED_LIMIT {
                let attr = CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES;
                let bytes = i32::try_from(cfg.shared_bytes).unwrap_or(i32::MAX);
                function
                    .set_attribute(attr, bytes)
                    .map_err(|e| driver_error("cuFuncSetAttribute", e))?;
            }
            let mut params: Vec<*mut c_void> = args.iter().map(KernelArg::as_param).collect();
            // SAFETY: `function` is loaded in this device's context, which is current; `params`
            // holds one pointer per argument into `args`, which outlives the call (the driver
            // copies the values at launch). That the arguments fit the kernel and its pointers
            // are valid is `launch`'s documented contract with its caller.
            unsafe {
                cudarc::driver::result::launch_kernel(
                    function.cu_function(),
                    cfg.grid,
                    cfg.block,
                    cfg.shared_bytes,
                    self.cu_stream(),
                    &mut params,
                )
            }
            .map_err(|e| driver_error("cuLaunchKernel", e))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_dimensional_configs() {
        let c = LaunchConfig::for_items(1000, 256).unwrap();
        assert_eq!((c.grid, c.block), ((4, 1, 1), (256, 1, 1)));
        assert!(LaunchConfig::for_items(10, 0).is_err());
        assert_eq!(LaunchConfig::for_items(0, 128).unwrap().grid.0, 0);
    }

    #[test]
    fn bad_configs_are_parameter_errors() {
        let ok = LaunchConfig::for_items(100, 128).unwrap();
        assert!(check_config("k", &ok, 0).is_ok());
        let zero = LaunchConfig::for_items(0, 128).unwrap();
        let big_block = LaunchConfig {
            block: (1024, 2, 1),
            ..ok
        };
        let big_shared = LaunchConfig {
            shared_bytes: 300_000,
            ..ok
        };
        for cfg in [zero, big_block, big_shared] {
            assert!(matches!(
                check_config("k", &cfg, 232_448),
                Err(Error::InvalidParameter(_))
            ));
        }
        let opt_in = LaunchConfig {
            shared_bytes: 200_000,
            ..ok
        };
        assert!(check_config("k", &opt_in, 232_448).is_ok());
    }
}
