typedef double psg_acc;
typedef unsigned long long psg_key;
__device__ __forceinline__ psg_acc psg_nan() { return __longlong_as_double(0x7ff8000000000000ll); }
__device__ __forceinline__ psg_acc psg_inf() { return __longlong_as_double(0x7ff0000000000000ll); }
__device__ __forceinline__ bool psg_signbit(psg_acc x) { return __double_as_longlong(x) < 0; }
/* Order-preserving image of the float's bits: IEEE total order becomes unsigned order. */
__device__ __forceinline__ psg_key psg_to_key(psg_acc x) {
    const psg_key u = (psg_key)__double_as_longlong(x);
    return u ^ ((psg_key)(__double_as_longlong(x) >> 63) | 0x8000000000000000ull);
}
__device__ __forceinline__ psg_acc psg_from_key(psg_key k) {
    return __longlong_as_double((long long)((k & 0x8000000000000000ull) ? (k & 0x7fffffffffffffffull) : ~k));
}
/* psg_to_key(fabs(x)): x's bits with the top bit set. */
__device__ __forceinline__ psg_key psg_abs_key(psg_acc x) { return (psg_key)__double_as_longlong(x) | 0x8000000000000000ull; }
/* The Gaussian density's exp(-z^2 / 2), z = (x - mu) * psg_gauss_scale(sigma). */
__device__ __forceinline__ psg_acc psg_gauss_scale(psg_acc sigma) { return sigma > 0.0 ? 1.0 / sigma : psg_nan(); }
__device__ __forceinline__ psg_acc psg_gauss(psg_acc z) { return exp(-0.5 * (z * z)); }
__device__ __forceinline__ psg_acc psg_abs(psg_acc x) { return fabs(x); }
__device__ __forceinline__ psg_acc psg_sqrt(psg_acc x) { return sqrt(x); }
__device__ __forceinline__ psg_acc psg_exp(psg_acc x) { return exp(x); }
__device__ __forceinline__ psg_acc psg_ln(psg_acc x) { return log(x); }
__device__ __forceinline__ psg_acc psg_floor(psg_acc x) { return floor(x); }
