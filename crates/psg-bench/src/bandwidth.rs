//! The card's copy bandwidth: a device-to-device copy kernel with 16-byte loads and stores over a
//! buffer far larger than L2 (bytes read + bytes written, over the median time), and the
//! driver's own `cuMemcpyDtoDAsync` beside it. The floor uses the faster of the two.

use psg_runtime::{CudaDevice, DType, KernelArg, KernelSource, LaunchConfig};

use crate::data;
use crate::error::{BenchError, BenchResult, Context};
use crate::timing::{time_runs, RunPlan, Stats};

/// 16-byte vectors per thread: all loads are issued before the stores.
const PER_THREAD: usize = 4;
const BLOCK: u32 = 256;

/// The copy kernel: `n` 16-byte vectors from `src` to `dst`.
pub static COPY: KernelSource = KernelSource::new_static(
    "psg_bench_copy16",
    r#"
struct alignas(16) psg_v4 { unsigned int x, y, z, w; };
extern "C" __global__ void psg_bench_copy16(const psg_v4* __restrict__ src,
                                            psg_v4* __restrict__ dst, long long n) {
    const long long base = (long long)blockIdx.x * (blockDim.x * 4) + threadIdx.x;
    psg_v4 v[4];
#pragma unroll
    for (int k = 0; k < 4; ++k) {
        const long long i = base + (long long)k * blockDim.x;
        if (i < n) v[k] = src[i];
    }
#pragma unroll
    for (int k = 0; k < 4; ++k) {
        const long long i = base + (long long)k * blockDim.x;
        if (i < n) dst[i] = v[k];
    }
}
"#,
);

/// The measured copy bandwidth.
#[derive(Debug, Clone)]
pub struct Bandwidth {
    /// Bytes of the buffer copied (read once and written once per run).
    pub buffer_bytes: usize,
    /// The copy kernel's timings.
    pub kernel: Stats,
    /// The copy kernel's bandwidth, GB/s (1e9 bytes), read + written.
    pub kernel_gbps: f64,
    /// `cuMemcpyDtoDAsync`'s timings, if it ran.
    pub memcpy: Option<Stats>,
    /// Its bandwidth, GB/s.
    pub memcpy_gbps: Option<f64>,
}

impl Bandwidth {
    /// The bandwidth floors are computed with: the faster of the two copies.
    pub fn floor_gbps(&self) -> f64 {
        self.memcpy_gbps
            .map_or(self.kernel_gbps, |m| m.max(self.kernel_gbps))
    }

    /// Milliseconds to move `bytes` at [`Bandwidth::floor_gbps`].
    pub fn floor_ms(&self, bytes: u64) -> f64 {
        bytes as f64 / (self.floor_gbps() * 1e9) * 1e3
    }
}

fn gbps(bytes: usize, ms: f64) -> f64 {
    2.0 * bytes as f64 / (ms * 1e-3) / 1e9
}

/// Measures the copy bandwidth over a buffer of `bytes` (rounded down to 16 KiB).
pub fn measure(dev: &CudaDevice, bytes: usize, plan: &RunPlan) -> BenchResult<Bandwidth> {
    let bytes = (bytes / (16 << 10)) * (16 << 10);
    if bytes == 0 {
        return Err(BenchError::Usage(
            "the bandwidth buffer must be at least 16 KiB".into(),
        ));
    }
    let what = || format!("copy-bandwidth measurement over {} MiB", bytes >> 20);
    // Random source data (never zeros); the destination is written by every run.
    let src = data::random_g(dev, DType::F32, 1, bytes / 4, 0x5eed, data::Data::Normal)?;
    let dst = dev.alloc(bytes).context(what)?;
    let src_ptr = src.cuda_ptr().context(what)?;
    let n = bytes / 16;
    let blocks = n.div_ceil(BLOCK as usize * PER_THREAD);
    let cfg = LaunchConfig {
        grid: (
            u32::try_from(blocks)
                .map_err(|_| BenchError::Usage("bandwidth buffer too large".into()))?,
            1,
            1,
        ),
        block: (BLOCK, 1, 1),
        shared_bytes: 0,
    };
    let args = [
        KernelArg::Ptr(src_ptr),
        KernelArg::Ptr(dst.ptr()),
        KernelArg::I64(n as i64),
    ];
    let kernel = time_runs(dev, plan, |_| dev.launch(&COPY, cfg, &args)).context(what)?;
    verify(dev, src_ptr, dst.ptr(), bytes)?;
    // SAFETY: both are live allocations of `bytes` bytes on this device and do not overlap.
    let memcpy = time_runs(dev, plan, |_| unsafe {
        dev.dtod_ptr(src_ptr, dst.ptr(), bytes)
    });
    let memcpy = match memcpy {
        Ok(s) => Some(s),
        Err(e) => {
            eprintln!("note: cuMemcpyDtoD could not be timed ({e}); the floor uses the kernel");
            None
        }
    };
    Ok(Bandwidth {
        buffer_bytes: bytes,
        kernel_gbps: gbps(bytes, kernel.median_ms),
        kernel,
        memcpy_gbps: memcpy.map(|m| gbps(bytes, m.median_ms)),
        memcpy,
    })
}

/// Checks the copy: the first and last MiB of the destination equal the source's.
fn verify(dev: &CudaDevice, src: u64, dst: u64, bytes: usize) -> BenchResult<()> {
    let span = bytes.min(1 << 20);
    for offset in [0, bytes - span] {
        let (mut a, mut b) = (vec![0u8; span], vec![0u8; span]);
        let read = |ptr: u64, out: &mut [u8]| {
            // SAFETY: `ptr + offset .. + span` lies inside a live allocation of `bytes` bytes.
            unsafe { dev.dtoh_ptr(ptr + offset as u64, out) }
                .context(|| "reading back the copy".into())
        };
        read(src, &mut a)?;
        read(dst, &mut b)?;
        if a != b {
            return Err(BenchError::Check(format!(
                "the copy kernel's output differs from its input at byte offset {offset}"
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The benchmark's own kernels compile (needs libnvrtc only), and the copy moves 16 bytes per
    /// load and store. Skipped, saying so, where libnvrtc is missing.
    #[test]
    fn bench_kernels_compile_with_16_byte_copies() {
        if let Err(e) = psg_runtime::nvrtc_status() {
            eprintln!("skipped (NOT evidence that the kernels compile): {e}");
            return;
        }
        for k in [&COPY, &data::FILL] {
            for arch in [(8, 0), (9, 0)] {
                let cubin = psg_runtime::compile_cubin(&k.source, &k.name, arch)
                    .unwrap_or_else(|e| panic!("{}: {e}", k.name));
                assert_eq!(&cubin[..4], b"\x7fELF");
            }
        }
        let ptx = psg_runtime::compile_ptx(&COPY.source, &COPY.name, (9, 0)).unwrap();
        assert!(ptx.contains("ld.global.nc.v4.u32"), "{ptx}");
        assert!(ptx.contains("st.global.v4.u32"), "{ptx}");
    }
}
