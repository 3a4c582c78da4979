
/* One thread per row: the row's partial sums (f64) in chunk order, and its first non-finite
   coordinate. */
extern "C" __global__ void ROW_FINISH(const double* __restrict__ partial,
                                      const long long* __restrict__ partial_bad, long long n_b,
                                      long long n_chunks, double* __restrict__ sum_sq,
                                      long long* __restrict__ first_bad) {
    const long long b = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (b >= n_b) return;
    double s = 0.0;
    long long bad = 0x7fffffffffffffffll;
    for (long long c = 0; c < n_chunks; ++c) {
        s += partial[b * n_chunks + c];
        if (partial_bad[b * n_chunks + c] < bad) bad = partial_bad[b * n_chunks + c];
    }
    sum_sq[b] = s;
    first_bad[b] = bad;
}
