//! Opening the device and the few raw driver calls the benchmark needs: free memory, and keeping
//! freed memory in the CUDA memory pool.

use std::panic::{catch_unwind, AssertUnwindSafe};

use psg_runtime::cudarc::driver::{result, sys};
use psg_runtime::{CudaDevice, JitMode};

use crate::error::{BenchError, BenchResult};

/// Opens CUDA device `ordinal`, or says clearly why there is none. It compiles optimized builds
/// only ([`JitMode::Optimized`]): the benchmark times the kernels that run after a kernel's
/// first calls, never a quick build.
pub fn open(ordinal: usize) -> BenchResult<CudaDevice> {
    let dev = psg_runtime::cuda_device(ordinal).map_err(|e| {
        // The reason alone: the runtime's advice to fall back to the CPU does not apply here.
        BenchError::NoGpu(match e {
            psg_runtime::Error::CudaUnavailable { reason } => reason,
            other => other.to_string(),
        })
    })?;
    dev.set_jit_mode(JitMode::Optimized);
    Ok(dev)
}

/// Runs raw driver calls with the device's context current; a panic inside cudarc (a missing
/// symbol) becomes an error.
fn raw<T>(dev: &CudaDevice, f: impl FnOnce() -> Result<T, String>) -> Result<T, String> {
    catch_unwind(AssertUnwindSafe(|| {
        dev.cudarc_context()
            .bind_to_thread()
            .map_err(|e| format!("cuCtxSetCurrent: {e:?}"))?;
        f()
    }))
    .unwrap_or_else(|_| Err("a driver call panicked inside cudarc".to_string()))
}

/// Free and total device memory in bytes.
pub fn mem_info(dev: &CudaDevice) -> Result<(usize, usize), String> {
    raw(dev, || {
        result::mem_get_info().map_err(|e| format!("cuMemGetInfo: {e:?}"))
    })
}

/// The device's current memory pool (the one stream-ordered allocations come from).
fn current_pool(dev: &CudaDevice) -> Result<sys::CUmemoryPool, String> {
    let mut pool: sys::CUmemoryPool = std::ptr::null_mut();
    // SAFETY: `pool` is a valid out-pointer; the device handle belongs to an opened device whose
    // context the caller made current.
    unsafe { sys::cuDeviceGetMemPool(&mut pool, dev.cudarc_context().cu_device()) }
        .result()
        .map_err(|e| format!("cuDeviceGetMemPool: {e:?}"))?;
    Ok(pool)
}

/// Sets the device's current memory pool to keep freed memory (release threshold = max) instead
/// of returning it to the driver at every synchronisation, as PyTorch's caching allocator does.
/// Only this process's pool changes; nothing of the card's settings.
pub fn keep_pool_memory(dev: &CudaDevice) -> Result<(), String> {
    raw(dev, || {
        let pool = current_pool(dev)?;
        let mut threshold: u64 = u64::MAX;
        // SAFETY: RELEASE_THRESHOLD takes a pointer to a cuuint64_t, which `threshold` is; `pool`
        // was just returned by the driver.
        unsafe {
            sys::cuMemPoolSetAttribute(
                pool,
                sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_RELEASE_THRESHOLD,
                (&mut threshold as *mut u64).cast(),
            )
        }
        .result()
        .map_err(|e| format!("cuMemPoolSetAttribute: {e:?}"))
    })
}

/// Waits for the device, then returns the pool's unused memory to the driver, so that free
/// memory is reported truly before the next configuration allocates.
pub fn trim_pool(dev: &CudaDevice) -> Result<(), String> {
    dev.synchronize().map_err(|e| e.to_string())?;
    raw(dev, || {
        let pool = current_pool(dev)?;
        // SAFETY: `pool` was just returned by the driver; trimming frees only unused memory.
        unsafe { sys::cuMemPoolTrimTo(pool, 0) }
            .result()
            .map_err(|e| format!("cuMemPoolTrimTo: {e:?}"))
    })
}
