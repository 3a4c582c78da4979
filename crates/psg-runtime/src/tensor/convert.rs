//! A tensor's elements in another dtype ([`Tensor::to_dtype`]), on the device that holds them.
//!
//! Widening is exact. Narrowing rounds to nearest, ties to even, with one rounding: f64 to f16 or
//! bf16 first rounds to odd in f32 (truncates, then sets the last bit where that lost anything),
//! which leaves the one rounding to 16 bits correct, where a plain `as f32` first would round
//! twice. A NaN stays a NaN, its sign and payload not kept alike: the CPU and the CUDA kernels
//! (`convert.cu`) compute the same bits for every other value.

use std::borrow::Cow;
use std::sync::OnceLock;

use half::{bf16, f16};

use super::{host_zeros, CpuData, Storage, Tensor};
use crate::cuda::{KernelArg, LaunchConfig};
use crate::dtype::DType;
use crate::element::Element;
use crate::error::Result;
use crate::jit::KernelSource;

/// `x` in f32, rounded to odd: truncated toward zero, then the last bit set where that was
/// inexact. NaN stays NaN.
pub(crate) fn f64_to_f32_odd(x: f64) -> f32 {
    let mut r = x as f32;
    if x.is_nan() {
        return r;
    }
    if f64::from(r).abs() > x.abs() {
        // Rounded away from zero (to infinity, past f32::MAX): one step back toward zero.
        r = f32::from_bits(r.to_bits() - 1);
    }
    if f64::from(r) != x {
        r = f32::from_bits(r.to_bits() | 1);
    }
    r
}

/// The CPU conversion of `data` to `to` (a dtype other than its own).
fn convert_cpu(data: &CpuData, to: DType) -> Result<CpuData> {
    fn map<T: Copy, U: Element>(v: &[T], f: impl Fn(T) -> U) -> Result<Vec<U>> {
        let mut out = host_zeros(&[v.len()])?;
        for (o, &x) in out.iter_mut().zip(v) {
            *o = f(x);
        }
        Ok(out)
    }
    Ok(match (data, to) {
        (CpuData::F32(v), DType::F64) => CpuData::F64(map(v, f64::from)?),
        (CpuData::F32(v), DType::F16) => CpuData::F16(map(v, f16::from_f32)?),
        (CpuData::F32(v), DType::BF16) => CpuData::BF16(map(v, bf16::from_f32)?),
        (CpuData::F64(v), DType::F32) => CpuData::F32(map(v, |x| x as f32)?),
        (CpuData::F64(v), DType::F16) => {
            CpuData::F16(map(v, |x| f16::from_f32(f64_to_f32_odd(x)))?)
        }
        (CpuData::F64(v), DType::BF16) => {
            CpuData::BF16(map(v, |x| bf16::from_f32(f64_to_f32_odd(x)))?)
        }
        (CpuData::F16(v), DType::F32) => CpuData::F32(map(v, f16::to_f32)?),
        (CpuData::F16(v), DType::F64) => CpuData::F64(map(v, f16::to_f64)?),
        (CpuData::F16(v), DType::BF16) => CpuData::BF16(map(v, |x| bf16::from_f32(x.to_f32()))?),
        (CpuData::BF16(v), DType::F32) => CpuData::F32(map(v, bf16::to_f32)?),
        (CpuData::BF16(v), DType::F64) => CpuData::F64(map(v, bf16::to_f64)?),
        (CpuData::BF16(v), DType::F16) => CpuData::F16(map(v, |x| f16::from_f32(x.to_f32()))?),
        // The caller returns the tensor itself for its own dtype.
        (same, _) => same.clone(),
    })
}

/// The kernel converting `from` to `to` (`psg_convert_{from}_{to}` of `convert.cu`).
fn kernel(from: DType, to: DType) -> &'static KernelSource {
    static KERNELS: OnceLock<Vec<KernelSource>> = OnceLock::new();
    let all = KERNELS.get_or_init(|| {
        DType::ALL
            .iter()
            .flat_map(|&f| DType::ALL.iter().map(move |&t| (f, t)))
            .map(|(f, t)| KernelSource {
                name: Cow::Owned(format!("psg_convert_{}_{}", f.name(), t.name())),
                source: Cow::Borrowed(include_str!("convert.cu")),
            })
            .collect()
    });
    &all[from.index() * DType::ALL.len() + to.index()]
}

/// The CUDA sources of the conversions, one a pair of distinct dtypes (for the NVRTC check).
pub fn convert_kernel_sources() -> Vec<&'static KernelSource> {
    DType::ALL
        .iter()
        .flat_map(|&f| DType::ALL.iter().map(move |&t| (f, t)))
        .filter(|(f, t)| f != t)
        .map(|(f, t)| kernel(f, t))
        .collect()
}

impl Tensor {
    /// The elements in `dtype`, on the same device, same shape. Widening (f16 or bf16 to f32 or
    /// f64, f32 to f64) is exact; narrowing rounds to nearest, ties to even, once (f64 to f16 or
    /// bf16 included), and keeps infinities and signed zeros; a NaN stays a NaN (its sign and
    /// payload may change). The same dtype gives the tensor back (its elements shared, not
    /// copied). On CUDA one kernel launch converts every element on the device; the CPU computes
    /// the same bits, but for NaNs'.
    ///
    /// ```
    /// use psg_runtime::{DType, Device, Tensor};
    /// let g = Tensor::from_slice(&[1.0f32, 1.0 + 1.0 / 256.0, -0.0], &[3], &Device::Cpu)?;
    /// let h = g.to_dtype(DType::BF16)?; // 1 + 2^-8 is halfway: ties to even, 1
    /// assert_eq!(h.to_dtype(DType::F32)?.to_vec::<f32>()?, vec![1.0, 1.0, -0.0]);
    /// # Ok::<(), psg_runtime::Error>(())
    /// ```
    pub fn to_dtype(&self, dtype: DType) -> Result<Tensor> {
        if dtype == self.dtype() {
            return Ok(self.clone());
        }
        match self.storage() {
            Storage::Cpu(data) => Ok(Tensor::from_cpu_data(
                convert_cpu(data, dtype)?,
                dtype,
                self.shape(),
            )),
            Storage::Cuda { device, .. } => {
                let out = Tensor::uninit(dtype, self.shape(), &self.device())?;
                let n = self.len();
                if n > 0 {
                    let args = [
                        KernelArg::Ptr(self.cuda_ptr()?),
                        KernelArg::Ptr(out.cuda_ptr()?),
                        KernelArg::I64(n as i64),
                    ];
                    let cfg = LaunchConfig::for_items(n.min(1 << 30), 256)?;
                    device.launch(kernel(self.dtype(), dtype), cfg, &args)?;
                }
                Ok(out)
            }
        }
    }
}
