//! Where a tensor's elements live: a typed `Vec` on the CPU, or device memory that psg owns or
//! borrows.

use std::any::Any;

use half::{bf16, f16};

use crate::cuda::DeviceBuffer;
use crate::dtype::DType;
use crate::element::Element;
use crate::error::{Error, Result};

/// Elements on the CPU, one variant per dtype.
#[derive(Debug, Clone)]
pub(crate) enum CpuData {
    F32(Vec<f32>),
    F64(Vec<f64>),
    F16(Vec<f16>),
    BF16(Vec<bf16>),
}

impl CpuData {
    /// Wraps a `Vec<T>` (no copy); an error if `T` is not one of the four element types.
    pub(crate) fn from_vec<T: Element>(v: Vec<T>) -> Result<Self> {
        let b: Box<dyn Any> = Box::new(v);
        let b = match b.downcast::<Vec<f32>>() {
            Ok(v) => return Ok(CpuData::F32(*v)),
            Err(b) => b,
        };
        let b = match b.downcast::<Vec<f64>>() {
            Ok(v) => return Ok(CpuData::F64(*v)),
            Err(b) => b,
        };
        let b = match b.downcast::<Vec<f16>>() {
            Ok(v) => return Ok(CpuData::F16(*v)),
            Err(b) => b,
        };
        match b.downcast::<Vec<bf16>>() {
            Ok(v) => Ok(CpuData::BF16(*v)),
            Err(_) => Err(Error::DType(format!(
                "{} is not a tensor element type; use f32, f64, half::f16 or half::bf16",
                std::any::type_name::<T>()
            ))),
        }
    }

    /// `len` zeros of `dtype`; [`Error::HostMemory`] where they do not fit (see [`host_zeros`]).
    pub(crate) fn zeros(dtype: DType, len: usize) -> Result<Self> {
        Ok(match dtype {
            DType::F32 => CpuData::F32(host_zeros(&[len])?),
            DType::F64 => CpuData::F64(host_zeros(&[len])?),
            DType::F16 => CpuData::F16(host_zeros(&[len])?),
            DType::BF16 => CpuData::BF16(host_zeros(&[len])?),
        })
    }

    /// The elements as `&[T]`, or `None` when `T` is not this data's type.
    pub(crate) fn slice<T: Element>(&self) -> Option<&[T]> {
        let any: &dyn Any = match self {
            CpuData::F32(v) => v,
            CpuData::F64(v) => v,
            CpuData::F16(v) => v,
            CpuData::BF16(v) => v,
        };
        any.downcast_ref::<Vec<T>>().map(Vec::as_slice)
    }

    /// The raw bytes, for copies to a device.
    pub(crate) fn bytes(&self) -> Result<&[u8]> {
        match self {
            CpuData::F32(v) => crate::element::as_bytes(v),
            CpuData::F64(v) => crate::element::as_bytes(v),
            CpuData::F16(v) => crate::element::as_bytes(v),
            CpuData::BF16(v) => crate::element::as_bytes(v),
        }
    }

    /// The raw bytes, mutable, for copies from a device.
    pub(crate) fn bytes_mut(&mut self) -> Result<&mut [u8]> {
        match self {
            CpuData::F32(v) => crate::element::as_bytes_mut(v),
            CpuData::F64(v) => crate::element::as_bytes_mut(v),
            CpuData::F16(v) => crate::element::as_bytes_mut(v),
            CpuData::BF16(v) => crate::element::as_bytes_mut(v),
        }
    }
}

/// The error of a host allocation of `len` elements of `size` bytes that failed (`why`).
pub(super) fn host_memory_error(len: usize, size: usize, why: &dyn std::fmt::Display) -> Error {
    Error::HostMemory(format!(
        "{len} elements of {size} bytes ({why}); use a smaller tensor, split the work, or free \
         memory"
    ))
}

/// `len` copies of `fill` on the host, or [`Error::HostMemory`] where the allocator refuses them:
/// `vec!` panics on a size past `isize::MAX` bytes and aborts the process when an allocation
/// fails. It writes every element; for zeros of an element type, [`host_zeros`] does not.
pub fn host_filled<T: Clone>(len: usize, fill: T) -> Result<Vec<T>> {
    let mut v = Vec::new();
    v.try_reserve_exact(len)
        .map_err(|e| host_memory_error(len, std::mem::size_of::<T>(), &e))?;
    v.resize(len, fill);
    Ok(v)
}

/// Zeros of an element type for a tensor of `shape` on the host, or an error: [`Error::Shape`]
/// where the element count overflows, [`Error::HostMemory`] where the allocator refuses them
/// (where `vec!` would panic or abort the process). The memory comes zeroed from the allocator,
/// as `vec![0.0; n]` gets it (large blocks as pages the OS maps on first use), not written.
pub fn host_zeros<T: Element>(shape: &[usize]) -> Result<Vec<T>> {
    use std::any::TypeId;
    let len = super::element_count(shape)?;
    let floats = [
        TypeId::of::<f32>(),
        TypeId::of::<f64>(),
        TypeId::of::<f16>(),
        TypeId::of::<bf16>(),
    ];
    if len == 0 || !floats.contains(&TypeId::of::<T>()) {
        // Another type implementing `Element` need not be zero in all-zero bits: fill it.
        return host_filled(len, T::default());
    }
    let size = std::mem::size_of::<T>();
    let layout = std::alloc::Layout::array::<T>(len).map_err(|_| {
        host_memory_error(
            len,
            size,
            &"more bytes than one allocation can hold, isize::MAX",
        )
    })?;
    // SAFETY: `layout` has a non-zero size (len > 0; T is one of the four float types, 2 to 8
    // bytes). In those types the all-zero bit pattern is +0.0, so the zeroed block holds `len`
    // valid values, and the Vec owns it with the layout it would have allocated for capacity
    // `len` (`Layout::array::<T>(len)`, the global allocator).
    unsafe {
        let ptr = std::alloc::alloc_zeroed(layout).cast::<T>();
        if ptr.is_null() {
            return Err(host_memory_error(len, size, &"the allocator refused"));
        }
        Ok(Vec::from_raw_parts(ptr, len, len))
    }
}

/// Device memory of a tensor.
#[derive(Debug)]
pub(crate) enum CudaMemory {
    /// Allocated by psg, freed when the last tensor using it is dropped.
    Owned(DeviceBuffer),
    /// Someone else's memory (PyTorch's): never freed by psg.
    Borrowed(u64),
}

impl CudaMemory {
    pub(crate) fn ptr(&self) -> u64 {
        match self {
            CudaMemory::Owned(b) => b.ptr(),
            CudaMemory::Borrowed(p) => *p,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typed_access_only_with_the_right_type() {
        let d = CpuData::from_vec(vec![1.0f64, 2.0]).unwrap();
        assert_eq!(d.slice::<f64>(), Some(&[1.0, 2.0][..]));
        assert_eq!(d.slice::<f32>(), None);
        assert_eq!(d.bytes().unwrap().len(), 16);
    }
}
