//! `Tensor`: a dtype, a shape and elements on the CPU or a CUDA device.
//!
//! Tensors are immutable through this API, so clones share their elements (an `Arc` inside).
//! Row-major layout: `g[B, ...]` has sample `b`'s values at `b * per_sample_len() ..`.

mod convert;
mod storage;
mod transfer;

use std::fmt;
use std::sync::Arc;

use crate::cuda::{CudaDevice, DeviceBuffer};
use crate::device::Device;
use crate::dtype::DType;
use crate::element::{as_bytes, check_element, Element};
use crate::error::{Error, Result};
pub use convert::convert_kernel_sources;
pub use storage::{host_filled, host_zeros};
pub(crate) use storage::{CpuData, CudaMemory};

/// A dense, row-major array of one dtype on one device.
#[derive(Clone)]
pub struct Tensor {
    dtype: DType,
    shape: Vec<usize>,
    storage: Storage,
}

#[derive(Clone)]
pub(crate) enum Storage {
    Cpu(Arc<CpuData>),
    Cuda {
        device: CudaDevice,
        memory: Arc<CudaMemory>,
    },
}

/// The number of elements of `shape`, or a shape error when it overflows.
pub(crate) fn element_count(shape: &[usize]) -> Result<usize> {
    shape
        .iter()
        .try_fold(1usize, |n, &d| n.checked_mul(d))
        .ok_or_else(|| {
            Error::Shape(format!(
                "shape {shape:?} has more elements than fit in memory"
            ))
        })
}

impl Tensor {
    /// A tensor of `shape` holding a copy of `data` (row-major) on `device`.
    ///
    /// `data.len()` must equal the product of `shape` (1 for `[]`), else [`Error::Shape`].
    pub fn from_slice<T: Element>(data: &[T], shape: &[usize], device: &Device) -> Result<Tensor> {
        check_len(data.len(), shape)?;
        match device {
            Device::Cpu => {
                // The copy is allocated fallibly: out of memory is an error, not an abort.
                let mut copy = Vec::new();
                copy.try_reserve_exact(data.len()).map_err(|_| {
                    storage::host_memory_error(
                        data.len(),
                        std::mem::size_of::<T>(),
                        &"the allocator refused",
                    )
                })?;
                copy.extend_from_slice(data);
                Tensor::from_vec(copy, shape, device)
            }
            Device::Cuda(d) => {
                let bytes = as_bytes(data)?;
                let mut buf = d.alloc(bytes.len())?;
                d.htod(bytes, &mut buf)?;
                Tensor::from_device_buffer(buf, T::DTYPE, shape, d)
            }
        }
    }

    /// Like [`Tensor::from_slice`], taking the data by value (no copy on the CPU).
    pub fn from_vec<T: Element>(data: Vec<T>, shape: &[usize], device: &Device) -> Result<Tensor> {
        check_len(data.len(), shape)?;
        match device {
            Device::Cpu => Ok(Tensor {
                dtype: T::DTYPE,
                shape: shape.to_vec(),
                storage: Storage::Cpu(Arc::new(CpuData::from_vec(data)?)),
            }),
            Device::Cuda(_) => Tensor::from_slice(&data, shape, device),
        }
    }

    /// A tensor of zeros.
    pub fn zeros(dtype: DType, shape: &[usize], device: &Device) -> Result<Tensor> {
        let len = element_count(shape)?;
        match device {
            Device::Cpu => Ok(Tensor::from_cpu_data(
                CpuData::zeros(dtype, len)?,
                dtype,
                shape,
            )),
            Device::Cuda(d) => {
                let bytes = byte_len(len, dtype, shape)?;
                Tensor::from_device_buffer(d.alloc_zeros(bytes)?, dtype, shape, d)
            }
        }
    }

    /// A tensor whose elements are about to be overwritten (a kernel's output): zeros on the CPU,
    /// unspecified (but valid) floats on a GPU, which saves a pass over memory.
    pub fn uninit(dtype: DType, shape: &[usize], device: &Device) -> Result<Tensor> {
        match device {
            Device::Cpu => Tensor::zeros(dtype, shape, device),
            Device::Cuda(d) => {
                let bytes = byte_len(element_count(shape)?, dtype, shape)?;
                Tensor::from_device_buffer(d.alloc(bytes)?, dtype, shape, d)
            }
        }
    }

    /// A tensor over `buffer`, which it owns from now on.
    ///
    /// The buffer must be on `device` and hold exactly the bytes of `shape` and `dtype`.
    pub fn from_device_buffer(
        buffer: DeviceBuffer,
        dtype: DType,
        shape: &[usize],
        device: &CudaDevice,
    ) -> Result<Tensor> {
        let bytes = byte_len(element_count(shape)?, dtype, shape)?;
        if buffer.len_bytes() != bytes {
            return Err(Error::Shape(format!(
                "a {dtype} tensor of shape {shape:?} needs {bytes} bytes, the buffer has {}",
                buffer.len_bytes()
            )));
        }
        if buffer.ordinal() != device.ordinal() {
            return Err(Error::DeviceMismatch(format!(
                "the buffer is on CUDA device {}, the tensor would be on device {}",
                buffer.ordinal(),
                device.ordinal()
            )));
        }
        Ok(Tensor {
            dtype,
            shape: shape.to_vec(),
            storage: Storage::Cuda {
                device: device.clone(),
                memory: Arc::new(CudaMemory::Owned(buffer)),
            },
        })
    }

    /// A view of device memory someone else owns (PyTorch's): psg reads and writes it but never
    /// frees it.
    ///
    /// # Safety
    ///
    /// `ptr` must point to a live allocation on `device` holding at least the bytes of `shape` and
    /// `dtype`, contiguous and row-major, and it must stay alive (and not be reused) while this
    /// tensor or a clone of it, or work enqueued on it, exists.
    pub unsafe fn from_cuda_ptr(
        ptr: u64,
        dtype: DType,
        shape: &[usize],
        device: &CudaDevice,
    ) -> Tensor {
        Tensor {
            dtype,
            shape: shape.to_vec(),
            storage: Storage::Cuda {
                device: device.clone(),
                memory: Arc::new(CudaMemory::Borrowed(ptr)),
            },
        }
    }

    pub(crate) fn from_cpu_data(data: CpuData, dtype: DType, shape: &[usize]) -> Tensor {
        Tensor {
            dtype,
            shape: shape.to_vec(),
            storage: Storage::Cpu(Arc::new(data)),
        }
    }

    pub(crate) fn storage(&self) -> &Storage {
        &self.storage
    }

    /// The element type.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// The shape (empty for a scalar).
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// The number of dimensions.
    pub fn rank(&self) -> usize {
        self.shape.len()
    }

    /// The device the elements are on.
    pub fn device(&self) -> Device {
        match &self.storage {
            Storage::Cpu(_) => Device::Cpu,
            Storage::Cuda { device, .. } => Device::Cuda(device.clone()),
        }
    }

    /// The number of elements (the product of the shape; 1 for a scalar).
    pub fn len(&self) -> usize {
        self.shape.iter().fold(1usize, |n, &d| n.saturating_mul(d))
    }

    /// Whether the tensor has no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes of the elements.
    pub fn size_in_bytes(&self) -> usize {
        self.len().saturating_mul(self.dtype.size_in_bytes())
    }

    /// B, the batch size: the first dimension. [`Error::Shape`] for a scalar.
    pub fn batch_size(&self) -> Result<usize> {
        self.shape.first().copied().ok_or_else(|| {
            Error::Shape(
                "a scalar tensor (shape []) has no batch dimension; per-sample data has shape \
                 [B, ...]"
                    .into(),
            )
        })
    }

    /// P, the elements per sample: the product of the dimensions after the first (1 for shape
    /// `[B]` and for a scalar).
    pub fn per_sample_len(&self) -> usize {
        self.shape
            .get(1..)
            .unwrap_or(&[])
            .iter()
            .fold(1usize, |n, &d| n.saturating_mul(d))
    }

    /// The same elements under another shape with as many elements (shares them; no copy).
    pub fn reshape(&self, shape: &[usize]) -> Result<Tensor> {
        if element_count(shape)? != self.len() {
            return Err(Error::Shape(format!(
                "cannot reshape {:?} ({} elements) to {shape:?} ({} elements)",
                self.shape,
                self.len(),
                element_count(shape)?
            )));
        }
        Ok(Tensor {
            shape: shape.to_vec(),
            ..self.clone()
        })
    }

    /// Whether the elements are borrowed device memory ([`Tensor::from_cuda_ptr`]).
    pub fn is_borrowed(&self) -> bool {
        matches!(&self.storage, Storage::Cuda { memory, .. } if matches!(**memory, CudaMemory::Borrowed(_)))
    }

    /// The device address of the first element of a CUDA tensor; [`Error::DeviceMismatch`] on the
    /// CPU.
    pub fn cuda_ptr(&self) -> Result<u64> {
        match &self.storage {
            Storage::Cuda { memory, .. } => Ok(memory.ptr()),
            Storage::Cpu(_) => Err(Error::DeviceMismatch(
                "cuda_ptr() of a CPU tensor; move it first with to_device(&Device::Cuda(..))"
                    .into(),
            )),
        }
    }

    /// The elements of a CPU tensor as `&[T]`. [`Error::DType`] if `T` is not the tensor's
    /// dtype, [`Error::DeviceMismatch`] for a CUDA tensor (use [`Tensor::to_vec`]).
    pub fn as_cpu_slice<T: Element>(&self) -> Result<&[T]> {
        check_element::<T>(self.dtype, "the tensor")?;
        match &self.storage {
            Storage::Cpu(data) => data
                .slice::<T>()
                .ok_or_else(|| Error::DType(format!("the tensor's data is not {}", T::DTYPE))),
            Storage::Cuda { .. } => Err(Error::DeviceMismatch(
                "as_cpu_slice() of a CUDA tensor; copy it with to_vec() or to_device(&Device::Cpu)"
                    .into(),
            )),
        }
    }
}

fn check_len(len: usize, shape: &[usize]) -> Result<()> {
    let want = element_count(shape)?;
    if len != want {
        return Err(Error::Shape(format!(
            "{len} elements given for shape {shape:?}, which holds {want}"
        )));
    }
    Ok(())
}

fn byte_len(len: usize, dtype: DType, shape: &[usize]) -> Result<usize> {
    len.checked_mul(dtype.size_in_bytes())
        .ok_or_else(|| Error::Shape(format!("a {dtype} tensor of shape {shape:?} is too large")))
}

impl fmt::Debug for Tensor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tensor")
            .field("dtype", &self.dtype)
            .field("shape", &self.shape)
            .field("device", &self.device().short_name())
            .field("borrowed", &self.is_borrowed())
            .finish()
    }
}

/// Tensors of at most this many values print them.
const DISPLAY_VALUES: usize = 64;

impl fmt::Display for Tensor {
    /// `tensor(f32, [2, 3], cpu) [1, 2, 3, 4, 5, 6]`: the dtype, shape and device, and the values
    /// in row-major order when there are at most 64 of them, in their own type (f32 and f64 in
    /// the shortest form that reads back exactly, f16 and bf16 as `half` prints them: their f32
    /// value's), `{:.3}` setting the digits; a GPU tensor's values are copied to the host. A
    /// larger tensor prints its count.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "tensor({}, {:?}, {})",
            self.dtype,
            self.shape,
            self.device().short_name()
        )?;
        let n = self.len();
        if n > DISPLAY_VALUES {
            return write!(f, " of {n} values");
        }
        let written = match self.dtype {
            DType::F32 => self.to_vec::<f32>().map(|v| write_values(f, &v)),
            DType::F64 => self.to_vec::<f64>().map(|v| write_values(f, &v)),
            DType::F16 => self.to_vec::<half::f16>().map(|v| write_values(f, &v)),
            DType::BF16 => self.to_vec::<half::bf16>().map(|v| write_values(f, &v)),
        };
        match written {
            Ok(result) => result,
            Err(e) => write!(f, " <values unreadable: {e}>"),
        }
    }
}

/// ` [v0, v1, ...]`, each value in its own type's shortest round-trip form, or with the
/// formatter's precision (`{:.3}`) when one is given.
fn write_values<T: fmt::Display>(f: &mut fmt::Formatter<'_>, values: &[T]) -> fmt::Result {
    f.write_str(" [")?;
    for (i, v) in values.iter().enumerate() {
        if i > 0 {
            f.write_str(", ")?;
        }
        match f.precision() {
            Some(p) => write!(f, "{v:.p$}")?,
            None => write!(f, "{v}")?,
        }
    }
    f.write_str("]")
}

#[cfg(test)]
mod tests;
