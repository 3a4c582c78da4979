//! Where work runs (`Device`) and choosing it: CUDA device 0 when it is usable, else the CPU.

use std::fmt;

use crate::cuda::{cuda_device_count, driver_status, CudaDevice};
use crate::error::{Error, Result};
use crate::nvrtc::{nvrtc_status, nvrtc_version};

/// A backend: the CPU (rayon over columns) or one CUDA device.
#[derive(Clone, Debug)]
pub enum Device {
    /// The CPU.
    Cpu,
    /// A CUDA device (and the stream psg runs on).
    Cuda(CudaDevice),
}

impl Device {
    /// Whether this is the CPU.
    pub fn is_cpu(&self) -> bool {
        matches!(self, Device::Cpu)
    }

    /// Whether this is a CUDA device.
    pub fn is_cuda(&self) -> bool {
        matches!(self, Device::Cuda(_))
    }

    /// The CUDA device, if this is one.
    pub fn as_cuda(&self) -> Option<&CudaDevice> {
        match self {
            Device::Cuda(d) => Some(d),
            Device::Cpu => None,
        }
    }

    /// Whether tensors on `self` and `other` can be used together: both the CPU, or the same CUDA
    /// device ordinal.
    pub fn same_memory_space(&self, other: &Device) -> bool {
        match (self, other) {
            (Device::Cpu, Device::Cpu) => true,
            (Device::Cuda(a), Device::Cuda(b)) => a.same_device(b),
            _ => false,
        }
    }

    /// A short name for messages: `cpu` or `cuda:0`.
    pub fn short_name(&self) -> String {
        match self {
            Device::Cpu => "cpu".to_string(),
            Device::Cuda(d) => format!("cuda:{}", d.ordinal()),
        }
    }
}

impl PartialEq for Device {
    /// Equal where tensors on both can be used together: both the CPU, or the same CUDA device
    /// ordinal (whatever stream each handle runs on), as [`Device::same_memory_space`].
    fn eq(&self, other: &Device) -> bool {
        self.same_memory_space(other)
    }
}

impl Eq for Device {}

impl fmt::Display for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Device::Cpu => f.write_str("CPU"),
            Device::Cuda(d) => write!(f, "{d}"),
        }
    }
}

impl From<CudaDevice> for Device {
    fn from(d: CudaDevice) -> Self {
        Device::Cuda(d)
    }
}

/// The device [`select_device`] chose, and why, in a sentence for logs and examples.
#[derive(Clone, Debug)]
pub struct DeviceChoice {
    /// The chosen device.
    pub device: Device,
    /// Why, e.g. `"CUDA device 0: NVIDIA H100 80GB HBM3 (sm_90), NVRTC 13.0"` or
    /// `"CPU: no CUDA device"`.
    pub reason: String,
}

/// Opens CUDA device `ordinal` for psg's kernels: libcuda, the device and libnvrtc must all be
/// usable, else a typed error saying which is not.
pub fn cuda_device(ordinal: usize) -> Result<CudaDevice> {
    driver_status()?;
    if cuda_device_count()? == 0 {
        return Err(Error::CudaUnavailable {
            reason: "no CUDA device".into(),
        });
    }
    nvrtc_status()?;
    CudaDevice::new(ordinal)
}

/// What `PSG_DEVICE` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Request {
    Auto,
    Cpu,
    Cuda(usize),
}

/// An environment variable's text: `None` where unset, an error where it is not UTF-8 (which
/// `std::env::var(..).ok()` would take for unset, so that a mangled value chose silently).
pub(crate) fn env_text(name: &str) -> Result<Option<String>> {
    match std::env::var(name) {
        Ok(v) => Ok(Some(v)),
        Err(std::env::VarError::NotPresent) => Ok(None),
        Err(std::env::VarError::NotUnicode(raw)) => Err(Error::InvalidParameter(format!(
            "{name}={raw:?} is not valid UTF-8; set it to one of the values the README lists, or \
             unset it"
        ))),
    }
}

fn parse_request(value: Option<&str>) -> Result<Request> {
    let v = value
        .map(|v| v.trim().to_ascii_lowercase())
        .unwrap_or_default();
    match v.as_str() {
        "" | "auto" => Ok(Request::Auto),
        "cpu" => Ok(Request::Cpu),
        "cuda" | "gpu" => Ok(Request::Cuda(0)),
        _ => v
            .strip_prefix("cuda:")
            .and_then(|n| n.parse().ok())
            .map(Request::Cuda)
            .ok_or_else(|| {
                Error::InvalidParameter(format!(
                    "PSG_DEVICE={v:?} is not one of auto, cpu, cuda, cuda:N; unset it to choose \
                     automatically"
                ))
            }),
    }
}

fn cuda_choice(ordinal: usize) -> Result<DeviceChoice> {
    let d = cuda_device(ordinal)?;
    let (major, minor) = nvrtc_version()?;
    Ok(DeviceChoice {
        reason: format!("{d}, NVRTC {major}.{minor}"),
        device: Device::Cuda(d),
    })
}

/// Why the CPU was chosen when CUDA device 0 is not usable.
fn cpu_reason(e: &Error) -> String {
    match e {
        Error::CudaUnavailable { reason } => format!("CPU: {reason}"),
        Error::NvrtcUnavailable { .. } | Error::NvrtcBuiltinsMissing { .. } => {
            format!("CPU: NVRTC is not usable, so no kernel could be compiled ({e})")
        }
        other => format!("CPU: CUDA device 0 is not usable ({other})"),
    }
}

/// Like [`select_device`], but an error when `PSG_DEVICE` asks for CUDA and it is not usable, or
/// when `PSG_DEVICE` holds something else than `auto`, `cpu`, `cuda` or `cuda:N`, or (unless
/// `PSG_DEVICE=cpu`) `PSG_JIT` something else than `tiered`, `optimized` or `quick`.
pub fn try_select_device() -> Result<DeviceChoice> {
    let request = parse_request(env_text("PSG_DEVICE")?.as_deref())?;
    if request != Request::Cpu {
        // A misspelt PSG_JIT is an error here, not a reason to fall back to the CPU.
        crate::jit::JitMode::from_env()?;
    }
    match request {
        Request::Cpu => Ok(DeviceChoice {
            device: Device::Cpu,
            reason: "CPU: PSG_DEVICE=cpu".to_string(),
        }),
        Request::Cuda(ordinal) => cuda_choice(ordinal),
        Request::Auto => Ok(cuda_choice(0).unwrap_or_else(|e| DeviceChoice {
            device: Device::Cpu,
            reason: cpu_reason(&e),
        })),
    }
}

/// Chooses where to run: CUDA device 0 when libcuda, a device and libnvrtc are all usable, else
/// the CPU; `reason` says which and why. Never panics and never fails.
///
/// `PSG_DEVICE=cpu` forces the CPU; `PSG_DEVICE=cuda` (or `cuda:N`) asks for CUDA: when it is not
/// usable this returns the CPU with a reason that says so ([`try_select_device`] and
/// [`cuda_device`] return the error instead).
pub fn select_device() -> DeviceChoice {
    try_select_device().unwrap_or_else(|e| DeviceChoice {
        device: Device::Cpu,
        reason: format!("CPU: {e}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn psg_device_values() {
        assert_eq!(parse_request(None).ok(), Some(Request::Auto));
        assert_eq!(parse_request(Some(" CPU ")).ok(), Some(Request::Cpu));
        assert_eq!(parse_request(Some("cuda")).ok(), Some(Request::Cuda(0)));
        assert_eq!(parse_request(Some("cuda:3")).ok(), Some(Request::Cuda(3)));
        assert!(matches!(
            parse_request(Some("tpu")),
            Err(Error::InvalidParameter(_))
        ));
    }

    #[test]
    fn select_device_never_panics_and_explains() {
        let choice = select_device();
        assert!(!choice.reason.is_empty());
        match &choice.device {
            Device::Cpu => assert!(choice.reason.starts_with("CPU: "), "{}", choice.reason),
            Device::Cuda(_) => assert!(choice.reason.contains("NVRTC"), "{}", choice.reason),
        }
        // On a machine without libcuda (this crate's CI), the reason names it.
        if driver_status().is_err() && std::env::var_os("PSG_DEVICE").is_none() {
            assert!(choice.device.is_cpu());
            assert!(choice.reason.contains("libcuda"), "{}", choice.reason);
            assert!(matches!(cuda_device(0), Err(Error::CudaUnavailable { .. })));
        }
    }
}
