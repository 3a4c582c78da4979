//! Random per-sample gradients generated on the GPU: a hash of each element's index (never a
//! host upload). By default ([`Data::Normal`]) values are roughly normal (an Irwin-Hall sum of
//! four uniforms, unit variance, never zero) times a per-sample scale in [0.5, 1.5), so
//! per-sample norms differ and flat clipping at C = sqrt(P) clips about half of the samples.
//! The other [`Data`] kinds reshape those values the way real gradients differ from them.

use psg_runtime::{CudaDevice, DType, KernelArg, KernelSource, LaunchConfig, Tensor};

use crate::error::{BenchError, BenchResult, Context};

/// The fill kernel: `kind` 0 = f32, 1 = f64, 2 = f16, 3 = bf16 (bits as 16-bit integers).
pub static FILL: KernelSource = KernelSource::new_static(
    "psg_bench_fill",
    r#"
__device__ __forceinline__ unsigned long long psg_mix(unsigned long long z) {
    z += 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}
__device__ __forceinline__ float psg_unit(unsigned int u) {
    return (float)(u >> 8) * (1.0f / 16777216.0f);
}
extern "C" __global__ void psg_bench_fill(void* out, int kind, long long n_b, long long n_p,
                                          unsigned long long seed, int data) {
    const long long n = n_b * n_p;
    const long long stride = (long long)gridDim.x * blockDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
        const unsigned long long row = (unsigned long long)(i / n_p);
        const unsigned long long a = psg_mix(seed ^ ((unsigned long long)i << 1));
        const unsigned long long b = psg_mix(seed ^ (((unsigned long long)i << 1) | 1ull));
        const float u = psg_unit((unsigned int)a) + psg_unit((unsigned int)(a >> 32))
                      + psg_unit((unsigned int)b) + psg_unit((unsigned int)(b >> 32));
        const float scale = 0.5f + psg_unit((unsigned int)psg_mix(~seed ^ (row * 0x632BE59BD9B4E019ull)));
        float x = (u - 2.0f) * 1.7320508f * scale;
        if (data != 0) {
            const float v = psg_unit((unsigned int)psg_mix(a ^ (b << 1)));
            if (data == 1) x *= exp2f(6.6438562f * (v - 0.5f));  // heavy: scale 10^[-1, 1)
            else if (data == 2) x = v < 0.9f ? 0.0f : x;         // sparse: 90% zeros
            else x = rintf(x * 4.0f) * 0.25f;                    // ties: multiples of 1/4
        }
        if (kind == 0) {
            ((float*)out)[i] = x;
        } else if (kind == 1) {
            ((double*)out)[i] = (double)x;
        } else if (kind == 2) {
            unsigned short h;
            asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(x));
            ((unsigned short*)out)[i] = h;
        } else {
            unsigned int bits = __float_as_uint(x);
            bits += 0x7fffu + ((bits >> 16) & 1u);
            ((unsigned short*)out)[i] = (unsigned short)(bits >> 16);
        }
    }
}
"#,
);

/// What the generated values look like (`--data`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Data {
    /// Roughly normal, a per-sample scale (the default, and what BENCHMARKS.md's tables use).
    Normal,
    /// Heavy tails: each normal value times a scale log-uniform in [0.1, 10).
    Heavy,
    /// 90% exact zeros (the gradients of parameters a batch does not touch), the rest normal.
    Sparse,
    /// Normal values rounded to multiples of 1/4: a few dozen distinct values, ties everywhere.
    Ties,
}

impl Data {
    /// Every kind, in `--data`'s order.
    pub const ALL: [Data; 4] = [Data::Normal, Data::Heavy, Data::Sparse, Data::Ties];

    /// The name `--data` takes.
    pub fn name(self) -> &'static str {
        match self {
            Data::Normal => "normal",
            Data::Heavy => "heavy",
            Data::Sparse => "sparse",
            Data::Ties => "ties",
        }
    }

    fn code(self) -> i32 {
        match self {
            Data::Normal => 0,
            Data::Heavy => 1,
            Data::Sparse => 2,
            Data::Ties => 3,
        }
    }
}

fn kind(dtype: DType) -> i32 {
    match dtype {
        DType::F32 => 0,
        DType::F64 => 1,
        DType::F16 => 2,
        DType::BF16 => 3,
    }
}

/// A launch that covers `n` items with a grid-stride loop (at most 2^20 blocks of 256).
pub fn grid_stride(n: usize) -> psg_runtime::Result<LaunchConfig> {
    LaunchConfig::for_items(n.clamp(1, 256 << 20), 256)
}

/// A new tensor g[b, p] of `dtype` on `dev`, filled with the random `data` of `seed`.
pub fn random_g(
    dev: &CudaDevice,
    dtype: DType,
    b: usize,
    p: usize,
    seed: u64,
    data: Data,
) -> BenchResult<Tensor> {
    let what = || format!("generating g[{b}, {p}] {dtype} on the GPU");
    let n = b
        .checked_mul(p)
        .ok_or_else(|| BenchError::Usage(format!("g[{b}, {p}] is too large")))?;
    let bytes = n
        .checked_mul(dtype.size_in_bytes())
        .ok_or_else(|| BenchError::Usage(format!("g[{b}, {p}] is too large")))?;
    let buf = dev.alloc(bytes).context(what)?;
    let args = [
        KernelArg::Ptr(buf.ptr()),
        KernelArg::I32(kind(dtype)),
        KernelArg::I64(b as i64),
        KernelArg::I64(p as i64),
        KernelArg::I64(seed as i64),
        KernelArg::I32(data.code()),
    ];
    dev.launch(&FILL, grid_stride(n).context(what)?, &args)
        .context(what)?;
    Tensor::from_device_buffer(buf, dtype, &[b, p], dev).context(what)
}

/// Checks that a generated g holds varied finite values (its first 4096 elements): a kernel that
/// wrote nothing would leave the allocation's old contents, often zeros.
pub fn check_random(dev: &CudaDevice, g: &Tensor) -> BenchResult<()> {
    let n = g.len().min(4096);
    let es = g.dtype().size_in_bytes();
    let mut bytes = vec![0u8; n * es];
    let ptr = g
        .cuda_ptr()
        .context(|| "reading back generated data".into())?;
    // SAFETY: g is a live device tensor of at least `n` elements of `es` bytes.
    unsafe { dev.dtoh_ptr(ptr, &mut bytes) }.context(|| "reading back generated data".into())?;
    let head: Vec<f64> = bytes
        .chunks_exact(es)
        .map(|c| decode(g.dtype(), c))
        .collect();
    let finite = head.iter().all(|x| x.is_finite());
    let distinct = head.iter().any(|&x| x != head[0]);
    if n > 1 && !(finite && distinct) {
        return Err(BenchError::Check(format!(
            "the generated {} data is not varied finite values (first: {:?})",
            g.dtype(),
            &head[..head.len().min(4)]
        )));
    }
    Ok(())
}

/// One little-endian element as f64.
fn decode(dtype: DType, c: &[u8]) -> f64 {
    let u16_at = || u16::from_le_bytes([c[0], c[1]]);
    match dtype {
        DType::F32 => f64::from(f32::from_le_bytes([c[0], c[1], c[2], c[3]])),
        DType::F64 => f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]),
        DType::F16 => f64::from(psg_runtime::half::f16::from_bits(u16_at())),
        DType::BF16 => f64::from(psg_runtime::half::bf16::from_bits(u16_at())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_each_dtype() {
        assert_eq!(decode(DType::F32, &1.5f32.to_le_bytes()), 1.5);
        assert_eq!(decode(DType::F64, &(-2.25f64).to_le_bytes()), -2.25);
        let h = psg_runtime::half::f16::from_f32(0.5)
            .to_bits()
            .to_le_bytes();
        assert_eq!(decode(DType::F16, &h), 0.5);
        let b = psg_runtime::half::bf16::from_f32(-3.0)
            .to_bits()
            .to_le_bytes();
        assert_eq!(decode(DType::BF16, &b), -3.0);
    }
}
