//! A CUDA device: its context, the one stream psg runs on, and its in-memory kernel cache.
//!
//! psg passes raw device pointers to kernels and runs everything of one `CudaDevice` on its one
//! stream, so cudarc's per-allocation event tracking is turned off: stream order alone keeps
//! launches, copies and frees in order. Work on two `CudaDevice`s (two streams) is ordered by the
//! caller, as with any two CUDA streams.

mod driver;
mod kernels;
mod launch;
mod memory;
mod timer;

use std::fmt;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;

use cudarc::driver::{sys, CudaContext, CudaStream};

pub use driver::cuda_device_count;
pub(crate) use driver::driver_status;
use driver::{driver_error, guarded, init_error};
pub use kernels::{KernelCacheStats, KernelOrigin};
pub use launch::{KernelArg, LaunchConfig};
pub use memory::DeviceBuffer;

use crate::error::{Error, Result};
use crate::jit::JitMode;

/// One CUDA device and the stream psg runs its work on. Cheap to clone (an `Arc` inside); clones
/// share the stream and the kernel cache.
#[derive(Clone)]
pub struct CudaDevice {
    inner: Arc<Inner>,
}

struct Inner {
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    ordinal: usize,
    name: String,
    compute_capability: (u32, u32),
    /// The most dynamic shared memory one block may opt in to.
    max_shared_optin: u32,
    /// Streaming multiprocessors on the device.
    multiprocessors: u32,
    borrowed_stream: bool,
    /// The [`JitMode`], as `jit_mode_code` numbers it.
    jit_mode: AtomicU8,
    kernels: kernels::KernelCache,
}

const JIT_MODES: [JitMode; 3] = [JitMode::Tiered, JitMode::Optimized, JitMode::Quick];

fn jit_mode_code(mode: JitMode) -> u8 {
    match mode {
        JitMode::Tiered => 0,
        JitMode::Optimized => 1,
        JitMode::Quick => 2,
    }
}

impl CudaDevice {
    /// Opens device `ordinal` (its primary context, which PyTorch shares) and runs on the
    /// context's default stream. Kernels compile as `PSG_JIT` says (see [`JitMode`]; tiered when
    /// it is unset).
    ///
    /// Errors are [`Error::CudaUnavailable`] when libcuda is missing, there is no such device or
    /// the driver fails to initialise, and [`Error::InvalidParameter`] when `PSG_JIT` holds
    /// something else than a mode's name; never a panic.
    pub fn new(ordinal: usize) -> Result<Self> {
        Self::open(ordinal, None)
    }

    /// Opens device `ordinal` to run on `stream`, a stream someone else (PyTorch) owns: psg
    /// enqueues its copies and kernels there and never destroys it.
    ///
    /// # Safety
    ///
    /// `stream` must be a valid stream of device `ordinal`'s primary context (PyTorch's streams
    /// are), and its owner must keep it alive as long as this device, a clone of it, or a tensor
    /// on it exists. Ordering psg's work with the owner's work on *other* streams is the caller's
    /// job, as between any two streams.
    pub unsafe fn with_borrowed_stream(ordinal: usize, stream: sys::CUstream) -> Result<Self> {
        Self::open(ordinal, Some(stream))
    }

    fn open(ordinal: usize, borrowed: Option<sys::CUstream>) -> Result<Self> {
        let jit_mode = JitMode::from_env()?;
        guarded("CudaDevice::new", || {
            let count = cuda_device_count()?;
            if count == 0 {
                return Err(Error::CudaUnavailable {
                    reason: "no CUDA device".into(),
                });
            }
            if ordinal >= count {
                return Err(Error::CudaUnavailable {
                    reason: format!(
                        "there is no CUDA device {ordinal}: this machine has {count} (ordinals \
                         0..{count})"
                    ),
                });
            }
            let ctx = CudaContext::new(ordinal).map_err(init_error)?;
            // SAFETY: no CudaSlice exists on this context object yet, and all of psg's work on
            // it is ordered by the one stream below (see the module docs).
            unsafe { ctx.disable_event_tracking() };
            let stream = match borrowed {
                // SAFETY: the caller of `with_borrowed_stream` guarantees the stream is valid,
                // belongs to this (primary) context and outlives the device.
                Some(s) => unsafe { ctx.wrap_borrowed_stream(s) },
                None => ctx.default_stream(),
            };
            let name = ctx.name().map_err(|e| driver_error("cuDeviceGetName", e))?;
            let (major, minor) = ctx
                .compute_capability()
                .map_err(|e| driver_error("cuDeviceGetAttribute", e))?;
            let optin = ctx
                .attribute(
                    sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN,
                )
                .map_err(|e| driver_error("cuDeviceGetAttribute", e))?;
            let sms = ctx
                .attribute(sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)
                .map_err(|e| driver_error("cuDeviceGetAttribute", e))?;
            let to_u32 = |v: i32| u32::try_from(v).unwrap_or(0);
            Ok(CudaDevice {
                inner: Arc::new(Inner {
                    ctx,
                    stream,
                    ordinal,
                    name,
                    compute_capability: (to_u32(major), to_u32(minor)),
                    max_shared_optin: to_u32(optin),
                    multiprocessors: to_u32(sms).max(1),
                    borrowed_stream: borrowed.is_some(),
                    jit_mode: AtomicU8::new(jit_mode_code(jit_mode)),
                    kernels: kernels::KernelCache::default(),
                }),
            })
        })
    }

    /// The device's name, e.g. `"NVIDIA H100 80GB HBM3"`.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The most dynamic shared memory one block may use on this device (the opt-in limit).
    pub fn max_shared_per_block(&self) -> u32 {
        self.inner.max_shared_optin
    }

    /// The number of streaming multiprocessors.
    pub fn multiprocessor_count(&self) -> u32 {
        self.inner.multiprocessors
    }

    /// The compute capability (major, minor), e.g. (9, 0).
    pub fn compute_capability(&self) -> (u32, u32) {
        self.inner.compute_capability
    }

    /// How this handle (and its clones) compiles kernels that no cache holds.
    pub fn jit_mode(&self) -> JitMode {
        let code = self.inner.jit_mode.load(Ordering::Relaxed);
        JIT_MODES[usize::from(code).min(JIT_MODES.len() - 1)]
    }

    /// Sets how this handle and its clones compile kernels that no cache holds from now on.
    /// Kernels already loaded stay as they are, except that in [`JitMode::Optimized`] a quick
    /// build whose optimized build is still compiling waits for it at its next launch.
    pub fn set_jit_mode(&self, mode: JitMode) {
        self.inner
            .jit_mode
            .store(jit_mode_code(mode), Ordering::Relaxed);
    }

    /// The device ordinal.
    pub fn ordinal(&self) -> usize {
        self.inner.ordinal
    }

    /// Whether this device runs on a stream someone else owns.
    pub fn is_borrowed_stream(&self) -> bool {
        self.inner.borrowed_stream
    }

    /// The raw stream psg enqueues on (for interop: e.g. making another library wait on it).
    pub fn cu_stream(&self) -> sys::CUstream {
        self.inner.stream.cu_stream()
    }

    /// Whether `self` and `other` are the same device (same ordinal): their memory is
    /// interchangeable, whatever streams they run on.
    pub fn same_device(&self, other: &CudaDevice) -> bool {
        self.inner.ordinal == other.inner.ordinal
    }

    /// Whether `self` and `other` are clones of one handle (same stream, same kernel cache).
    pub fn same_handle(&self, other: &CudaDevice) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }

    /// Orders this handle's next launches with `tensors` that live on *other* handles of this
    /// GPU (other streams): waits now for those handles' streams (the tensors' pending writes),
    /// and the returned guard, dropped once the launches that read them are enqueued, waits for
    /// this handle's stream (so that a tensor freed afterwards on its own stream is not reused
    /// while a launch here still reads it). Where every tensor is on this handle, or on the CPU,
    /// it does nothing and the guard neither.
    pub fn order_with_others(&self, tensors: &[&crate::Tensor]) -> Result<OtherHandles> {
        let mut others = false;
        for t in tensors {
            if let crate::Device::Cuda(other) = t.device() {
                if !other.same_handle(self) {
                    other.synchronize()?;
                    others = true;
                }
            }
        }
        Ok(OtherHandles(others.then(|| self.clone())))
    }

    /// Waits until everything enqueued on this device's stream has finished.
    pub fn synchronize(&self) -> Result<()> {
        guarded("cuStreamSynchronize", || {
            self.inner
                .stream
                .synchronize()
                .map_err(|e| driver_error("cuStreamSynchronize", e))
        })
    }

    /// The cudarc context (device `ordinal`'s primary context), for interop code that needs raw
    /// cudarc calls. Its event tracking is off: order any work you add with this device's stream.
    pub fn cudarc_context(&self) -> &Arc<CudaContext> {
        &self.inner.ctx
    }

    /// The cudarc stream psg enqueues on, for interop code that needs raw cudarc calls.
    pub fn cudarc_stream(&self) -> &Arc<CudaStream> {
        &self.inner.stream
    }

    fn ctx(&self) -> &Arc<CudaContext> {
        &self.inner.ctx
    }

    fn stream(&self) -> &Arc<CudaStream> {
        &self.inner.stream
    }

    /// Makes the device's context current on this thread (raw driver calls need it).
    fn bind(&self) -> Result<()> {
        self.ctx()
            .bind_to_thread()
            .map_err(|e| driver_error("cuCtxSetCurrent", e))
    }
}

impl fmt::Debug for CudaDevice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (major, minor) = self.inner.compute_capability;
        f.debug_struct("CudaDevice")
            .field("ordinal", &self.inner.ordinal)
            .field("name", &self.inner.name)
            .field("arch", &format_args!("sm_{major}{minor}"))
            .field("borrowed_stream", &self.inner.borrowed_stream)
            .finish()
    }
}

impl fmt::Display for CudaDevice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (major, minor) = self.inner.compute_capability;
        write!(
            f,
            "CUDA device {}: {} (sm_{major}{minor})",
            self.inner.ordinal, self.inner.name
        )
    }
}

/// From [`CudaDevice::order_with_others`]: when dropped, waits for the handle's stream if
/// tensors of other handles were used (a failed wait leaves its error to the next call on the
/// handle).
#[must_use = "the launches that read the other handles' tensors must be enqueued before it drops"]
pub struct OtherHandles(Option<CudaDevice>);

impl Drop for OtherHandles {
    fn drop(&mut self) {
        if let Some(d) = self.0.take() {
            let _ = d.synchronize();
        }
    }
}
