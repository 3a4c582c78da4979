//! Test reductions with real CUDA kernels for every dtype, and their CPU bodies: one definition
//! run on every backend (the CPU tests, NVRTC compile tests and GPU tests share it).
#![allow(dead_code)]

use psg_runtime::{
    Accumulator, Column, CpuKernels, DType, Element, KernelSource, LaunchShape, OutputKind,
    ReductionDef,
};

/// Conversions between the 16-bit storage types and float, with no toolkit header.
const PRELUDE: &str = r#"
typedef unsigned short psg_u16;
__device__ __forceinline__ float psg_f16_to_f32(psg_u16 h) {
    float f; asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h)); return f;
}
__device__ __forceinline__ psg_u16 psg_f32_to_f16(float f) {
    psg_u16 h; asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(f)); return h;
}
__device__ __forceinline__ float psg_bf16_to_f32(psg_u16 h) {
    return __uint_as_float(((unsigned int)h) << 16);
}
__device__ __forceinline__ psg_u16 psg_f32_to_bf16(float f) {
    unsigned int u = __float_as_uint(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (psg_u16)((u >> 16) | 0x40u);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (psg_u16)(u >> 16);
}
"#;

/// (storage type, accumulator type, load expression of `v`, store expression of `v`).
fn types(dtype: DType) -> (&'static str, &'static str, &'static str, &'static str) {
    match dtype {
        DType::F32 => ("float", "float", "(v)", "(v)"),
        DType::F64 => ("double", "double", "(v)", "(v)"),
        DType::F16 => ("psg_u16", "float", "psg_f16_to_f32(v)", "psg_f32_to_f16(v)"),
        DType::BF16 => (
            "psg_u16",
            "float",
            "psg_bf16_to_f32(v)",
            "psg_f32_to_bf16(v)",
        ),
    }
}

/// A kernel named `{op}_{dtype}` from a body template using T, ACC, LOAD(v), STORE(v).
fn kernel(op: &str, dtype: DType, params: &str, body: &str) -> KernelSource {
    let (t, acc, load, store) = types(dtype);
    let name = format!("{op}_{dtype}");
    let source = format!(
        "{PRELUDE}\n#define T {t}\n#define ACC {acc}\n#define LOAD(v) {load}\n#define STORE(v) {store}\n\
         extern \"C\" __global__ void {name}({params}) {{\n\
         long long p = (long long)blockIdx.x * blockDim.x + threadIdx.x;\n\
         if (p >= P) return;\n{body}\n}}\n"
    );
    KernelSource::new_owned(name, source)
}

fn kernels(op: &str, params: &str, body: &str) -> [KernelSource; 4] {
    DType::ALL.map(|d| kernel(op, d, params, body))
}

macro_rules! cpu_kernels {
    ($f:ident) => {
        CpuKernels {
            f32: $f::<f32>,
            f64: $f::<f64>,
            f16: $f::<half::f16>,
            bf16: $f::<half::bf16>,
        }
    };
}

fn column_sum<T: Element>(col: &Column<'_, T>, out: &mut [T::Acc]) {
    for b in 0..col.len() {
        out[0] += col.load(b);
    }
}

/// The column sum: one output per column.
pub fn sum_def() -> ReductionDef {
    ReductionDef {
        name: "test_sum",
        n_per_sample: 0,
        n_scalars: 0,
        scalar_names: &[],
        per_sample_names: &[],
        outputs: OutputKind::Scalars(1),
        launch: LaunchShape::ThreadPerColumn { block: 128 },
        cuda: kernels(
            "test_sum",
            "const T* g, T* out, long long B, long long P",
            "ACC s = 0; for (long long b = 0; b < B; ++b) { T v = g[b * P + p]; s += LOAD(v); }\n\
             { ACC v = s; out[p] = STORE(v); }",
        ),
        tiled: None,
        cpu: cpu_kernels!(column_sum),
    }
}

fn sum_and_weighted<T: Element>(col: &Column<'_, T>, out: &mut [T::Acc]) {
    let mut weighted = T::Acc::ZERO;
    for b in 0..col.len() {
        out[0] += col.load(b);
        weighted += col.load(b) * col.per_sample(0, b);
    }
    out[1] = col.scalar(0) * weighted;
}

/// Two outputs per column, a per-sample vector and a scalar: sum(x) and k * sum(x * w[b]).
pub fn weighted_def() -> ReductionDef {
    ReductionDef {
        name: "test_weighted",
        n_per_sample: 1,
        n_scalars: 1,
        scalar_names: &["k"],
        per_sample_names: &["w"],
        outputs: OutputKind::Scalars(2),
        launch: LaunchShape::ThreadPerColumn { block: 64 },
        cuda: kernels(
            "test_weighted",
            "const T* g, const ACC* w, T* out0, T* out1, long long B, long long P, ACC k",
            "ACC s = 0, ws = 0;\n\
             for (long long b = 0; b < B; ++b) { T v = g[b * P + p]; ACC x = LOAD(v); s += x; ws += x * w[b]; }\n\
             { ACC v = s; out0[p] = STORE(v); } { ACC v = k * ws; out1[p] = STORE(v); }",
        ),
        tiled: None,
        cpu: cpu_kernels!(sum_and_weighted),
    }
}

fn scale<T: Element>(col: &Column<'_, T>, out: &mut [T::Acc]) {
    for (b, o) in out.iter_mut().enumerate() {
        *o = col.load(b) * col.per_sample(0, b) * col.scalar(0);
    }
}

/// A per-sample output: out[b, p] = x * w[b] * k.
pub fn scale_def() -> ReductionDef {
    ReductionDef {
        name: "test_scale",
        n_per_sample: 1,
        n_scalars: 1,
        scalar_names: &["k"],
        per_sample_names: &["w"],
        outputs: OutputKind::Batch,
        launch: LaunchShape::ThreadPerColumn { block: 256 },
        cuda: kernels(
            "test_scale",
            "const T* g, const ACC* w, T* out, long long B, long long P, ACC k",
            "for (long long b = 0; b < B; ++b) { T v = g[b * P + p]; ACC x = LOAD(v) * w[b] * k; \
             { ACC v = x; out[b * P + p] = STORE(v); } }",
        ),
        tiled: None,
        cpu: cpu_kernels!(scale),
    }
}

/// Every test reduction.
pub fn all_defs() -> Vec<ReductionDef> {
    vec![sum_def(), weighted_def(), scale_def()]
}

/// Deterministic pseudo-random values in [-4, 4) (xorshift), never all zeros.
pub fn random_values(n: usize, seed: u64) -> Vec<f64> {
    let mut s = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 11) as f64 / (1u64 << 53) as f64 * 8.0 - 4.0
        })
        .collect()
}

/// `values` as elements of `T` (rounded to nearest).
pub fn to_elements<T: Element>(values: &[f64]) -> Vec<T> {
    values
        .iter()
        .map(|&v| T::from_acc(<T::Acc as Accumulator>::from_f64(v)))
        .collect()
}

/// Whether libnvrtc is usable; when it is not, panics if `PSG_REQUIRE_NVRTC=1`, else says why.
pub fn nvrtc_or_skip() -> bool {
    match psg_runtime::nvrtc_status() {
        Ok(()) => true,
        Err(e) => {
            if std::env::var("PSG_REQUIRE_NVRTC").as_deref() == Ok("1") {
                panic!("PSG_REQUIRE_NVRTC=1 but NVRTC is unusable: {e}");
            }
            eprintln!("skipped (not evidence): {e}");
            false
        }
    }
}

/// Random bits of every class: normals of many magnitudes, subnormals, zeros, infinities, NaNs.
pub fn awkward_f64(n: usize, seed: u64) -> Vec<f64> {
    use half::{bf16, f16};
    let mut s = seed;
    let mut next = move || {
        s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = s;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    (0..n)
        .map(|i| {
            let r = next();
            match i % 8 {
                // Anything (mostly huge or tiny exponents).
                0 => f64::from_bits(r),
                // Exponents around f32's, f16's and bf16's ranges, subnormals included.
                1..=4 => {
                    let e = (r >> 52) % 330;
                    let m = r & ((1 << 52) - 1);
                    f64::from_bits(((r >> 63) << 63) | ((1023 - 165 + e) << 52) | m)
                }
                // Halfway between two neighbours of f32, bf16 or f16 (either sign, subnormals
                // and the overflow threshold past the largest value included), exactly or off by
                // 2^-40 relative: ties, and near-ties that only bits below f32's decide.
                5 => {
                    let (lo, hi) = match r % 3 {
                        0 => {
                            let b = (r >> 8) as u32 & 0x7f7f_ffff;
                            (f32::from_bits(b), f32::from_bits(b + 1)).map_pair(f64::from)
                        }
                        1 => {
                            let b = (r >> 8) as u16 & 0x7f7f;
                            (bf16::from_bits(b), bf16::from_bits(b + 1)).map_pair(bf16::to_f64)
                        }
                        _ => {
                            let b = (r >> 8) as u16 % 0x7c00;
                            (f16::from_bits(b), f16::from_bits(b + 1)).map_pair(f16::to_f64)
                        }
                    };
                    // Past the largest value, the next one an unbounded exponent would give.
                    let hi = if hi.is_infinite() {
                        lo + (lo - lo.next_down_in(r % 3))
                    } else {
                        hi
                    };
                    let mid = (lo + hi) / 2.0;
                    let x = mid
                        + mid * [0.0, 2f64.powi(-40), -(2f64.powi(-40))][((r >> 40) % 3) as usize];
                    if r >> 63 == 1 {
                        -x
                    } else {
                        x
                    }
                }
                6 => f64::from(f16::from_bits(r as u16).to_f32()) * (1.0 + 2f64.powi(-12)),
                _ => [
                    0.0,
                    -0.0,
                    f64::INFINITY,
                    f64::NEG_INFINITY,
                    f64::NAN,
                    f64::MIN_POSITIVE,
                    f64::from(f32::MAX) * 1.0000001,
                    65504.0 + 16.0,
                ][(r % 8) as usize],
            }
        })
        .collect()
}

/// A pair's two values mapped alike.
trait MapPair<T> {
    fn map_pair<U>(self, f: impl Fn(T) -> U) -> (U, U);
}

impl<T> MapPair<T> for (T, T) {
    fn map_pair<U>(self, f: impl Fn(T) -> U) -> (U, U) {
        (f(self.0), f(self.1))
    }
}

/// The value below a positive `self` in f32 (`format` 0), bf16 (1) or f16 (2).
trait NextDown {
    fn next_down_in(self, format: u64) -> f64;
}

impl NextDown for f64 {
    fn next_down_in(self, format: u64) -> f64 {
        use half::{bf16, f16};
        match format {
            0 => f64::from(f32::from_bits((self as f32).to_bits() - 1)),
            1 => bf16::from_bits(bf16::from_f64(self).to_bits() - 1).to_f64(),
            _ => f16::from_bits(f16::from_f64(self).to_bits() - 1).to_f64(),
        }
    }
}
