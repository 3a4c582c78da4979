//! The kernel caches on a GPU, in each JIT mode: optimized builds Compiled, then Memory, then
//! Disk for a new device handle, and a corrupt entry recompiled; tiered compiling's quick build
//! first and its optimized build from the background, then from the disk cache; quick builds
//! never written to the disk cache; a corrupt entry counted in `disk_cache::problems()`; eight
//! threads loading one kernel at once; background builds still joined after a clear. Its own
//! test binary, because it points PSG_CACHE_DIR at a
//! temporary folder for the whole process.

use psg_runtime::{cuda_device, CudaDevice, JitMode, KernelOrigin, KernelSource};

/// A fresh handle of device 0 compiling in `mode`.
fn open(mode: JitMode) -> CudaDevice {
    let d = CudaDevice::new(0).unwrap();
    d.set_jit_mode(mode);
    d
}

/// A fresh optimized handle finds `k` in the disk cache.
fn assert_on_disk(k: &KernelSource) {
    assert_eq!(
        open(JitMode::Optimized).prepare(k).unwrap(),
        KernelOrigin::Disk
    );
}

/// A source no earlier run has cached (its name is `gpu_cache_probe`).
fn probe(tag: &str) -> KernelSource {
    let stamp = format!(
        "{tag} {:?} {}",
        std::time::SystemTime::now(),
        std::process::id()
    );
    let source = format!(
        "// {stamp}\nextern \"C\" __global__ void gpu_cache_probe(float* y) {{ y[0] = 1.0f; }}\n"
    );
    KernelSource::new_owned("gpu_cache_probe", source)
}

#[test]
#[ignore = "needs a CUDA GPU"]
fn gpu_cache_origins_in_every_jit_mode() {
    let dir = std::env::temp_dir().join(format!("psg-gpu-cache-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    // SAFETY-free in edition 2021; this binary has a single test, so no thread reads it meanwhile.
    std::env::set_var("PSG_CACHE_DIR", &dir);
    std::env::remove_var("PSG_CACHE");
    std::env::remove_var("PSG_JIT");
    let d = match cuda_device(0) {
        Ok(d) => d,
        Err(e) => {
            if std::env::var("PSG_REQUIRE_GPU").as_deref() == Ok("1") {
                panic!("PSG_REQUIRE_GPU=1 but no usable GPU: {e}");
            }
            eprintln!("skipped (not evidence): {e}");
            return;
        }
    };
    // Without PSG_JIT a handle compiles tiered.
    assert_eq!(d.jit_mode(), JitMode::Tiered);

    // Optimized: compiled, then memory, then the disk cache for a new handle or after a clear.
    d.set_jit_mode(JitMode::Optimized);
    let k = probe("optimized");
    assert_eq!(d.prepare(&k).unwrap(), KernelOrigin::Compiled);
    assert_eq!(d.prepare(&k).unwrap(), KernelOrigin::Memory);
    let fresh = open(JitMode::Optimized);
    assert_eq!(fresh.prepare(&k).unwrap(), KernelOrigin::Disk);
    d.clear_memory_cache();
    assert_eq!(d.prepare(&k).unwrap(), KernelOrigin::Disk);
    let stats = d.kernel_cache_stats();
    assert_eq!((stats.disk_hits, stats.compiles), (1, 0));
    // A tiered handle takes the optimized build from the disk cache: no quick build.
    assert_eq!(
        open(JitMode::Tiered).prepare(&k).unwrap(),
        KernelOrigin::Disk
    );

    // Corrupt every entry: the next fresh handle recompiles, never trusts it.
    for e in std::fs::read_dir(&dir).unwrap() {
        let path = e.unwrap().path();
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        std::fs::write(&path, bytes).unwrap();
    }
    let problems = psg_runtime::disk_cache::problems().count;
    let again = open(JitMode::Optimized);
    assert_eq!(again.prepare(&k).unwrap(), KernelOrigin::Compiled);
    let seen = psg_runtime::disk_cache::problems();
    assert!(seen.count > problems, "{seen:?}");
    assert!(seen.last.is_some_and(|l| l.contains("gpu_cache_probe")));
    let third = open(JitMode::Optimized);
    assert_eq!(third.prepare(&k).unwrap(), KernelOrigin::Disk);

    // Quick: a quick build, never written to the disk cache.
    let q = probe("quick");
    let quick = open(JitMode::Quick);
    assert_eq!(quick.prepare(&q).unwrap(), KernelOrigin::Quick);
    assert_eq!(quick.prepare(&q).unwrap(), KernelOrigin::Memory);
    assert_eq!(quick.finish_compiles(), 0);
    assert_eq!(
        open(JitMode::Optimized).prepare(&q).unwrap(),
        KernelOrigin::Compiled
    );

    // Tiered: the quick build at once, the optimized one from the background (which wrote it
    // to the disk cache), then from the disk cache for a new handle.
    let t = probe("tiered");
    let tiered = open(JitMode::Tiered);
    assert_eq!(tiered.prepare(&t).unwrap(), KernelOrigin::Quick);
    assert_eq!(tiered.finish_compiles(), 1);
    assert_eq!(tiered.prepare(&t).unwrap(), KernelOrigin::Memory);
    let stats = tiered.kernel_cache_stats();
    assert_eq!(
        (
            stats.quick_compiles,
            stats.compiles,
            stats.upgrades,
            stats.failed_upgrades
        ),
        (1, 0, 1, 0)
    );
    assert_eq!(
        open(JitMode::Tiered).prepare(&t).unwrap(),
        KernelOrigin::Disk
    );

    // A tiered handle switched to optimized waits for the background build at the next use.
    let w = probe("switched");
    let switched = open(JitMode::Tiered);
    assert_eq!(switched.prepare(&w).unwrap(), KernelOrigin::Quick);
    switched.set_jit_mode(JitMode::Optimized);
    assert_eq!(switched.prepare(&w).unwrap(), KernelOrigin::Memory);
    assert_eq!(switched.kernel_cache_stats().upgrades, 1);
    assert_eq!(switched.finish_compiles(), 0);

    // Dropping a tiered handle waits for its background builds: the disk cache has them.
    let z = probe("dropped");
    let dropped = open(JitMode::Tiered);
    assert_eq!(dropped.prepare(&z).unwrap(), KernelOrigin::Quick);
    drop(dropped);
    assert_on_disk(&z);

    // Eight threads loading one new kernel at once each get it loaded; one entry is kept, and
    // the background builds of the others are still joined when the handle is dropped.
    let c = probe("concurrent");
    let shared = open(JitMode::Tiered);
    std::thread::scope(|s| {
        for _ in 0..8 {
            s.spawn(|| {
                let origin = shared.prepare(&c).unwrap();
                assert!(matches!(origin, KernelOrigin::Quick | KernelOrigin::Memory));
            });
        }
    });
    assert_eq!(shared.prepare(&c).unwrap(), KernelOrigin::Memory);
    drop(shared);
    assert_on_disk(&c);

    // Clearing the memory cache keeps a pending background build for the drop to wait on.
    let cleared = probe("cleared");
    let h = open(JitMode::Tiered);
    assert_eq!(h.prepare(&cleared).unwrap(), KernelOrigin::Quick);
    h.clear_memory_cache();
    drop(h);
    assert_on_disk(&cleared);
    let _ = std::fs::remove_dir_all(&dir);
}
