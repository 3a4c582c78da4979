//! Timing work on a device's stream with CUDA events (for benchmarks).

use cudarc::driver::sys::CUevent_flags;

use super::driver::{driver_error, guarded};
use super::CudaDevice;
use crate::error::Result;

impl CudaDevice {
    /// Milliseconds of device time the work `f` enqueues on this device's stream takes, measured
    /// between two CUDA events recorded around it. Waits for the work to finish.
    ///
    /// Only work on this device's stream is timed; `f` should enqueue, not synchronise, or the
    /// measurement includes host time.
    pub fn time_ms(&self, mut f: impl FnMut() -> Result<()>) -> Result<f32> {
        let event = || {
            guarded("cuEventCreate", || {
                self.ctx()
                    .new_event(Some(CUevent_flags::CU_EVENT_DEFAULT))
                    .map_err(|e| driver_error("cuEventCreate", e))
            })
        };
        let (start, end) = (event()?, event()?);
        let record = |ev: &cudarc::driver::CudaEvent| {
            guarded("cuEventRecord", || {
                ev.record(self.stream())
                    .map_err(|e| driver_error("cuEventRecord", e))
            })
        };
        record(&start)?;
        f()?;
        record(&end)?;
        guarded("cuEventElapsedTime", || {
            start
                .elapsed_ms(&end)
                .map_err(|e| driver_error("cuEventElapsedTime", e))
        })
    }
}
