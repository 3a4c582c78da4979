//! The runtime's error type: every way a user's input or the machine can make a call fail.

/// Advice shared by the NVRTC errors: where the library comes from and how the process must find it.
const NVRTC_ADVICE: &str = "install nvidia-cuda-nvrtc==13.0.88 from PyPI and put its \
nvidia/cu13/lib folder on LD_LIBRARY_PATH before starting the process";

/// Everything that can go wrong in the runtime. Messages say what was wrong and what to do.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// The CUDA driver cannot be used: libcuda is missing, there is no device, or initialisation failed.
    #[error(
        "CUDA is unavailable: {reason}. Run on a machine with an NVIDIA GPU and its driver \
         (libcuda.so.1), or use the CPU backend (Device::Cpu, or PSG_DEVICE=cpu)"
    )]
    CudaUnavailable {
        /// What failed, in words.
        reason: String,
    },
    /// libnvrtc (the runtime compiler) could not be loaded.
    #[error("libnvrtc is unavailable: {reason}. To fix it, {NVRTC_ADVICE}")]
    NvrtcUnavailable {
        /// What failed, in words.
        reason: String,
    },
    /// libnvrtc loaded, but it could not open its companion library libnvrtc-builtins.
    #[error(
        "NVRTC could not open libnvrtc-builtins (it must be in a folder on LD_LIBRARY_PATH when \
         the process starts; loading libnvrtc by absolute path is not enough). To fix it, \
         {NVRTC_ADVICE}. NVRTC log:\n{log}"
    )]
    NvrtcBuiltinsMissing {
        /// NVRTC's program log (or its error string when there was no log).
        log: String,
    },
    /// NVRTC rejected a kernel's source. The log names the source file `<kernel>.cu` and the line.
    #[error(
        "NVRTC failed to compile kernel `{kernel}` (its source is named `{kernel}.cu` in the log \
         below; this is a bug in the code that generated or wrote the kernel):\n{log}"
    )]
    Compile {
        /// The `extern "C" __global__` function's name.
        kernel: String,
        /// NVRTC's program log.
        log: String,
    },
    /// A CUDA driver call failed (out of memory included).
    #[error("CUDA driver call {op} failed: {message}")]
    Driver {
        /// The operation that failed, e.g. `"cuMemAlloc"`.
        op: &'static str,
        /// The driver's error name and description, with advice where there is some.
        message: String,
    },
    /// A tensor's shape does not fit the operation.
    #[error("shape error: {0}")]
    Shape(String),
    /// A tensor's element type does not fit the operation.
    #[error("dtype error: {0}")]
    DType(String),
    /// Tensors of one operation live on different devices.
    #[error("device mismatch: {0}")]
    DeviceMismatch(String),
    /// A parameter is out of its valid range.
    #[error("invalid parameter: {0}")]
    InvalidParameter(String),
    /// A per-sample value is NaN or infinite under a policy that forbids it.
    #[error(
        "non-finite value (NaN or infinity) in tensor #{tensor}, sample {sample}, coordinate \
         {coordinate} (row-major within the sample); fix the input, or choose the policy that \
         drops such samples or the one that propagates them"
    )]
    NonFinite {
        /// Which tensor of the set (0-based).
        tensor: usize,
        /// Which sample (row), 0-based.
        sample: usize,
        /// Which element within the sample, 0-based.
        coordinate: usize,
    },
    /// The kernel cache failed in a way that cannot be worked around.
    ///
    /// A corrupt or unwritable cache is *not* this error: the kernel is recompiled instead.
    #[error("kernel cache error: {0}")]
    Cache(String),
    /// Host memory for a CPU tensor or a copy to the host could not be allocated.
    #[error("out of host memory: {0}")]
    HostMemory(String),
    /// The CPU backend's thread pool could not be started (see [`crate::cpu_pool`]).
    #[error("cannot start psg's CPU threads: {0}")]
    CpuThreads(String),
}

/// The runtime's result type. The error type defaults to [`Error`] and can be given, so that a
/// glob import (`use psg::prelude::*`) leaves `Result<T, E>` usable.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Text of a caught panic's payload, for errors made from a panic in a library we call.
pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic with no message".to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nvrtc_messages_give_the_fix() {
        let e = Error::NvrtcUnavailable {
            reason: "libnvrtc.so.13 not found".into(),
        };
        let msg = e.to_string();
        assert!(msg.contains("nvidia-cuda-nvrtc==13.0.88"), "{msg}");
        assert!(msg.contains("LD_LIBRARY_PATH"), "{msg}");
        let e = Error::NvrtcBuiltinsMissing { log: "x".into() };
        assert!(e.to_string().contains("libnvrtc-builtins"));
    }

    #[test]
    fn compile_message_names_the_kernel() {
        let e = Error::Compile {
            kernel: "sum_f32".into(),
            log: "sum_f32.cu(3): error".into(),
        };
        assert!(e.to_string().contains("`sum_f32`"));
        assert!(e.to_string().contains("sum_f32.cu(3)"));
    }

    #[test]
    fn panic_messages_are_recovered() {
        let p = std::panic::catch_unwind(|| panic!("boom {}", 1)).unwrap_err();
        assert_eq!(panic_message(p.as_ref()), "boom 1");
    }
}
