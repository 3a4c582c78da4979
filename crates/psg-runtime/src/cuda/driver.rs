//! Guarding the CUDA driver: is libcuda there, and turning cudarc's errors and panics into ours.
//!
//! With `dynamic-loading`, cudarc panics on the first call into a missing libcuda, so every entry
//! point checks [`driver_status`] first and runs driver calls under [`guarded`].

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::OnceLock;

use cudarc::driver::{sys, DriverError};

use crate::error::{panic_message, Error, Result};

/// Whether libcuda can be loaded; `Err(Error::CudaUnavailable)` says why not. Worked out once.
pub(crate) fn driver_status() -> Result<()> {
    static STATUS: OnceLock<Result<()>> = OnceLock::new();
    STATUS
        .get_or_init(|| {
            // SAFETY: loading libcuda runs its initialisers, as trusted as any library the
            // process links; nothing else is assumed.
            let present = catch_unwind(|| unsafe { sys::is_culib_present() }).unwrap_or(false);
            if present {
                return Ok(());
            }
            let names = crate::nvrtc::library_candidates("cuda");
            Err(Error::CudaUnavailable {
                reason: format!(
                    "libcuda.so.1 could not be loaded (tried {}; the NVIDIA driver is not \
                     installed or not visible in this container)",
                    names.join(", ")
                ),
            })
        })
        .clone()
}

/// Runs driver calls, turning a panic inside cudarc (a missing library or symbol) into a typed
/// error instead of unwinding into the caller.
pub(crate) fn guarded<T>(op: &'static str, f: impl FnOnce() -> Result<T>) -> Result<T> {
    driver_status()?;
    catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|p| {
        Err(Error::CudaUnavailable {
            reason: format!("{op} panicked inside cudarc: {}", panic_message(p.as_ref())),
        })
    })
}

/// The driver's name for an error code, e.g. `CUDA_ERROR_OUT_OF_MEMORY`.
pub(crate) fn error_name(e: &DriverError) -> String {
    format!("{:?}", e.0)
}

/// Wraps a driver error as [`Error::Driver`], with advice for the errors a user can act on.
pub(crate) fn driver_error(op: &'static str, e: DriverError) -> Error {
    Error::Driver {
        op,
        message: driver_message(e),
    }
}

/// The driver's name and description of an error, with advice where a user can act on it.
fn driver_message(e: DriverError) -> String {
    let description = e
        .error_string()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|_| "no description".to_string());
    let advice = match e.0 {
        sys::CUresult::CUDA_ERROR_OUT_OF_MEMORY => {
            ". The GPU is out of memory: free tensors you no longer need, use smaller batches \
             or fewer parameters per call, or check what else runs on this GPU (nvidia-smi)"
        }
        sys::CUresult::CUDA_ERROR_INVALID_IMAGE | sys::CUresult::CUDA_ERROR_NO_BINARY_FOR_GPU => {
            ". The driver refused a kernel NVRTC had just compiled for this GPU (an image from \
             the disk cache that it refuses is compiled again): the driver may be older than \
             NVRTC (nvidia-smi shows the newest CUDA version it supports), else please report a \
             bug"
        }
        sys::CUresult::CUDA_ERROR_NOT_FOUND => {
            ". The kernel's name was not found in its module: KernelSource::name must be the \
             extern \"C\" __global__ function's name"
        }
        _ => "",
    };
    format!("{} ({description}){advice}", error_name(&e))
}

/// Number of CUDA devices the driver sees; 0 when there is no device.
pub fn cuda_device_count() -> Result<usize> {
    guarded("cuDeviceGetCount", || {
        match cudarc::driver::result::init() {
            Ok(()) => {}
            Err(e) if e.0 == sys::CUresult::CUDA_ERROR_NO_DEVICE => return Ok(0),
            Err(e) => return Err(init_error(e)),
        }
        let n = cudarc::driver::result::device::get_count()
            .map_err(|e| driver_error("cuDeviceGetCount", e))?;
        Ok(usize::try_from(n).unwrap_or(0))
    })
}

/// An error of `cuInit` or of opening a device, as [`Error::CudaUnavailable`].
pub(crate) fn init_error(e: DriverError) -> Error {
    let reason = match e.0 {
        sys::CUresult::CUDA_ERROR_NO_DEVICE => "no CUDA device".to_string(),
        sys::CUresult::CUDA_ERROR_SYSTEM_DRIVER_MISMATCH => format!(
            "the NVIDIA kernel driver and libcuda versions differ ({}); reinstall the driver or \
             reboot after an update",
            error_name(&e)
        ),
        _ => format!("the driver failed to initialise: {}", driver_message(e)),
    };
    Error::CudaUnavailable { reason }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_driver_here_is_an_error_not_a_panic() {
        // This test machine has no libcuda; on a GPU host the calls succeed. Either way: no panic.
        match driver_status() {
            Ok(()) => assert!(cuda_device_count().is_ok()),
            Err(e) => {
                assert!(matches!(e, Error::CudaUnavailable { .. }));
                assert!(e.to_string().contains("libcuda"), "{e}");
                assert!(matches!(
                    cuda_device_count(),
                    Err(Error::CudaUnavailable { .. })
                ));
            }
        }
    }
}
