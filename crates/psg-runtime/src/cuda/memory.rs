//! Device memory psg owns (`DeviceBuffer`) and copies between host and device on the stream.

use std::fmt;

use cudarc::driver::{result as drv, CudaSlice, DevicePtr};

use super::driver::{driver_error, guarded};
use super::CudaDevice;
use crate::error::{Error, Result};

/// Device memory owned by psg, freed (in stream order) when dropped. Holds raw bytes; tensors
/// give them a dtype and shape.
pub struct DeviceBuffer {
    /// `None` for an empty buffer: CUDA cannot allocate 0 bytes.
    slice: Option<CudaSlice<u8>>,
    ptr: u64,
    bytes: usize,
    ordinal: usize,
}

impl DeviceBuffer {
    /// The device address of the first byte (0 for an empty buffer).
    pub fn ptr(&self) -> u64 {
        self.ptr
    }

    /// Size in bytes.
    pub fn len_bytes(&self) -> usize {
        self.bytes
    }

    /// Whether the buffer holds no bytes.
    pub fn is_empty(&self) -> bool {
        self.bytes == 0
    }

    /// The ordinal of the device the memory is on.
    pub fn ordinal(&self) -> usize {
        self.ordinal
    }

    /// Gives up ownership: the memory is no longer freed by psg, and the returned address must be
    /// freed by whoever takes it (with `cuMemFree`/`cuMemFreeAsync`), or it leaks.
    pub fn leak(mut self) -> u64 {
        if let Some(slice) = self.slice.take() {
            let _ = slice.leak();
        }
        self.ptr
    }
}

impl fmt::Debug for DeviceBuffer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeviceBuffer")
            .field("ptr", &format_args!("{:#x}", self.ptr))
            .field("bytes", &self.bytes)
            .field("ordinal", &self.ordinal)
            .finish()
    }
}

fn too_small(what: &str, have: usize, need: usize) -> Error {
    Error::Shape(format!(
        "{what}: the device buffer has {have} bytes but the copy needs {need}"
    ))
}

impl CudaDevice {
    /// Allocates `bytes` bytes on this device, in stream order. The contents are unspecified
    /// (every bit pattern is a valid float, so reading them is safe, only meaningless).
    pub fn alloc(&self, bytes: usize) -> Result<DeviceBuffer> {
        if bytes == 0 {
            return Ok(DeviceBuffer {
                slice: None,
                ptr: 0,
                bytes: 0,
                ordinal: self.ordinal(),
            });
        }
        guarded("cuMemAlloc", || {
            // SAFETY: the memory is uninitialised, which is fine for plain bytes that are only
            // ever read as floats or copied; see the doc comment.
            let slice = unsafe { self.stream().alloc::<u8>(bytes) }
                .map_err(|e| driver_error("cuMemAlloc", e))?;
            let ptr = slice.device_ptr(self.stream()).0;
            Ok(DeviceBuffer {
                ptr,
                slice: Some(slice),
                bytes,
                ordinal: self.ordinal(),
            })
        })
    }

    /// Allocates `bytes` zeroed bytes on this device.
    pub fn alloc_zeros(&self, bytes: usize) -> Result<DeviceBuffer> {
        let buf = self.alloc(bytes)?;
        // SAFETY: `buf` is a live allocation of exactly `bytes` bytes on this device.
        unsafe { self.memset_zero_ptr(buf.ptr(), bytes)? };
        Ok(buf)
    }

    /// Copies `src` into the start of `dst`, in stream order. `src` may be dropped on return.
    pub fn htod(&self, src: &[u8], dst: &mut DeviceBuffer) -> Result<()> {
        if src.len() > dst.len_bytes() {
            return Err(too_small("host to device copy", dst.len_bytes(), src.len()));
        }
        // SAFETY: `dst` is a live allocation with room for `src` (checked above).
        unsafe { self.htod_ptr(src, dst.ptr()) }
    }

    /// Copies the start of `src` into `dst`, waiting for the stream so `dst` is complete on return.
    pub fn dtoh(&self, src: &DeviceBuffer, dst: &mut [u8]) -> Result<()> {
        if dst.len() > src.len_bytes() {
            return Err(too_small("device to host copy", src.len_bytes(), dst.len()));
        }
        // SAFETY: `src` is a live allocation of at least `dst.len()` bytes (checked above).
        unsafe { self.dtoh_ptr(src.ptr(), dst) }
    }

    /// Copies `src` to device address `dst`, in stream order. `src` may be dropped on return
    /// (the driver stages pageable memory before returning).
    ///
    /// # Safety
    ///
    /// `dst .. dst + src.len()` must be device memory of this device that nothing else reads or
    /// writes meanwhile except in this stream's order.
    pub unsafe fn htod_ptr(&self, src: &[u8], dst: u64) -> Result<()> {
        if src.is_empty() {
            return Ok(());
        }
        guarded("cuMemcpyHtoDAsync", || {
            self.bind()?;
            // SAFETY: the caller guarantees the destination range; `src` is a live slice.
            unsafe { drv::memcpy_htod_async(dst, src, self.cu_stream()) }
                .map_err(|e| driver_error("cuMemcpyHtoDAsync", e))
        })
    }

    /// Copies `dst.len()` bytes from device address `src` into `dst` and waits for the stream, so
    /// `dst` is complete on return (and every earlier kernel on the stream has finished).
    ///
    /// # Safety
    ///
    /// `src .. src + dst.len()` must be live device memory of this device.
    pub unsafe fn dtoh_ptr(&self, src: u64, dst: &mut [u8]) -> Result<()> {
        if dst.is_empty() {
            return self.synchronize();
        }
        guarded("cuMemcpyDtoHAsync", || {
            self.bind()?;
            // SAFETY: the caller guarantees the source range; `dst` is a live, exclusive slice
            // and we synchronise below before it can be observed.
            unsafe { drv::memcpy_dtoh_async(dst, src, self.cu_stream()) }
                .map_err(|e| driver_error("cuMemcpyDtoHAsync", e))
        })?;
        self.synchronize()
    }

    /// Copies `bytes` bytes from device address `src` to device address `dst`, in stream order.
    ///
    /// # Safety
    ///
    /// Both ranges must be live device memory of this device (peer memory where enabled) and not
    /// overlap.
    pub unsafe fn dtod_ptr(&self, src: u64, dst: u64, bytes: usize) -> Result<()> {
        if bytes == 0 {
            return Ok(());
        }
        guarded("cuMemcpyDtoDAsync", || {
            self.bind()?;
            // SAFETY: the caller guarantees both ranges.
            unsafe { drv::memcpy_dtod_async(dst, src, bytes, self.cu_stream()) }
                .map_err(|e| driver_error("cuMemcpyDtoDAsync", e))
        })
    }

    /// Sets `bytes` bytes at device address `dst` to zero, in stream order.
    ///
    /// # Safety
    ///
    /// `dst .. dst + bytes` must be live device memory of this device.
    pub unsafe fn memset_zero_ptr(&self, dst: u64, bytes: usize) -> Result<()> {
        if bytes == 0 {
            return Ok(());
        }
        guarded("cuMemsetD8Async", || {
            self.bind()?;
            // SAFETY: the caller guarantees the range.
            unsafe { drv::memset_d8_async(dst, 0, bytes, self.cu_stream()) }
                .map_err(|e| driver_error("cuMemsetD8Async", e))
        })
    }
}
