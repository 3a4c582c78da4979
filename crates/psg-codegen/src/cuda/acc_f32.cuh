typedef float psg_acc;
typedef unsigned int psg_key;
__device__ __forceinline__ psg_acc psg_nan() { return __uint_as_float(0x7fc00000u); }
__device__ __forceinline__ psg_acc psg_inf() { return __uint_as_float(0x7f800000u); }
__device__ __forceinline__ bool psg_signbit(psg_acc x) { return (__float_as_uint(x) >> 31) != 0u; }
/* Order-preserving image of the float's bits: IEEE total order becomes unsigned order. */
__device__ __forceinline__ psg_key psg_to_key(psg_acc x) {
    /* A shift and one three-input logic op: u ^ (0xffffffff for a negative u, else the sign bit). */
    const psg_key u = __float_as_uint(x);
    return u ^ ((psg_key)((int)u >> 31) | 0x80000000u);
}
__device__ __forceinline__ psg_acc psg_from_key(psg_key k) {
    return __uint_as_float((k & 0x80000000u) ? (k & 0x7fffffffu) : ~k);
}
/* psg_to_key(fabsf(x)): |x|'s sign is clear, so its key is x's bits with the top bit set (NaN
   and -0 included). One logic op where fabsf, the shift and the logic op were. */
__device__ __forceinline__ psg_key psg_abs_key(psg_acc x) { return __float_as_uint(x) | 0x80000000u; }
/* The Gaussian density's exp(-((x - mu) / sigma)^2 / 2) as 2^-(u^2), u = (x - mu) * s with
   s = sqrt(log2(e) / 2) / sigma (hoisted out of a loop over the column), on the hardware's exp2
   (ex2.approx.ftz, 2 ulp): three instructions an element where expf's range reduction made
   the density-weighted sum issue-bound. For |x - mu| <= 6 sigma the relative error stays
   within about 6e-6 (the expf form's: 4.7e-6), nearly all of it the rounding of x - mu, of the
   scale and of the square, which both forms pay. Results below 2^-126 (|x - mu| > 13.2 sigma)
   are flushed to 0. The scale is NaN unless sigma > 0, and so is the result. */
__device__ __forceinline__ psg_acc psg_gauss_scale(psg_acc sigma) {
    return sigma > 0.0f ? 0.84932180028801904272f / sigma : psg_nan();
}
__device__ __forceinline__ psg_acc psg_gauss(psg_acc u) {
    float r;
    asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(r) : "f"(-(u * u)));
    return r;
}
__device__ __forceinline__ psg_acc psg_abs(psg_acc x) { return fabsf(x); }
__device__ __forceinline__ psg_acc psg_sqrt(psg_acc x) { return sqrtf(x); }
__device__ __forceinline__ psg_acc psg_exp(psg_acc x) { return expf(x); }
__device__ __forceinline__ psg_acc psg_ln(psg_acc x) { return logf(x); }
__device__ __forceinline__ psg_acc psg_floor(psg_acc x) { return floorf(x); }
