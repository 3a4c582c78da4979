/* The DSL's scalar functions; the Rust prelude implements the same definitions. */
__device__ __forceinline__ bool psg_isnan(psg_acc x) { return x != x; }
__device__ __forceinline__ bool psg_isfinite(psg_acc x) { return (x - x) == (psg_acc)0; }
/* NaN if either is NaN; -0 < +0 (IEEE total order on equal values). Selects, not branches:
   these run once per element. */
__device__ __forceinline__ psg_acc psg_min(psg_acc a, psg_acc b) {
    const psg_acc r = b < a ? b : a;
    const psg_acc z = psg_signbit(a) ? a : b;
    return (a != a || b != b) ? psg_nan() : (a == b ? z : r);
}
__device__ __forceinline__ psg_acc psg_max(psg_acc a, psg_acc b) {
    const psg_acc r = a < b ? b : a;
    const psg_acc z = psg_signbit(a) ? b : a;
    return (a != a || b != b) ? psg_nan() : (a == b ? z : r);
}
/* NaN when lo > hi (the built-ins reject that before launch). */
__device__ __forceinline__ psg_acc psg_clamp(psg_acc x, psg_acc lo, psg_acc hi) {
    if (lo > hi) return psg_nan();
    return psg_min(psg_max(x, lo), hi);
}
/* A conditional value with both arms evaluated (they have no side effects): the compiler keeps a
   select instead of branching around an arm, so the elements of an unrolled loop overlap. */
__device__ __forceinline__ psg_acc psg_select(bool c, psg_acc a, psg_acc b) { return c ? a : b; }
__device__ __forceinline__ bool psg_select(bool c, bool a, bool b) { return c ? a : b; }
/* sign(+-0) = 0, sign(NaN) = NaN. */
__device__ __forceinline__ psg_acc psg_sign(psg_acc x) {
    /* Selects, not branches: this runs once per element. x - x is +0 for +-0 and NaN for NaN. */
    return x > (psg_acc)0 ? (psg_acc)1 : (x < (psg_acc)0 ? (psg_acc)-1 : x - x);
}
/* Square-and-multiply in a fixed order, identical on the CPU. */
__device__ __forceinline__ psg_acc psg_powi(psg_acc x, int n) {
    psg_acc r = (psg_acc)1, base = x;
    unsigned int m = n < 0 ? (unsigned int)(-(long long)n) : (unsigned int)n;
    while (m != 0u) {
        if (m & 1u) r = r * base;
        m >>= 1;
        if (m != 0u) base = base * base;
    }
    return n < 0 ? (psg_acc)1 / r : r;
}
/* Gaussian kernel exp(-((x - mu) / sigma)^2 / 2) and density (the kernel over sigma sqrt(2 pi));
   NaN unless sigma > 0. Written with factors of sigma alone (the scale, NaN unless sigma > 0,
   and the normalization), which the compiler hoists out of a loop over the column (mu and sigma
   do not change along it): no branch and no select per element. */
__device__ __forceinline__ psg_acc psg_normal_kernel(psg_acc x, psg_acc mu, psg_acc sigma) {
    return psg_gauss((x - mu) * psg_gauss_scale(sigma));
}
__device__ __forceinline__ psg_acc psg_normal_pdf(psg_acc x, psg_acc mu, psg_acc sigma) {
    return psg_normal_kernel(x, mu, sigma) * ((psg_acc)1 / (sigma * (psg_acc)2.5066282746310002));
}
/* torch.lerp's formula; but at w = 0, or between equal infinities, the end value itself, where
   the formula makes NaN of an infinite end (0 * inf, inf - inf; so does torch.quantile,
   pytorch#133998). */
__device__ __forceinline__ psg_acc psg_lerp(psg_acc a, psg_acc b, psg_acc w) {
    if (!psg_isfinite(a) || !psg_isfinite(b)) {
        if (w == (psg_acc)0 || a == b) return a;
    }
    return w < (psg_acc)0.5 ? a + w * (b - a) : b - (b - a) * ((psg_acc)1 - w);
}
/* A selection index from an accumulator value: -1 for NaN or negative (out of range). */
__device__ __forceinline__ long long psg_index(psg_acc k) {
    if (!(k >= (psg_acc)0)) return -1;
    if (k >= (psg_acc)4.0e18) return 4000000000000000000ll;
    return (long long)k;
}
/* a <= b in IEEE total order (-0 < +0). */
__device__ __forceinline__ bool psg_total_le(psg_acc a, psg_acc b) { return psg_to_key(a) <= psg_to_key(b); }
/* The key a rank compares: IEEE total order, but every NaN after +inf whatever its sign bit (x86
   makes 0.0 / 0.0 with the sign set); NaNs compare equal and are split by sample index. */
__device__ __forceinline__ psg_key psg_rank_key(psg_acc x) { return psg_isnan(x) ? ~(psg_key)0 : psg_to_key(x); }
/* Minimum in IEEE total order, and its value over nothing (the greatest of that order). */
__device__ __forceinline__ psg_acc psg_total_min(psg_acc a, psg_acc b) { return psg_to_key(b) < psg_to_key(a) ? b : a; }
__device__ __forceinline__ psg_acc psg_total_none() { return psg_from_key(~(psg_key)0); }
/* Squared deviations with the mean's rounding taken back (stats::var), 0 within the rounding of
   their sum (n ulps of it); the sum of squares alone for 16-bit input, whose sums of equal
   values are exact in f32 (the built kernels for 16-bit input never call it: their plan has no
   sum of deviations). sd * (sd / n) cannot overflow where ss is finite. */
__device__ __forceinline__ psg_acc psg_corrected_squares(psg_acc ss, psg_acc sd, psg_acc n) {
    if (sizeof(psg_elem) < 4 || !(ss < psg_inf())) return ss;
    const psg_acc eps = (psg_acc)(sizeof(psg_acc) == 4 ? 1.1920928955078125e-7 : 2.220446049250313e-16);
    const psg_acc cs = ss - sd * (sd / n);
    return cs > n * eps * ss ? cs : (psg_acc)0;
}
