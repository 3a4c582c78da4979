//! Moving a tensor's elements between the CPU and CUDA devices.

use std::sync::Arc;

use super::{CpuData, Storage, Tensor};
use crate::cuda::CudaDevice;
use crate::device::Device;
use crate::element::{as_bytes_mut, check_element, Element};
use crate::error::Result;

impl Tensor {
    /// A copy of the elements as a `Vec<T>` (row-major). From a CUDA device this waits for the
    /// device's stream, so every kernel enqueued before has finished.
    ///
    /// [`Error::DType`](crate::Error::DType) if `T` is not the tensor's dtype.
    pub fn to_vec<T: Element>(&self) -> Result<Vec<T>> {
        check_element::<T>(self.dtype(), "the tensor")?;
        match self.storage() {
            Storage::Cpu(_) => {
                // An error, not an abort, where the allocator refuses the copy.
                let values = self.as_cpu_slice::<T>()?;
                let mut out = Vec::new();
                out.try_reserve_exact(values.len()).map_err(|e| {
                    super::storage::host_memory_error(values.len(), std::mem::size_of::<T>(), &e)
                })?;
                out.extend_from_slice(values);
                Ok(out)
            }
            Storage::Cuda { device, memory } => {
                let mut out = super::host_zeros(self.shape())?;
                // SAFETY: the memory holds this tensor's `len()` elements: psg allocated it so
                // (`from_device_buffer` checks the size), or `from_cuda_ptr`'s caller promised it.
                unsafe { device.dtoh_ptr(memory.ptr(), as_bytes_mut(&mut out)?)? };
                Ok(out)
            }
        }
    }

    /// The tensor on `device`: shared when it is already there, else copied.
    ///
    /// Between two handles of one CUDA device (say, psg's stream and a borrowed PyTorch stream)
    /// the memory is shared after waiting for the source handle's stream.
    pub fn to_device(&self, device: &Device) -> Result<Tensor> {
        match (self.storage(), device) {
            (Storage::Cpu(_), Device::Cpu) => Ok(self.clone()),
            (Storage::Cpu(data), Device::Cuda(d)) => self.upload(data, d),
            (Storage::Cuda { .. }, Device::Cpu) => self.download(),
            (
                Storage::Cuda {
                    device: from,
                    memory,
                },
                Device::Cuda(to),
            ) => {
                if from.same_handle(to) {
                    Ok(self.clone())
                } else if from.same_device(to) {
                    from.synchronize()?;
                    Ok(Tensor {
                        storage: Storage::Cuda {
                            device: to.clone(),
                            memory: Arc::clone(memory),
                        },
                        ..self.clone()
                    })
                } else {
                    self.download()?.to_device(device)
                }
            }
        }
    }

    fn upload(&self, data: &CpuData, device: &CudaDevice) -> Result<Tensor> {
        let bytes = data.bytes()?;
        let mut buf = device.alloc(bytes.len())?;
        device.htod(bytes, &mut buf)?;
        Tensor::from_device_buffer(buf, self.dtype(), self.shape(), device)
    }

    fn download(&self) -> Result<Tensor> {
        let Storage::Cuda { device, memory } = self.storage() else {
            return Ok(self.clone());
        };
        let mut data = CpuData::zeros(self.dtype(), self.len())?;
        // SAFETY: as in `to_vec`: the memory holds this tensor's elements, and `data` has
        // exactly their bytes.
        unsafe { device.dtoh_ptr(memory.ptr(), data.bytes_mut()?)? };
        Ok(Tensor::from_cpu_data(data, self.dtype(), self.shape()))
    }
}
