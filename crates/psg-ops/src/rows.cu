
/* Element j (a compile-time constant after unrolling) of a 16-byte vector of psg_elem, taken
   from its bits by shifts rather than through a pointer of another type. */
__device__ __forceinline__ psg_acc psg_vector_element(const uint4 v, const int j) {
    const unsigned int w[4] = {v.x, v.y, v.z, v.w};
    if constexpr (sizeof(psg_elem) == 2) {
        const psg_elem h = (psg_elem)((w[j >> 1] >> ((j & 1) * 16)) & 0xffffu);
        return psg_load(&h, 0);
    } else if constexpr (sizeof(psg_elem) == 4) {
        return __uint_as_float(w[j]);
    } else {
        return __hiloint2double((int)w[2 * j + 1], (int)w[2 * j]);
    }
}

/* Grid (chunks, rows): block (c, y) sums the squares of chunk c of rows y, y + gridDim.y, ...
   in f64 and finds the chunk's first non-finite coordinate. `vec`: rows start 16-byte aligned
   (and the chunk length is a multiple of 16 bytes), so 16-byte vectors may be loaded.

   The sums are f64 whatever the input: a square of f32 data overflows f32 above 2^64 (a
   sample of norm 2e19 would get an infinite norm, and a clip factor of 0 instead of C / 2e19)
   and underflows to 0 below about 2^-75. Each 16-byte vector's squares are summed in the accumulator type
   and the sum added in f64; a vector whose sum lies outside [2^-100, 2^100] (zeros, tiny or
   huge values, non-finite ones) has its squares taken in f64 instead, so that no square
   overflows or underflows and a conversion to f64 a value is paid only there. */
extern "C" __global__ void ROW_SCAN(const psg_elem* __restrict__ g, long long n_b, long long n_p,
                                    long long chunk, double* __restrict__ partial,
                                    long long* __restrict__ partial_bad, int vec) {
    __shared__ double s_sum[256];
    __shared__ long long s_bad[256];
    const int tid = threadIdx.x;
    const long long c = blockIdx.x;
    const long long n_chunks = gridDim.x;
    const long long lo = c * chunk;
    const long long hi = lo + chunk < n_p ? lo + chunk : n_p;
    for (long long b = blockIdx.y; b < n_b; b += gridDim.y) {
        double acc = 0.0;
        long long bad = 0x7fffffffffffffffll;
        if (vec) {
            /* 16-byte vectors (rows and chunks start 16-byte aligned): the loads of a 16-bit
               row would otherwise cost more issue slots than the memory system needs. */
            constexpr int V = 16 / sizeof(psg_elem);
            const psg_elem* const row = g + b * n_p;
#pragma unroll 4
            for (long long q = lo + (long long)tid * V; q < hi; q += (long long)blockDim.x * V) {
                const uint4 raw = *reinterpret_cast<const uint4*>(row + q);
                if constexpr (sizeof(psg_acc) == 8) {
#pragma unroll
                    for (int j = 0; j < V; ++j) {
                        const double v = psg_vector_element(raw, j);
                        acc += v * v;
                    }
                } else {
                    psg_acc sv = (psg_acc)0;
#pragma unroll
                    for (int j = 0; j < V; ++j) {
                        const psg_acc v = psg_vector_element(raw, j);
                        sv += v * v;
                    }
                    if (sv >= 0x1p-100f && sv <= 0x1p100f) {
                        acc += (double)sv;
                    } else {
#pragma unroll
                        for (int j = 0; j < V; ++j) {
                            const double v = (double)psg_vector_element(raw, j);
                            acc += v * v;
                        }
                    }
                }
                /* A non-finite coordinate makes the sum non-finite: only then (or once the sum
                   has overflowed, for f64 data) is the vector searched. This thread's vectors
                   come in increasing order, so its first find is its smallest. */
                if (bad == 0x7fffffffffffffffll && !psg_isfinite(acc)) {
#pragma unroll
                    for (int j = V - 1; j >= 0; --j) {
                        if (!psg_isfinite(psg_vector_element(raw, j))) bad = q + j;
                    }
                }
            }
        } else {
            for (long long p = lo + tid; p < hi; p += blockDim.x) {
                const double v = (double)psg_load(g, b * n_p + p);
                acc += v * v;
                if (!psg_isfinite(v) && p < bad) bad = p;
            }
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
