//! The CUDA C transliteration of the CPU noise in [`super`], for NVRTC.

/// CUDA C source of psg's Gaussian-noise kernels, bit-identical to the CPU functions of
/// [`crate::normal`].
///
/// It needs no `#include` (NVRTC alone, no toolkit headers). Every floating-point product,
/// quotient and square root is an explicit round-to-nearest intrinsic (`__fmul_rn`, `__fdiv_rn`,
/// `__fsqrt_rn`, `__dmul_rn`, ...), which the compiler never contracts into an FMA or replaces by
/// an approximation, so the bits do not depend on `--fmad`; compile with `--fmad=false` anyway
/// and without `--ftz=true` / `--use_fast_math` (flushing subnormals would change results when
/// `std` is tiny).
///
/// Kernels, all with the signature `(T* out, unsigned long long n, unsigned long long seed,
/// unsigned long long step, unsigned long long offset, T std)`:
///
/// | kernel | writes | CPU twin |
/// | --- | --- | --- |
/// | `psg_gaussian_noise_f32` | `out[i] = std * z(offset + i)` | [`super::gaussian_noise`] |
/// | `psg_add_gaussian_noise_f32` | `out[i] = out[i] + std * z(offset + i)` | [`super::add_gaussian_noise`] |
/// | `psg_gaussian_noise_secure_f32` | as above, secure mode | [`super::NoiseMode::Secure`] |
/// | `psg_add_gaussian_noise_secure_f32` | as above, secure mode | |
/// | `psg_gaussian_noise_f64`, `psg_add_gaussian_noise_f64`, and their `_secure_` twins | the f64 versions | [`super::gaussian_noise_f64`], [`super::add_gaussian_noise_f64`] |
///
/// Each thread computes whole Philox blocks (4 f32 or 2 f64 elements) in a grid-stride loop, so
/// any launch shape is correct. The number of blocks is `((offset % 4) + n + 3) / 4` for f32 and
/// `((offset % 2) + n + 1) / 2` for f64; 256 threads per CUDA block and enough CUDA blocks to
/// cover them (or a few per SM) is a good launch. The host must check what the CPU functions
/// check: `std` finite and >= 0, and `offset + n <= 2^62`.
pub const NOISE_CUDA_SOURCE: &str = r#"// psg Gaussian noise: Philox4x32-10 + Box-Muller, bit-identical to psg_privacy::normal (Rust).
// Keep every expression in the same shape as the Rust code.

#define PSG_LN2_HI_F32 0.69314575f
#define PSG_LN2_LO_F32 1.4286068e-6f
#define PSG_LN_C1_F32 0.6666667f
#define PSG_LN_C2_F32 0.4f
#define PSG_LN_C3_F32 0.2857143f
#define PSG_LN_C4_F32 0.22222222f
#define PSG_SIN_S0_F32 1.5707964f
#define PSG_SIN_S1_F32 -0.6459641f
#define PSG_SIN_S2_F32 0.079692625f
#define PSG_SIN_S3_F32 -0.004681754f
#define PSG_SIN_S4_F32 0.00016044118f
#define PSG_COS_C1_F32 -1.2337005f
#define PSG_COS_C2_F32 0.2536695f
#define PSG_COS_C3_F32 -0.02086348f
#define PSG_COS_C4_F32 0.00091926026f
#define PSG_COS_C5_F32 -2.5202042e-5f
#define PSG_TWO_POW_M32_F32 2.3283064e-10f
#define PSG_TWO_POW_M30_F32 9.313226e-10f

#define PSG_LN2_HI_F64 0.6931471803691238
#define PSG_LN2_LO_F64 1.9082149292705877e-10
#define PSG_LN_C1_F64 0.6666666666666666
#define PSG_LN_C2_F64 0.4
#define PSG_LN_C3_F64 0.2857142857142857
#define PSG_LN_C4_F64 0.2222222222222222
#define PSG_LN_C5_F64 0.18181818181818182
#define PSG_LN_C6_F64 0.15384615384615385
#define PSG_LN_C7_F64 0.13333333333333333
#define PSG_LN_C8_F64 0.11764705882352941
#define PSG_LN_C9_F64 0.10526315789473684
#define PSG_LN_C10_F64 0.09523809523809523
#define PSG_LN_C11_F64 0.08695652173913043
#define PSG_SIN_S0_F64 1.5707963267948966
#define PSG_SIN_S1_F64 -0.6459640975062463
#define PSG_SIN_S2_F64 0.07969262624616705
#define PSG_SIN_S3_F64 -0.004681754135318688
#define PSG_SIN_S4_F64 0.00016044118478735983
#define PSG_SIN_S5_F64 -3.598843235212085e-6
#define PSG_SIN_S6_F64 5.692172921967927e-8
#define PSG_SIN_S7_F64 -6.688035109811468e-10
#define PSG_SIN_S8_F64 6.0669357311061955e-12
#define PSG_COS_C1_F64 -1.2337005501361697
#define PSG_COS_C2_F64 0.25366950790104803
#define PSG_COS_C3_F64 -0.02086348076335296
#define PSG_COS_C4_F64 0.0009192602748394266
#define PSG_COS_C5_F64 -2.5202042373060607e-5
#define PSG_COS_C6_F64 4.710874778818172e-7
#define PSG_COS_C7_F64 -6.386603083791852e-9
#define PSG_COS_C8_F64 6.565963114979473e-11
#define PSG_TWO_POW_M64_F64 5.421010862427522e-20
#define PSG_TWO_POW_M62_F64 2.168404344971009e-19

// ---- Philox4x32-10 (Random123) -------------------------------------------------------------

__device__ __forceinline__ void psg_philox4x32_10(unsigned int ctr[4], unsigned int key0, unsigned int key1)
{
    for (int round = 0; round < 10; ++round) {
        if (round > 0) {
            key0 += 0x9E3779B9u;
            key1 += 0xBB67AE85u;
        }
        const unsigned int hi0 = __umulhi(0xD2511F53u, ctr[0]);
        const unsigned int lo0 = 0xD2511F53u * ctr[0];
        const unsigned int hi1 = __umulhi(0xCD9E8D57u, ctr[2]);
        const unsigned int lo1 = 0xCD9E8D57u * ctr[2];
        const unsigned int next0 = hi1 ^ ctr[1] ^ key0;
        const unsigned int next2 = hi0 ^ ctr[3] ^ key1;
        ctr[0] = next0;
        ctr[1] = lo1;
        ctr[2] = next2;
        ctr[3] = lo0;
    }
}

// Counter (block, step) and key seed, each u64 split low word first.
__device__ __forceinline__ void psg_philox_block(unsigned int x[4], unsigned long long seed,
                                                 unsigned long long step, unsigned long long block)
{
    x[0] = (unsigned int)block;
    x[1] = (unsigned int)(block >> 32);
    x[2] = (unsigned int)step;
    x[3] = (unsigned int)(step >> 32);
    psg_philox4x32_10(x, (unsigned int)seed, (unsigned int)(seed >> 32));
}

// ---- f32 ------------------------------------------------------------------------------------

__device__ __forceinline__ float psg_ln_f32(float x)
{
    const unsigned int bits = __float_as_uint(x);
    int k = (int)(bits >> 23) - 127;
    unsigned int m_bits = (bits & 0x007FFFFFu) | 0x3F800000u;
    if (m_bits > 0x3FB504F3u) {
        m_bits -= 0x00800000u;
        k += 1;
    }
    const float f = __uint_as_float(m_bits) - 1.0f;
    const float s = __fdiv_rn(f, 2.0f + f);
    const float z = __fmul_rn(s, s);
    const float r = __fmul_rn(z, PSG_LN_C1_F32 + __fmul_rn(z, PSG_LN_C2_F32 + __fmul_rn(z, PSG_LN_C3_F32 + __fmul_rn(z, PSG_LN_C4_F32))));
    const float hfsq = __fmul_rn(__fmul_rn(0.5f, f), f);
    const float kf = __int2float_rn(k);
    return __fmul_rn(kf, PSG_LN2_HI_F32) - ((hfsq - (__fmul_rn(s, hfsq + r) + __fmul_rn(kf, PSG_LN2_LO_F32))) - f);
}

// sin and cos of 2 pi * turns / 2^32, reduced exactly to the nearest quarter turn.
__device__ __forceinline__ void psg_sincos_turns_f32(unsigned int turns, float* sin_out, float* cos_out)
{
    const unsigned int k = (turns + 0x20000000u) >> 30;
    const int rest = (int)(turns - (k << 30));
    const float f = __fmul_rn(__int2float_rn(rest), PSG_TWO_POW_M30_F32);
    const float f2 = __fmul_rn(f, f);
    const float s = __fmul_rn(f, PSG_SIN_S0_F32 + __fmul_rn(f2, PSG_SIN_S1_F32 + __fmul_rn(f2, PSG_SIN_S2_F32 + __fmul_rn(f2, PSG_SIN_S3_F32 + __fmul_rn(f2, PSG_SIN_S4_F32)))));
    const float c = 1.0f + __fmul_rn(f2, PSG_COS_C1_F32 + __fmul_rn(f2, PSG_COS_C2_F32 + __fmul_rn(f2, PSG_COS_C3_F32 + __fmul_rn(f2, PSG_COS_C4_F32 + __fmul_rn(f2, PSG_COS_C5_F32)))));
    if (k == 0u) {
        *sin_out = s;
        *cos_out = c;
    } else if (k == 1u) {
        *sin_out = c;
        *cos_out = -s;
    } else if (k == 2u) {
        *sin_out = -s;
        *cos_out = -c;
    } else {
        *sin_out = -c;
        *cos_out = s;
    }
}

__device__ __forceinline__ void psg_box_muller_f32(unsigned int radial, unsigned int angle, float z[2])
{
    const float u = __fmul_rn(__uint2float_rn(radial) + 0.5f, PSG_TWO_POW_M32_F32);
    const float r = __fsqrt_rn(__fmul_rn(-2.0f, psg_ln_f32(u)));
    float s, c;
    psg_sincos_turns_f32(angle, &s, &c);
    z[0] = __fmul_rn(r, c);
    z[1] = __fmul_rn(r, s);
}

// The four standard normals of f32 block `block` from draw `draw` (0 .. 3).
__device__ __forceinline__ void psg_draw_f32(unsigned long long seed, unsigned long long step,
                                             unsigned long long block, unsigned long long draw, float z[4])
{
    unsigned int x[4];
    psg_philox_block(x, seed, step, block | (draw << 62));
    psg_box_muller_f32(x[0], x[1], z);
    psg_box_muller_f32(x[2], x[3], z + 2);
}

template <bool SECURE>
__device__ __forceinline__ void psg_block_f32(unsigned long long seed, unsigned long long step,
                                              unsigned long long block, float z[4])
{
    if (!SECURE) {
        psg_draw_f32(seed, step, block, 0ull, z);
        return;
    }
    float d0[4], d1[4], d2[4], d3[4];
    psg_draw_f32(seed, step, block, 0ull, d0);
    psg_draw_f32(seed, step, block, 1ull, d1);
    psg_draw_f32(seed, step, block, 2ull, d2);
    psg_draw_f32(seed, step, block, 3ull, d3);
    for (int lane = 0; lane < 4; ++lane) {
        z[lane] = __fmul_rn(((d0[lane] + d1[lane]) + d2[lane]) + d3[lane], 0.5f);
    }
}

template <bool SECURE, bool ADD>
__device__ __forceinline__ void psg_noise_f32(float* out, unsigned long long n, unsigned long long seed,
                                              unsigned long long step, unsigned long long offset, float std)
{
    const unsigned long long first_block = offset >> 2;
    const unsigned long long blocks = ((offset & 3ull) + n + 3ull) >> 2;
    const unsigned long long stride = (unsigned long long)gridDim.x * blockDim.x;
    for (unsigned long long t = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x; t < blocks; t += stride) {
        const unsigned long long block = first_block + t;
        float z[4];
        psg_block_f32<SECURE>(seed, step, block, z);
        for (int lane = 0; lane < 4; ++lane) {
            const unsigned long long e = (block << 2) + (unsigned long long)lane;
            if (e < offset || e - offset >= n) {
                continue;
            }
            const unsigned long long i = e - offset;
            const float noise = __fmul_rn(std, z[lane]);
            out[i] = ADD ? out[i] + noise : noise;
        }
    }
}

extern "C" __global__ void psg_gaussian_noise_f32(float* out, unsigned long long n, unsigned long long seed,
                                                  unsigned long long step, unsigned long long offset, float std)
{
    psg_noise_f32<false, false>(out, n, seed, step, offset, std);
}

extern "C" __global__ void psg_add_gaussian_noise_f32(float* out, unsigned long long n, unsigned long long seed,
                                                      unsigned long long step, unsigned long long offset, float std)
{
    psg_noise_f32<false, true>(out, n, seed, step, offset, std);
}

extern "C" __global__ void psg_gaussian_noise_secure_f32(float* out, unsigned long long n, unsigned long long seed,
                                                         unsigned long long step, unsigned long long offset, float std)
{
    psg_noise_f32<true, false>(out, n, seed, step, offset, std);
}

extern "C" __global__ void psg_add_gaussian_noise_secure_f32(float* out, unsigned long long n, unsigned long long seed,
                                                             unsigned long long step, unsigned long long offset, float std)
{
    psg_noise_f32<true, true>(out, n, seed, step, offset, std);
}

// ---- f64 ------------------------------------------------------------------------------------

__device__ __forceinline__ double psg_ln_f64(double x)
{
    const unsigned long long bits = (unsigned long long)__double_as_longlong(x);
    long long k = (long long)(bits >> 52) - 1023ll;
    unsigned long long m_bits = (bits & 0x000FFFFFFFFFFFFFull) | 0x3FF0000000000000ull;
    if (m_bits > 0x3FF6A09E667F3BCDull) {
        m_bits -= 1ull << 52;
        k += 1ll;
    }
    const double f = __longlong_as_double((long long)m_bits) - 1.0;
    const double s = __ddiv_rn(f, 2.0 + f);
    const double z = __dmul_rn(s, s);
    const double r = __dmul_rn(z, PSG_LN_C1_F64 + __dmul_rn(z, PSG_LN_C2_F64 + __dmul_rn(z, PSG_LN_C3_F64
        + __dmul_rn(z, PSG_LN_C4_F64 + __dmul_rn(z, PSG_LN_C5_F64 + __dmul_rn(z, PSG_LN_C6_F64
        + __dmul_rn(z, PSG_LN_C7_F64 + __dmul_rn(z, PSG_LN_C8_F64 + __dmul_rn(z, PSG_LN_C9_F64
        + __dmul_rn(z, PSG_LN_C10_F64 + __dmul_rn(z, PSG_LN_C11_F64)))))))))));
    const double hfsq = __dmul_rn(__dmul_rn(0.5, f), f);
    const double kf = __ll2double_rn(k);
    return __dmul_rn(kf, PSG_LN2_HI_F64) - ((hfsq - (__dmul_rn(s, hfsq + r) + __dmul_rn(kf, PSG_LN2_LO_F64))) - f);
}

// sin and cos of 2 pi * turns / 2^64, reduced exactly to the nearest quarter turn.
__device__ __forceinline__ void psg_sincos_turns_f64(unsigned long long turns, double* sin_out, double* cos_out)
{
    const unsigned long long k = (turns + 0x2000000000000000ull) >> 62;
    const long long rest = (long long)(turns - (k << 62));
    const double f = __dmul_rn(__ll2double_rn(rest), PSG_TWO_POW_M62_F64);
    const double f2 = __dmul_rn(f, f);
    const double s = __dmul_rn(f, PSG_SIN_S0_F64 + __dmul_rn(f2, PSG_SIN_S1_F64 + __dmul_rn(f2, PSG_SIN_S2_F64
        + __dmul_rn(f2, PSG_SIN_S3_F64 + __dmul_rn(f2, PSG_SIN_S4_F64 + __dmul_rn(f2, PSG_SIN_S5_F64
        + __dmul_rn(f2, PSG_SIN_S6_F64 + __dmul_rn(f2, PSG_SIN_S7_F64 + __dmul_rn(f2, PSG_SIN_S8_F64)))))))));
    const double c = 1.0 + __dmul_rn(f2, PSG_COS_C1_F64 + __dmul_rn(f2, PSG_COS_C2_F64 + __dmul_rn(f2, PSG_COS_C3_F64
        + __dmul_rn(f2, PSG_COS_C4_F64 + __dmul_rn(f2, PSG_COS_C5_F64 + __dmul_rn(f2, PSG_COS_C6_F64
        + __dmul_rn(f2, PSG_COS_C7_F64 + __dmul_rn(f2, PSG_COS_C8_F64))))))));
    if (k == 0ull) {
        *sin_out = s;
        *cos_out = c;
    } else if (k == 1ull) {
        *sin_out = c;
        *cos_out = -s;
    } else if (k == 2ull) {
        *sin_out = -s;
        *cos_out = -c;
    } else {
        *sin_out = -c;
        *cos_out = s;
    }
}

__device__ __forceinline__ void psg_box_muller_f64(unsigned long long radial, unsigned long long angle, double z[2])
{
    const double u = __dmul_rn(__ull2double_rn(radial) + 0.5, PSG_TWO_POW_M64_F64);
    const double r = __dsqrt_rn(__dmul_rn(-2.0, psg_ln_f64(u)));
    double s, c;
    psg_sincos_turns_f64(angle, &s, &c);
    z[0] = __dmul_rn(r, c);
    z[1] = __dmul_rn(r, s);
}

// The two standard normals of f64 block `block` from draw `draw` (0 .. 3).
__device__ __forceinline__ void psg_draw_f64(unsigned long long seed, unsigned long long step,
                                             unsigned long long block, unsigned long long draw, double z[2])
{
    unsigned int x[4];
    psg_philox_block(x, seed, step, block | (draw << 62));
    const unsigned long long radial = (unsigned long long)x[0] | ((unsigned long long)x[1] << 32);
    const unsigned long long angle = (unsigned long long)x[2] | ((unsigned long long)x[3] << 32);
    psg_box_muller_f64(radial, angle, z);
}

template <bool SECURE>
__device__ __forceinline__ void psg_block_f64(unsigned long long seed, unsigned long long step,
                                              unsigned long long block, double z[2])
{
    if (!SECURE) {
        psg_draw_f64(seed, step, block, 0ull, z);
        return;
    }
    double d0[2], d1[2], d2[2], d3[2];
    psg_draw_f64(seed, step, block, 0ull, d0);
    psg_draw_f64(seed, step, block, 1ull, d1);
    psg_draw_f64(seed, step, block, 2ull, d2);
    psg_draw_f64(seed, step, block, 3ull, d3);
    for (int lane = 0; lane < 2; ++lane) {
        z[lane] = __dmul_rn(((d0[lane] + d1[lane]) + d2[lane]) + d3[lane], 0.5);
    }
}

template <bool SECURE, bool ADD>
__device__ __forceinline__ void psg_noise_f64(double* out, unsigned long long n, unsigned long long seed,
                                              unsigned long long step, unsigned long long offset, double std)
{
    const unsigned long long first_block = offset >> 1;
    const unsigned long long blocks = ((offset & 1ull) + n + 1ull) >> 1;
    const unsigned long long stride = (unsigned long long)gridDim.x * blockDim.x;
    for (unsigned long long t = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x; t < blocks; t += stride) {
        const unsigned long long block = first_block + t;
        double z[2];
        psg_block_f64<SECURE>(seed, step, block, z);
        for (int lane = 0; lane < 2; ++lane) {
            const unsigned long long e = (block << 1) + (unsigned long long)lane;
            if (e < offset || e - offset >= n) {
                continue;
            }
            const unsigned long long i = e - offset;
            const double noise = __dmul_rn(std, z[lane]);
            out[i] = ADD ? out[i] + noise : noise;
        }
    }
}

extern "C" __global__ void psg_gaussian_noise_f64(double* out, unsigned long long n, unsigned long long seed,
                                                  unsigned long long step, unsigned long long offset, double std)
{
    psg_noise_f64<false, false>(out, n, seed, step, offset, std);
}

extern "C" __global__ void psg_add_gaussian_noise_f64(double* out, unsigned long long n, unsigned long long seed,
                                                      unsigned long long step, unsigned long long offset, double std)
{
    psg_noise_f64<false, true>(out, n, seed, step, offset, std);
}

extern "C" __global__ void psg_gaussian_noise_secure_f64(double* out, unsigned long long n, unsigned long long seed,
                                                         unsigned long long step, unsigned long long offset, double std)
{
    psg_noise_f64<true, false>(out, n, seed, step, offset, std);
}

extern "C" __global__ void psg_add_gaussian_noise_secure_f64(double* out, unsigned long long n, unsigned long long seed,
                                                             unsigned long long step, unsigned long long offset, double std)
{
    psg_noise_f64<true, true>(out, n, seed, step, offset, std);
}
"#;
