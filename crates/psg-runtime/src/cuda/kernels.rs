//! Getting a launchable function for a `KernelSource`: from the device's memory cache, else from
//! the disk cache, else by compiling with NVRTC; then loading it into the device's context.
//!
//! In [`JitMode::Tiered`] (the default) a kernel no cache holds is compiled twice: a quick build
//! at once, which its first launches run, and the optimized build on a background thread, which
//! is written to the disk cache and replaces the quick one at the first launch after it is ready.

use std::borrow::Cow;
use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::sync::{Condvar, Mutex, MutexGuard, OnceLock};
use std::thread::JoinHandle;

use cudarc::driver::CudaFunction;
use cudarc::nvrtc::Ptx;

use super::driver::{driver_error, guarded};
use super::CudaDevice;
use crate::cache_key::{stable_hash, CacheKey};
use crate::disk_cache::{load_or_compile, note_problem, DiskCache, ImageOrigin};
use crate::error::{Error, Result};
use crate::jit::{compile, compile_quick, target_for_device, CompileTarget, JitMode, KernelSource};
use crate::nvrtc::{nvrtc_build, nvrtc_version, supported_archs};

/// Where a kernel came from when it was prepared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KernelOrigin {
    /// Already loaded on this device (the in-memory cache).
    Memory,
    /// Read from the on-disk cache and loaded.
    Disk,
    /// Compiled by NVRTC now (the optimized build) and loaded, and written to the disk cache
    /// when it is on.
    Compiled,
    /// A quick build (see [`JitMode`]) compiled by NVRTC now and loaded; never written to the
    /// disk cache. In [`JitMode::Tiered`] the optimized build is compiling in the background.
    Quick,
}

/// Counts of where this device's kernels came from, since it was opened or last cleared.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KernelCacheStats {
    /// Lookups answered from memory.
    pub memory_hits: u64,
    /// Kernels read from the disk cache.
    pub disk_hits: u64,
    /// Kernels compiled by NVRTC, optimized, before their first launch.
    pub compiles: u64,
    /// Kernels compiled by NVRTC as quick builds before their first launch.
    pub quick_compiles: u64,
    /// Optimized builds compiled in the background that replaced a quick build.
    pub upgrades: u64,
    /// Optimized builds that failed in the background (the quick build stays in use).
    pub failed_upgrades: u64,
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

/// A kernel's optimized build compiling on a background thread.
struct Upgrade {
    /// The kernel's name, to find it in the image.
    name: Cow<'static, str>,
    /// The thread: the image, or why there is none.
    thread: JoinHandle<Result<Vec<u8>>>,
}

/// A loaded kernel, and its optimized build while that compiles.
struct Loaded {
    function: CudaFunction,
    upgrade: Option<Upgrade>,
}

#[derive(Default)]
struct CacheState {
    functions: HashMap<KernelId, Loaded>,
    /// Quick builds an optimized one replaced, kept loaded (launches of them may still be in
    /// flight) until the memory cache is cleared or the device dropped.
    retired: Vec<CudaFunction>,
    /// Background builds no entry waits for any more (their kernel was loaded twice at once, or
    /// the cache cleared): joined when the device is dropped, so that they reach the disk cache.
    orphans: Vec<Upgrade>,
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

impl Drop for KernelCache {
    /// Waits for the optimized builds still compiling, so that they reach the disk cache (a
    /// process that drops its device before it exits compiles each kernel once).
    fn drop(&mut self) {
        let state = self.0.get_mut().unwrap_or_else(|p| p.into_inner());
        for loaded in state.functions.values_mut() {
            if let Some(upgrade) = loaded.upgrade.take() {
                let _ = upgrade.thread.join();
            }
        }
        for upgrade in state.orphans.drain(..) {
            let _ = upgrade.thread.join();
        }
    }
}

/// At most this many optimized builds compile in the background at once, in the whole process
/// (half the cores, 1 to 4): an NVRTC compile holds a core and a few hundred MB while it runs.
fn background_limit() -> usize {
    std::thread::available_parallelism().map_or(1, |n| (n.get() / 2).clamp(1, 4))
}

/// A counting semaphore over [`background_limit`].
struct Permits {
    free: Mutex<usize>,
    freed: Condvar,
}

struct Permit(&'static Permits);

impl Permits {
    fn acquire(&'static self) -> Permit {
        let mut free = self.free.lock().unwrap_or_else(|p| p.into_inner());
        while *free == 0 {
            free = self.freed.wait(free).unwrap_or_else(|p| p.into_inner());
        }
        *free -= 1;
        Permit(self)
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        *self.0.free.lock().unwrap_or_else(|p| p.into_inner()) += 1;
        self.0.freed.notify_one();
    }
}

fn permits() -> &'static Permits {
    static PERMITS: OnceLock<Permits> = OnceLock::new();
    PERMITS.get_or_init(|| Permits {
        free: Mutex::new(background_limit()),
        freed: Condvar::new(),
    })
}

/// Starts the optimized build of `kernel` on a background thread, which writes it to `disk`;
/// `None` when no thread could be started.
fn spawn_upgrade(
    kernel: &KernelSource,
    target: CompileTarget,
    key: u64,
    disk: Option<DiskCache>,
) -> Option<Upgrade> {
    let name = kernel.name.clone();
    let kernel = kernel.clone();
    let thread = std::thread::Builder::new()
        .name("psg-jit".to_string())
        .spawn(move || {
            let _permit = permits().acquire();
            // At exit NVRTC starts no compile (see `nvrtc::Running`): this one fails then.
            let image = compile(&kernel.source, &kernel.name, target)?;
            if let Some(d) = &disk {
                d.store_noted(&kernel.name, key, &image);
            }
            Ok(image)
        })
        .ok()?;
    Some(Upgrade { name, thread })
}

/// Records in the disk cache's problems that the driver refused `kernel`'s verified entry (the
/// driver's error name only: its advice is about images compiled just now).
fn note_refused(disk: &DiskCache, kernel: &str, key: u64, e: &Error) {
    let path = disk.entry_path(kernel, key);
    let why = match e {
        Error::Driver { message, .. } => message.split(" (").next().unwrap_or(message),
        _ => "refused",
    };
    note_problem(format!(
        "the driver refused {} ({why}); compiled again",
        path.display()
    ));
}

/// What [`CudaDevice::load`] found or built.
struct Found {
    function: CudaFunction,
    origin: KernelOrigin,
    upgrade: Option<Upgrade>,
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
    /// the disk cache or NVRTC again. Optimized builds still compiling in the background go on
    /// and reach the disk cache, not this device. Tensors and clones of the device are not
    /// affected.
    pub fn clear_memory_cache(&self) {
        // Launches of the modules about to be unloaded may still run on this handle's stream.
        let _ = self.synchronize();
        let mut state = self.inner.kernels.lock();
        let pending: Vec<Upgrade> = state
            .functions
            .values_mut()
            .filter_map(|l| l.upgrade.take())
            .collect();
        state.orphans.extend(pending);
        state.functions.clear();
        state.retired.clear();
        state.stats = KernelCacheStats::default();
    }

    /// Waits for every optimized build this device is compiling in the background and puts
    /// each in place of its quick build; returns how many replaced one. After it, every loaded
    /// kernel is its optimized build, except where that failed to compile or load
    /// ([`KernelCacheStats::failed_upgrades`]) and in [`JitMode::Quick`], which builds none.
    pub fn finish_compiles(&self) -> usize {
        let pending: Vec<(KernelId, Upgrade)> = {
            let mut state = self.inner.kernels.lock();
            state
                .functions
                .iter_mut()
                .filter_map(|(id, l)| l.upgrade.take().map(|u| (*id, u)))
                .collect()
        };
        pending
            .into_iter()
            .map(|(id, upgrade)| self.install(id, upgrade))
            .filter(|&installed| installed)
            .count()
    }

    /// The loaded function for `kernel`, through the memory cache, the disk cache and NVRTC.
    pub(super) fn function(&self, kernel: &KernelSource) -> Result<(CudaFunction, KernelOrigin)> {
        let id = KernelId::of(kernel);
        let ready = {
            let mut state = self.inner.kernels.lock();
            let wait = self.jit_mode() == JitMode::Optimized;
            match state.functions.get_mut(&id) {
                Some(l)
                    if l.upgrade
                        .as_ref()
                        .is_some_and(|u| wait || u.thread.is_finished()) =>
                {
                    l.upgrade.take()
                }
                Some(l) => {
                    let f = l.function.clone();
                    state.stats.memory_hits += 1;
                    return Ok((f, KernelOrigin::Memory));
                }
                None => None,
            }
        };
        if let Some(upgrade) = ready {
            self.install(id, upgrade);
            let mut state = self.inner.kernels.lock();
            if let Some(f) = state.functions.get(&id).map(|l| l.function.clone()) {
                state.stats.memory_hits += 1;
                return Ok((f, KernelOrigin::Memory));
            }
            // The memory cache was cleared meanwhile: load afresh.
        }
        // Compile and load outside the lock: two threads may both compile a new kernel once,
        // which is harmless, instead of every launch waiting on one compile.
        let found = self.load(kernel)?;
        let mut guard = self.inner.kernels.lock();
        let state = &mut *guard;
        match found.origin {
            KernelOrigin::Disk => state.stats.disk_hits += 1,
            KernelOrigin::Quick => state.stats.quick_compiles += 1,
            _ => state.stats.compiles += 1,
        }
        let function = found.function.clone();
        match state.functions.entry(id) {
            // Another thread loaded it meanwhile (and may be launching it): keep its entry, and
            // keep this module loaded too, for this launch.
            Entry::Occupied(_) => {
                state.retired.push(found.function);
                state.orphans.extend(found.upgrade);
            }
            Entry::Vacant(v) => {
                v.insert(Loaded {
                    function: found.function,
                    upgrade: found.upgrade,
                });
            }
        }
        Ok((function, found.origin))
    }

    /// Waits for `upgrade` (outside the lock) and puts the optimized build in place of kernel
    /// `id`'s quick build; whether it did.
    fn install(&self, id: KernelId, upgrade: Upgrade) -> bool {
        let loaded = match upgrade.thread.join() {
            Ok(Ok(image)) => self.load_image(&upgrade.name, image).ok(),
            _ => None,
        };
        let mut guard = self.inner.kernels.lock();
        let state = &mut *guard;
        let Some(function) = loaded else {
            state.stats.failed_upgrades += 1;
            return false;
        };
        match state.functions.get_mut(&id) {
            Some(l) => {
                let quick = std::mem::replace(&mut l.function, function);
                state.retired.push(quick);
                state.stats.upgrades += 1;
                true
            }
            None => false,
        }
    }

    fn load(&self, kernel: &KernelSource) -> Result<Found> {
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
        let build = nvrtc_build()?;
        let key = CacheKey {
            kernel: name,
            source: &kernel.source,
            target: &arch,
            nvrtc_version: nvrtc_version()?,
            nvrtc_build: &build,
            options: &options,
        }
        .hash();
        let disk = DiskCache::from_env();
        let mode = self.jit_mode();
        if mode != JitMode::Optimized && target.is_cubin() {
            if let Some(found) = self.load_quick(kernel, target, key, disk.as_ref(), mode) {
                return Ok(found);
            }
        }
        let fresh = || compile(&kernel.source, name, target);
        let (image, origin) = load_or_compile(disk.as_ref(), name, key, fresh)?;
        let function = match (self.load_image(name, image), origin) {
            (Ok(f), ImageOrigin::Disk) => return Ok(Found::plain(f, KernelOrigin::Disk)),
            (Ok(f), ImageOrigin::Compiled) => f,
            // The entry verified but the driver refused it (say, a driver downgrade): it is not
            // trusted, so compile afresh and overwrite it.
            (Err(e), ImageOrigin::Disk) => {
                if let Some(d) = &disk {
                    note_refused(d, name, key, &e);
                }
                let image = fresh()?;
                if let Some(d) = &disk {
                    d.store_noted(name, key, &image);
                }
                self.load_image(name, image)?
            }
            (Err(e), ImageOrigin::Compiled) => return Err(e),
        };
        Ok(Found::plain(function, KernelOrigin::Compiled))
    }

    /// The optimized build from the disk cache, else a quick build (and, in tiered mode, its
    /// optimized build started in the background); `None` sends the caller to the optimized
    /// compile: the quick compile failed (an NVRTC without the fast-compile option, or a source
    /// that does not compile, whose error the optimized compile reports) or no background thread
    /// could be started.
    fn load_quick(
        &self,
        kernel: &KernelSource,
        target: CompileTarget,
        key: u64,
        disk: Option<&DiskCache>,
        mode: JitMode,
    ) -> Option<Found> {
        let name: &str = &kernel.name;
        if let Some(d) = disk {
            if let Some(image) = d.load_noted(name, key) {
                // One the driver refuses is compiled again (the optimized build writes over it).
                match self.load_image(name, image) {
                    Ok(f) => return Some(Found::plain(f, KernelOrigin::Disk)),
                    Err(e) => note_refused(d, name, key, &e),
                }
            }
        }
        let image = compile_quick(&kernel.source, name, target).ok()?;
        let function = self.load_image(name, image).ok()?;
        let upgrade = match mode {
            JitMode::Tiered => Some(spawn_upgrade(kernel, target, key, disk.cloned())?),
            _ => None,
        };
        Some(Found {
            function,
            origin: KernelOrigin::Quick,
            upgrade,
        })
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

impl Found {
    fn plain(function: CudaFunction, origin: KernelOrigin) -> Found {
        Found {
            function,
            origin,
            upgrade: None,
        }
    }
}
