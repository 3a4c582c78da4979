//! Getting a launchable function for a `KernelSource`: from the device's memory cache, else from
//! the disk cache, else by compiling with NVRTC; then loading it into the device's context.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use cudarc::driver::CudaFunction;
use cudarc::nvrtc::Ptx;

use super::driver::{driver_error, guarded};
use super::CudaDevice;
use crate::cache_key::{stable_hash, CacheKey};
use crate::disk_cache::{load_or_compile, DiskCache, ImageOrigin};
use crate::error::{Error, Result};
use crate::jit::{compile, target_for_device, KernelSource};
use crate::nvrtc::{nvrtc_version, supported_archs};

/// Where a kernel came from when it was prepared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KernelOrigin {
    /// Already loaded on this device (the in-memory cache).
    Memory,
    /// Read from the on-disk cache and loaded.
    Disk,
    /// Compiled by NVRTC now and loaded (and written to the disk cache when it is on).
    Compiled,
}

/// Counts of where this device's kernels came from, since it was opened or last cleared.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KernelCacheStats {
    /// Lookups answered from memory.
    pub memory_hits: u64,
    /// Kernels read from the disk cache.
    pub disk_hits: u64,
    /// Kernels compiled by NVRTC.
    pub compiles: u64,
}

/// Identity of a kernel in memory. Static text is identified by its address (it never moves and is
/// never freed), so the hot path hashes no source; owned text by a hash of its content.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum KernelId {
    Static {
        name: (usize, usize),
        source: (usize, usize),
    },
    Owned {
        name: u64,
        source: u64,
    },
}

impl KernelId {
    fn of(k: &KernelSource) -> Self {
        match (&k.name, &k.source) {
            (Cow::Borrowed(n), Cow::Borrowed(s)) => KernelId::Static {
                name: (n.as_ptr() as usize, n.len()),
                source: (s.as_ptr() as usize, s.len()),
            },
            (n, s) => KernelId::Owned {
                name: stable_hash(n.as_bytes()),
                source: stable_hash(s.as_bytes()),
            },
        }
    }
}

#[derive(Default)]
struct CacheState {
    functions: HashMap<KernelId, CudaFunction>,
    stats: KernelCacheStats,
}

/// A device's loaded kernels.
#[derive(Default)]
pub(super) struct KernelCache(Mutex<CacheState>);

impl KernelCache {
    fn lock(&self) -> MutexGuard<'_, CacheState> {
        // A panic while holding the lock can't leave the map half-updated (single inserts), so
        // a poisoned lock is still good.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl CudaDevice {
    /// Compiles (or finds) and loads `kernel` without launching it; says where it came from.
    pub fn prepare(&self, kernel: &KernelSource) -> Result<KernelOrigin> {
        self.function(kernel).map(|(_, origin)| origin)
    }

    /// Where this device's kernels came from so far.
    pub fn kernel_cache_stats(&self) -> KernelCacheStats {
        self.inner.kernels.lock().stats
    }

    /// Forgets the kernels loaded on this device (and the counts): the next use of each goes to
    /// the disk cache or NVRTC again. Tensors and clones of the device are not affected.
    pub fn clear_memory_cache(&self) {
        let mut state = self.inner.kernels.lock();
        state.functions.clear();
        state.stats = KernelCacheStats::default();
    }

    /// The loaded function for `kernel`, through the memory cache, the disk cache and NVRTC.
    pub(super) fn function(&self, kernel: &KernelSource) -> Result<(CudaFunction, KernelOrigin)> {
        let id = KernelId::of(kernel);
        {
            let mut state = self.inner.kernels.lock();
            if let Some(f) = state.functions.get(&id).cloned() {
                state.stats.memory_hits += 1;
                return Ok((f, KernelOrigin::Memory));
            }
        }
        // Compile and load outside the lock: two threads may both compile a new kernel once,
        // which is harmless, instead of every launch waiting on one compile.
        let (function, origin) = self.load(kernel)?;
        let mut state = self.inner.kernels.lock();
        match origin {
            KernelOrigin::Disk => state.stats.disk_hits += 1,
            _ => state.stats.compiles += 1,
        }
        state.functions.insert(id, function.clone());
        Ok((function, origin))
    }

    fn load(&self, kernel: &KernelSource) -> Result<(CudaFunction, KernelOrigin)> {
        let name: &str = &kernel.name;
        if name.is_empty() || name.contains('\0') {
            return Err(Error::InvalidParameter(format!(
                "kernel name {name:?} is not a C identifier; KernelSource::name must be the \
                 extern \"C\" __global__ function's name"
            )));
        }
        let target = target_for_device(self.compute_capability(), &supported_archs()?)?;
        let options = target.options();
        let arch = target.arch_name();
        let key = CacheKey {
            kernel: name,
            source: &kernel.source,
            target: &arch,
            nvrtc_version: nvrtc_version()?,
            options: &options,
        }
        .hash();
        let disk = DiskCache::from_env();
        let fresh = || compile(&kernel.source, name, target);
        let (image, origin) = load_or_compile(disk.as_ref(), name, key, fresh)?;
        match (self.load_image(name, image), origin) {
            (Ok(f), ImageOrigin::Disk) => Ok((f, KernelOrigin::Disk)),
            (Ok(f), ImageOrigin::Compiled) => Ok((f, KernelOrigin::Compiled)),
            // The entry verified but the driver refused it (say, a driver downgrade): it is not
            // trusted, so compile afresh and overwrite it.
            (Err(_), ImageOrigin::Disk) => {
                let image = fresh()?;
                if let Some(d) = &disk {
                    let _ = d.store(name, key, &image);
                }
                Ok((self.load_image(name, image)?, KernelOrigin::Compiled))
            }
            (Err(e), ImageOrigin::Compiled) => Err(e),
        }
    }

    /// Loads a CUBIN or (NUL-terminated) PTX image and looks up `name` in it.
    fn load_image(&self, name: &str, image: Vec<u8>) -> Result<CudaFunction> {
        guarded("cuModuleLoadData", || {
            let module = self
                .ctx()
                .load_module(Ptx::from_binary(image))
                .map_err(|e| driver_error("cuModuleLoadData", e))?;
            module
                .load_function(name)
                .map_err(|e| driver_error("cuModuleGetFunction", e))
        })
    }
}
