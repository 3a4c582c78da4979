typedef float psg_acc;
typedef unsigned int psg_key;
__device__ __forceinline__ psg_acc psg_nan() { return __uint_as_float(0x7fc00000u); }
__device__ __forceinline__ psg_acc psg_inf() { return __uint_as_float(0x7f800000u); }
__device__ __forceinline__ bool psg_signbit(psg_acc x) { return (__float_as_uint(x) >> 31) != 0u; }
/* Order-preserving image of the float's bits: IEEE total order becomes unsigned order. */
__device__ __forceinline__ psg_key psg_to_key(psg_acc x) {
    const psg_key u = __float_as_uint(x);
    return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}
__device__ __forceinline__ psg_acc psg_from_key(psg_key k) {
    return __uint_as_float((k & 0x80000000u) ? (k & 0x7fffffffu) : ~k);
}
/* exp(-z^2 / 2) for the Gaussian density, as 2^(-z^2 log2(e) / 2) on the hardware's exp2
   (ex2.approx.ftz, 2 ulp), a few instructions where expf's range reduction made the
   density-weighted sum issue-bound. For |z| <= 6 the relative error stays within about 2.1e-6
   (expf's: 1.3e-6), nearly all of it from rounding the argument, which expf pays too. Results
   below 2^-126 (|z| > 13.2) are flushed to 0, which saves exp2f's subnormal fix-up. */
__device__ __forceinline__ psg_acc psg_gauss(psg_acc z) {
    float r;
    asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(r) : "f"(-0.72134752044448170f * (z * z)));
    return r;
}
__device__ __forceinline__ psg_acc psg_abs(psg_acc x) { return fabsf(x); }
__device__ __forceinline__ psg_acc psg_sqrt(psg_acc x) { return sqrtf(x); }
__device__ __forceinline__ psg_acc psg_exp(psg_acc x) { return expf(x); }
__device__ __forceinline__ psg_acc psg_ln(psg_acc x) { return logf(x); }
__device__ __forceinline__ psg_acc psg_floor(psg_acc x) { return floorf(x); }
