//! Checks on what a layer kernel is given (dtype, device, shapes) and the small conversions its
//! GPU launch needs. Every failure is a typed error that names the layer and the argument.

use psg_runtime::cudarc::driver::sys::CUdevice_attribute;
use psg_runtime::{CudaDevice, DType, Device, DeviceBuffer, Error, KernelArg, Result, Tensor};

/// Requires FP32 (the layer kernels compute in FP32 without TF32).
pub(crate) fn check_f32(op: &str, what: &str, t: &Tensor) -> Result<()> {
    if t.dtype() == DType::F32 {
        Ok(())
    } else {
        Err(Error::DType(format!(
            "{op}: {what} is {}, but the layer kernels take f32 (FP32 math); convert it first, on its \
             device: `.to_dtype(DType::F32)`",
            t.dtype()
        )))
    }
}

/// The device both tensors are on, or an error naming them.
pub(crate) fn same_device(
    op: &str,
    first: (&str, &Tensor),
    second: (&str, &Tensor),
) -> Result<Device> {
    let device = first.1.device();
    if device.same_memory_space(&second.1.device()) {
        Ok(device)
    } else {
        Err(Error::DeviceMismatch(format!(
            "{op}: {} is on {} but {} is on {}; move them to one device",
            first.0,
            device.short_name(),
            second.0,
            second.1.device().short_name()
        )))
    }
}

/// A size as a kernel's `int`, or a shape error when it does not fit.
pub(crate) fn int_arg(op: &str, what: &str, value: usize) -> Result<KernelArg> {
    i32::try_from(value).map(KernelArg::I32).map_err(|_| {
        Error::Shape(format!(
            "{op}: {what} = {value} is larger than the kernel's 32-bit limit ({})",
            i32::MAX
        ))
    })
}

/// A count as a kernel's `long long`.
pub(crate) fn long_arg(op: &str, what: &str, value: usize) -> Result<KernelArg> {
    i64::try_from(value)
        .map(KernelArg::I64)
        .map_err(|_| Error::Shape(format!("{op}: {what} = {value} does not fit in 64 bits")))
}

/// A grid size in blocks, or a shape error past CUDA's limit.
pub(crate) fn grid_blocks(op: &str, blocks: usize) -> Result<u32> {
    u32::try_from(blocks)
        .ok()
        .filter(|&b| b <= i32::MAX as u32)
        .ok_or_else(|| {
            Error::Shape(format!(
                "{op}: the problem needs {blocks} blocks, more than a CUDA grid's 2^31 - 1; split it \
                 into smaller calls"
            ))
        })
}

/// The number of streaming multiprocessors of `dev`.
pub(crate) fn sm_count(dev: &CudaDevice) -> Result<usize> {
    let n = dev
        .cudarc_context()
        .attribute(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)
        .map_err(|e| Error::Driver {
            op: "cuDeviceGetAttribute",
            message: format!("{e:?}"),
        })?;
    Ok(usize::try_from(n).unwrap_or(1).max(1))
}

/// Copies `values` into a fresh device buffer (kernel argument `const int*`).
pub(crate) fn upload_i32(dev: &CudaDevice, values: &[i32]) -> Result<DeviceBuffer> {
    let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    let mut buf = dev.alloc(bytes.len())?;
    dev.htod(&bytes, &mut buf)?;
    Ok(buf)
}

/// The device address of a CUDA tensor as a pointer argument.
pub(crate) fn ptr_arg(t: &Tensor) -> Result<KernelArg> {
    Ok(KernelArg::Ptr(t.cuda_ptr()?))
}

/// Whether every tensor's first element is 16-byte aligned (for float4 loads and stores).
pub(crate) fn aligned16(tensors: &[&Tensor]) -> Result<bool> {
    for t in tensors {
        if !t.cuda_ptr()?.is_multiple_of(16) {
            return Ok(false);
        }
    }
    Ok(true)
}

/// The elements of an f32 CPU tensor.
pub(crate) fn cpu_f32(t: &Tensor) -> Result<&[f32]> {
    t.as_cpu_slice::<f32>()
}
