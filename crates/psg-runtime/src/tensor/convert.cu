/* psg-runtime: a tensor's elements in another dtype. Widening is exact; narrowing rounds to
   nearest, ties to even, as IEEE 754 and the CPU backend do. f64 to a 16-bit type goes through
   f32 rounded to odd (truncated, then its last bit set where that lost anything): with 13 or
   more bits to spare, the one rounding to 16 bits that follows is the correctly rounded one. A
   NaN stays a NaN (its payload is not kept). One thread an element, grid-stride. */
__device__ __forceinline__ float psg_from_bf16(unsigned short h) {
    return __uint_as_float(((unsigned int)h) << 16);
}
__device__ __forceinline__ float psg_from_f16(unsigned short h) {
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h));
    return f;
}
__device__ __forceinline__ unsigned short psg_to_f16(float f) {
    unsigned short h;
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(f));
    return h;
}
__device__ __forceinline__ unsigned short psg_to_bf16(float v) {
#if __CUDA_ARCH__ >= 800
    unsigned short h;
    asm("cvt.rn.bf16.f32 %0, %1;" : "=h"(h) : "f"(v));
    return h;
#else
    /* No cvt.rn.bf16.f32 before sm_80: to nearest even on the bits, NaN kept quiet. */
    const unsigned int u = __float_as_uint(v);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (unsigned short)((u >> 16) | 0x40u);
    return (unsigned short)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
#endif
}
__device__ __forceinline__ float psg_odd_f32(double x) {
    float r;
    asm("cvt.rz.f32.f64 %0, %1;" : "=f"(r) : "d"(x));
    if ((double)r != x && x == x) r = __uint_as_float(__float_as_uint(r) | 1u);
    return r;
}
#define PSG_CONVERT(NAME, IN, OUT, EXPR)                                                        \
    extern "C" __global__ void NAME(const IN* __restrict__ in, OUT* __restrict__ out,           \
                                    long long n) {                                              \
        const long long step = (long long)gridDim.x * blockDim.x;                               \
        for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += step) { \
            const IN x = in[i];                                                                 \
            out[i] = EXPR;                                                                      \
        }                                                                                       \
    }
PSG_CONVERT(psg_convert_f32_f64, float, double, (double)x)
PSG_CONVERT(psg_convert_f32_f16, float, unsigned short, psg_to_f16(x))
PSG_CONVERT(psg_convert_f32_bf16, float, unsigned short, psg_to_bf16(x))
PSG_CONVERT(psg_convert_f64_f32, double, float, (float)x)
PSG_CONVERT(psg_convert_f64_f16, double, unsigned short, psg_to_f16(psg_odd_f32(x)))
PSG_CONVERT(psg_convert_f64_bf16, double, unsigned short, psg_to_bf16(psg_odd_f32(x)))
PSG_CONVERT(psg_convert_f16_f32, unsigned short, float, psg_from_f16(x))
PSG_CONVERT(psg_convert_f16_f64, unsigned short, double, (double)psg_from_f16(x))
PSG_CONVERT(psg_convert_f16_bf16, unsigned short, unsigned short, psg_to_bf16(psg_from_f16(x)))
PSG_CONVERT(psg_convert_bf16_f32, unsigned short, float, psg_from_bf16(x))
PSG_CONVERT(psg_convert_bf16_f64, unsigned short, double, (double)psg_from_bf16(x))
PSG_CONVERT(psg_convert_bf16_f16, unsigned short, unsigned short, psg_to_f16(psg_from_bf16(x)))
