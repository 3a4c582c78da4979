
/* Grid (chunks, rows): block (c, y) sums the squares of chunk c of rows y, y + gridDim.y, ...
   and finds the chunk's first non-finite coordinate. */
extern "C" __global__ void ROW_SCAN(const psg_elem* __restrict__ g, long long n_b, long long n_p,
                                    long long chunk, psg_acc* __restrict__ partial,
                                    long long* __restrict__ partial_bad) {
    __shared__ psg_acc s_sum[256];
    __shared__ long long s_bad[256];
    const int tid = threadIdx.x;
    const long long c = blockIdx.x;
    const long long n_chunks = gridDim.x;
    const long long lo = c * chunk;
    const long long hi = lo + chunk < n_p ? lo + chunk : n_p;
    for (long long b = blockIdx.y; b < n_b; b += gridDim.y) {
        psg_acc acc = (psg_acc)0;
        long long bad = 0x7fffffffffffffffll;
        for (long long p = lo + tid; p < hi; p += blockDim.x) {
            const psg_acc v = psg_load(g, b * n_p + p);
            acc += v * v;
            if (!psg_isfinite(v) && p < bad) bad = p;
        }
        s_sum[tid] = acc;
        s_bad[tid] = bad;
        __syncthreads();
        for (int s = blockDim.x / 2; s > 0; s >>= 1) {
            if (tid < s) {
                s_sum[tid] += s_sum[tid + s];
                if (s_bad[tid + s] < s_bad[tid]) s_bad[tid] = s_bad[tid + s];
            }
            __syncthreads();
        }
        if (tid == 0) {
            partial[b * n_chunks + c] = s_sum[0];
            partial_bad[b * n_chunks + c] = s_bad[0];
        }
        __syncthreads();
    }
}
