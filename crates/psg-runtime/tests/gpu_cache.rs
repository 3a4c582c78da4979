//! The kernel caches on a GPU: Compiled, then Memory, then Disk for a new device handle, and a
//! corrupt entry recompiled. Its own test binary, because it points PSG_CACHE_DIR at a temporary
//! folder for the whole process.

use psg_runtime::{cuda_device, CudaDevice, KernelOrigin, KernelSource};

#[test]
#[ignore = "needs a CUDA GPU"]
fn gpu_cache_origins_memory_then_disk() {
    let dir = std::env::temp_dir().join(format!("psg-gpu-cache-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    // SAFETY-free in edition 2021; this binary has a single test, so no thread reads it meanwhile.
    std::env::set_var("PSG_CACHE_DIR", &dir);
    std::env::remove_var("PSG_CACHE");
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
    // A source no earlier run has cached.
    let stamp = format!("{:?}", std::time::SystemTime::now());
    let source = format!(
        "// {stamp}\nextern \"C\" __global__ void gpu_cache_probe(float* y) {{ y[0] = 1.0f; }}\n"
    );
    let k = KernelSource::new_owned("gpu_cache_probe", source);
    assert_eq!(d.prepare(&k).unwrap(), KernelOrigin::Compiled);
    assert_eq!(d.prepare(&k).unwrap(), KernelOrigin::Memory);
    let fresh = CudaDevice::new(0).unwrap();
    assert_eq!(fresh.prepare(&k).unwrap(), KernelOrigin::Disk);
    d.clear_memory_cache();
    assert_eq!(d.prepare(&k).unwrap(), KernelOrigin::Disk);
    let stats = d.kernel_cache_stats();
    assert_eq!((stats.disk_hits, stats.compiles), (1, 0));

    // Corrupt every entry: the next fresh handle recompiles, never trusts it.
    for e in std::fs::read_dir(&dir).unwrap() {
        let path = e.unwrap().path();
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        std::fs::write(&path, bytes).unwrap();
    }
    let again = CudaDevice::new(0).unwrap();
    assert_eq!(again.prepare(&k).unwrap(), KernelOrigin::Compiled);
    let third = CudaDevice::new(0).unwrap();
    assert_eq!(third.prepare(&k).unwrap(), KernelOrigin::Disk);
    let _ = std::fs::remove_dir_all(&dir);
}
