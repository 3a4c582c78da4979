/* psg-ops: a Linear layer's per-sample weight gradients and their batch sum, in one launch.

   For sample b:  W_b[m, n] = sum_t G[b, t, m] * A[b, t, n]   (m: output feature, n: input feature)
   and the batch gradient is sum_b W_b. A is [B, T, N] and G is [B, T, M], both row-major, so a
   k-tile (BK consecutive t) of either operand is BK contiguous rows: it goes to shared memory with
   16-byte loads and no transpose.

   A block owns one 128 x 128 output tile and a contiguous range of samples (its "split"). It runs
   one software pipeline over all (sample, k-tile) steps of that range: global loads of step s + 1
   are in flight while step s is computed from shared memory (double buffering). After a sample's
   last k-tile the 8 x 8 register block of each thread is streamed out as that sample's tile and
   added to the running batch sum, kept in registers (PSG_BATCH_IN_SHARED = 0) or in shared memory
   (PSG_BATCH_IN_SHARED = 1, which frees registers for two blocks per SM).

   With several splits per tile, each block writes its partial batch sum to a workspace and the last
   block of the tile to arrive (an atomic counter) adds the partials in split order: the batch
   gradient is deterministic and still comes out of this one launch.

   The bias (bias_mode 1): the blocks of the first column of tiles also sum the G rows they stage
   (from the registers that carry them to shared memory, 8 adds per thread per k-tile), giving the
   per-sample bias gradients sum_t G[b, t, m] of their 128 output features and, like the weight,
   their batch sum (through `bias_partial` with several splits). When there is no weight (in = 0),
   bias_mode 2: every block is a bias block of 32 output features.

   Defined by the includer: PSG_BIAS (0 or 1: whether bias_mode 1 is compiled in),
   PSG_BK (8, 16 or 32; 32 puts the k-tiles in dynamic shared memory), PSG_BATCH_IN_SHARED (0 or 1), PSG_MIN_BLOCKS,
   PSG_LINEAR_NAME. All arithmetic is FP32 with explicit fmaf (the runtime compiles with
   --fmad=false). */

#define PSG_BM 128
#define PSG_BN 128
#define PSG_THREADS 256
#define PSG_LOADS (PSG_BK / 8) /* float4 loads per thread per operand per k-tile */

__device__ __forceinline__ float4 psg_zero4() { return make_float4(0.0f, 0.0f, 0.0f, 0.0f); }

/* Four consecutive elements row[col .. col + 4), zero past n_cols; `vec`: 16-byte loads allowed
   (n_cols % 4 == 0 and the row 16-byte aligned, with col % 4 == 0). */
__device__ __forceinline__ float4 psg_load4(const float* __restrict__ row, int col, int n_cols,
                                            bool vec) {
    if (vec) {
        if (col < n_cols) return *reinterpret_cast<const float4*>(row + col);
        return psg_zero4();
    }
    float4 v;
    v.x = col + 0 < n_cols ? row[col + 0] : 0.0f;
    v.y = col + 1 < n_cols ? row[col + 1] : 0.0f;
    v.z = col + 2 < n_cols ? row[col + 2] : 0.0f;
    v.w = col + 3 < n_cols ? row[col + 3] : 0.0f;
    return v;
}

/* Streams out four consecutive elements (evict-first: a per-sample tile is not read again here). */
__device__ __forceinline__ void psg_store4(float* __restrict__ row, int col, int n_cols, bool vec,
                                           float x, float y, float z, float w, bool stream) {
    if (vec) {
        if (col < n_cols) {
            if (stream) {
                __stcs(reinterpret_cast<float4*>(row + col), make_float4(x, y, z, w));
            } else {
                *reinterpret_cast<float4*>(row + col) = make_float4(x, y, z, w);
            }
        }
        return;
    }
    if (col + 0 < n_cols) row[col + 0] = x;
    if (col + 1 < n_cols) row[col + 1] = y;
    if (col + 2 < n_cols) row[col + 2] = z;
    if (col + 3 < n_cols) row[col + 3] = w;
}

/* psg_load4 through L2 only (data another block wrote during this launch). */
__device__ __forceinline__ float4 psg_load4_l2(const float* row, int col, int n_cols, bool vec) {
    if (vec) {
        if (col < n_cols) return __ldcg(reinterpret_cast<const float4*>(row + col));
        return psg_zero4();
    }
    float4 v;
    v.x = col + 0 < n_cols ? __ldcg(row + col + 0) : 0.0f;
    v.y = col + 1 < n_cols ? __ldcg(row + col + 1) : 0.0f;
    v.z = col + 2 < n_cols ? __ldcg(row + col + 2) : 0.0f;
    v.w = col + 3 < n_cols ? __ldcg(row + col + 3) : 0.0f;
    return v;
}

/* Local row of a thread's register row i: two groups of four rows, 64 apart (so the 16-byte
   shared-memory reads of a warp hit few distinct addresses). Columns follow the same pattern. */
__device__ __forceinline__ int psg_local(int i, int t) { return (i < 4 ? 0 : 64) + t * 4 + (i & 3); }

/* Writes a thread's 8 x 8 block `v` of the tile at (m0, n0) of the row-major [n_m, n_n] `dst`. */
__device__ __forceinline__ void psg_store_tile(float* __restrict__ dst, const float (&v)[8][8],
                                               int m0, int n0, int ty, int tx, int n_m, int n_n,
                                               bool vec, bool stream) {
#pragma unroll
    for (int i = 0; i < 8; ++i) {
        const int m = m0 + psg_local(i, ty);
        if (m < n_m) {
            float* row = dst + (long long)m * n_n;
#pragma unroll
            for (int h = 0; h < 2; ++h) {
                psg_store4(row, n0 + h * 64 + tx * 4, n_n, vec, v[i][4 * h + 0], v[i][4 * h + 1],
                           v[i][4 * h + 2], v[i][4 * h + 3], stream);
            }
        }
    }
}

/* psg_store_tile for a tile wholly inside the matrix, with 16-byte aligned rows: no checks, one
   base pointer (this runs once per sample, so its index arithmetic is worth keeping small). */
__device__ __forceinline__ void psg_store_full(float* __restrict__ dst, const float (&v)[8][8],
                                               int m0, int n0, int ty, int tx, int n_n,
                                               bool stream) {
    float* const base = dst + (long long)(m0 + ty * 4) * n_n + (n0 + tx * 4);
#pragma unroll
    for (int i = 0; i < 8; ++i) {
        float* const row = base + (long long)((i < 4 ? 0 : 64) + (i & 3)) * n_n;
#pragma unroll
        for (int h = 0; h < 2; ++h) {
            const float4 x = make_float4(v[i][4 * h + 0], v[i][4 * h + 1], v[i][4 * h + 2],
                                         v[i][4 * h + 3]);
            float4* const cell = reinterpret_cast<float4*>(row + h * 64);
            if (stream) {
                __stcs(cell, x);
            } else {
                *cell = x;
            }
        }
    }
}

/* The bias part: block `j` owns output features [32 j, 32 j + 32); its 8 warps split t. */
__device__ void psg_linear_bias(const float* __restrict__ g, float* __restrict__ bias_ps,
                                float* __restrict__ bias_batch, long long n_b, int n_t, int n_m,
                                int j) {
    __shared__ float lanes[8][32];
    const int col = threadIdx.x & 31;
    const int lane = threadIdx.x >> 5;
    const int m = j * 32 + col;
    float total = 0.0f;
    for (long long b = 0; b < n_b; ++b) {
        float s = 0.0f;
        if (m < n_m) {
            const float* gb = g + b * n_t * (long long)n_m + m;
            for (int t = lane; t < n_t; t += 8) s += gb[(long long)t * n_m];
        }
        lanes[lane][col] = s;
        __syncthreads();
        if (lane == 0 && m < n_m) {
            float v = lanes[0][col];
#pragma unroll
            for (int q = 1; q < 8; ++q) v += lanes[q][col];
            bias_ps[b * n_m + m] = v;
            total += v;
        }
        __syncthreads();
    }
    if (lane == 0 && m < n_m) bias_batch[m] = total;
}

extern "C" __global__ void __launch_bounds__(PSG_THREADS, PSG_MIN_BLOCKS) PSG_LINEAR_NAME(
    const float* __restrict__ a, const float* __restrict__ g, float* __restrict__ per_sample,
    float* __restrict__ batch, float* __restrict__ partial, unsigned int* __restrict__ arrivals,
    float* __restrict__ bias_ps, float* __restrict__ bias_batch, float* __restrict__ bias_partial,
    long long n_b, int n_t, int n_m, int n_n, int splits, int vec_ok, int bias_mode) {
    /* Dynamic shared memory: the k-tiles when they pass the 48 KiB of static shared memory
       (PSG_BK = 32), then the batch sum when it lives there. */
    extern __shared__ __align__(16) float psg_dyn[];
#if PSG_BK > 16
    float (*const sg)[PSG_BK][PSG_BM] = reinterpret_cast<float (*)[PSG_BK][PSG_BM]>(psg_dyn);
    float (*const sa)[PSG_BK][PSG_BN] =
        reinterpret_cast<float (*)[PSG_BK][PSG_BN]>(psg_dyn + 2 * PSG_BK * PSG_BM);
#if PSG_BATCH_IN_SHARED
    float* const sbatch = psg_dyn + 2 * PSG_BK * (PSG_BM + PSG_BN); /* [PSG_BM][PSG_BN] */
#endif
#else
    __shared__ __align__(16) float sg[2][PSG_BK][PSG_BM];
    __shared__ __align__(16) float sa[2][PSG_BK][PSG_BN];
#if PSG_BATCH_IN_SHARED
    float* const sbatch = psg_dyn; /* [PSG_BM][PSG_BN] */
#endif
#endif
    __shared__ int s_last;
#if PSG_BIAS
    /* The bias blocks' per-warp column sums of a finished sample, by sample parity. */
    __shared__ __align__(16) float4 sbias[2][8][32];
#endif

    if (bias_mode == 2) {
        psg_linear_bias(g, bias_ps, bias_batch, n_b, n_t, n_m, (int)blockIdx.x);
        return;
    }
    const int tiles_n = (n_n + PSG_BN - 1) / PSG_BN;
    const int tile = (int)blockIdx.x / splits;
    const int split = (int)blockIdx.x % splits;
    const int m0 = (tile / tiles_n) * PSG_BM;
    const int n0 = (tile % tiles_n) * PSG_BN;
    const int tid = threadIdx.x;
    const int tx = tid & 15;
    const int ty = tid >> 4;
    const bool vec = vec_ok != 0;
    const bool full = vec && m0 + PSG_BM <= n_m && n0 + PSG_BN <= n_n;
    /* Compiled out where PSG_BIAS is 0: the bias costs the weight-only kernel no registers. */
    const bool with_bias = PSG_BIAS && bias_mode == 1 && n0 == 0;

    const long long b_lo = n_b * split / splits;
    const long long b_hi = n_b * (split + 1) / splits;
    const int k_tiles = (n_t + PSG_BK - 1) / PSG_BK;
    const long long steps = (b_hi - b_lo) * k_tiles;

    /* This thread's loads: rows lrow + 8 i of a k-tile, columns lcol .. lcol + 3 of the tile. */
    const int lrow = tid >> 5;
    const int lcol = (tid & 31) * 4;

    float acc[8][8];
    float tot[8][8];
#pragma unroll
    for (int i = 0; i < 8; ++i) {
#pragma unroll
        for (int j = 0; j < 8; ++j) {
            acc[i][j] = 0.0f;
            tot[i][j] = 0.0f;
        }
    }
#if PSG_BATCH_IN_SHARED
    for (int e = tid; e < PSG_BM * PSG_BN; e += PSG_THREADS) sbatch[e] = 0.0f;
#endif

    float4 pg[PSG_LOADS];
    float4 pa[PSG_LOADS];
    /* Loads k-tile `kt` of sample `b` into registers. */
#define PSG_FETCH(b, kt)                                                                         \
    {                                                                                            \
        _Pragma("unroll") for (int l = 0; l < PSG_LOADS; ++l) {                                  \
            const int t = (kt) * PSG_BK + lrow + 8 * l;                                          \
            if (t < n_t) {                                                                       \
                const long long r = (long long)(b) * n_t + t;                                    \
                pg[l] = psg_load4(g + r * n_m, m0 + lcol, n_m, vec);                             \
                pa[l] = psg_load4(a + r * n_n, n0 + lcol, n_n, vec);                             \
            } else {                                                                             \
                pg[l] = psg_zero4();                                                             \
                pa[l] = psg_zero4();                                                             \
            }                                                                                    \
        }                                                                                        \
    }
    /* When every k-tile lies within one sample (n_t % PSG_BK == 0) and rows are 16-byte aligned,
       the block's steps walk consecutive rows of A and G: one pointer per operand, stepping by
       PSG_BK rows, replaces the per-step index arithmetic (a few percent of the issue slots).
       A thread whose columns lie past the edge of the matrix reads the last four columns instead:
       they only reach accumulators of outputs past the edge, which are never stored. */
    const bool walk = vec && n_t % PSG_BK == 0;
    const long long row0 = b_lo * n_t + lrow;
    const float* gp = g + row0 * n_m + min(m0 + lcol, n_m - 4);
    const float* ap = a + row0 * n_n + min(n0 + lcol, n_n - 4);
    const long long g_rows8 = 8LL * n_m;
    const long long a_rows8 = 8LL * n_n;
#define PSG_FETCH_NEXT(b, kt)                                                                    \
    {                                                                                            \
        if (walk) {                                                                              \
            _Pragma("unroll") for (int l = 0; l < PSG_LOADS; ++l) {                              \
                pg[l] = *reinterpret_cast<const float4*>(gp + l * g_rows8);                      \
                pa[l] = *reinterpret_cast<const float4*>(ap + l * a_rows8);                      \
            }                                                                                    \
            gp += PSG_LOADS * g_rows8;                                                           \
            ap += PSG_LOADS * a_rows8;                                                           \
        } else {                                                                                 \
            PSG_FETCH(b, kt);                                                                    \
        }                                                                                        \
    }
#define PSG_STASH(buf)                                                                           \
    {                                                                                            \
        _Pragma("unroll") for (int l = 0; l < PSG_LOADS; ++l) {                                  \
            *reinterpret_cast<float4*>(&sg[buf][lrow + 8 * l][lcol]) = pg[l];                    \
            *reinterpret_cast<float4*>(&sa[buf][lrow + 8 * l][lcol]) = pa[l];                    \
        }                                                                                        \
    }
    /* A bias block adds the G rows it just staged (k-tile kt of sample b) to its column sums; at
       the sample's last k-tile it leaves them to be combined after the step's barrier. */
    float4 bsum = psg_zero4();
    long long bias_ready = -1;
    float btot = 0.0f;
#if PSG_BIAS
#define PSG_BIAS_ADD(b, kt)                                                                      \
    if (with_bias) {                                                                             \
        _Pragma("unroll") for (int l = 0; l < PSG_LOADS; ++l) {                                  \
            bsum.x += pg[l].x;                                                                   \
            bsum.y += pg[l].y;                                                                   \
            bsum.z += pg[l].z;                                                                   \
            bsum.w += pg[l].w;                                                                   \
        }                                                                                        \
        if ((kt) == k_tiles - 1) {                                                               \
            sbias[(b) & 1][lrow][tid & 31] = bsum;                                               \
            bsum = psg_zero4();                                                                  \
            bias_ready = (b);                                                                    \
        }                                                                                        \
    }
#else
#define PSG_BIAS_ADD(b, kt)
#endif

    if (steps > 0) {
        PSG_FETCH_NEXT(b_lo, 0);
        PSG_STASH(0);
        PSG_BIAS_ADD(b_lo, 0);
    }
    __syncthreads();

    long long b = b_lo;
    int kt = 0;
    for (long long s = 0; s < steps; ++s) {
        const int cur = (int)(s & 1);
#if PSG_BIAS
        if (bias_ready >= 0) {
            /* The sample staged last step is complete: its bias gradient is the 8 warps' sums
               (rows t = w mod 8), added in warp order. */
            if (tid < PSG_BM) {
                const float* col = reinterpret_cast<const float*>(&sbias[bias_ready & 1][0][0]) + tid;
                float v = col[0];
#pragma unroll
                for (int q = 1; q < 8; ++q) v += col[q * PSG_BM];
                if (m0 + tid < n_m) bias_ps[bias_ready * n_m + m0 + tid] = v;
                btot += v;
            }
            bias_ready = -1;
        }
#endif
        int next_kt = kt + 1;
        long long next_b = b;
        if (next_kt == k_tiles) {
            next_kt = 0;
            next_b = b + 1;
        }
        const bool more = s + 1 < steps;
        if (more) PSG_FETCH_NEXT(next_b, next_kt);

#pragma unroll
        for (int k = 0; k < PSG_BK; ++k) {
            const float4 g0 = *reinterpret_cast<const float4*>(&sg[cur][k][ty * 4]);
            const float4 g1 = *reinterpret_cast<const float4*>(&sg[cur][k][64 + ty * 4]);
            const float4 a0 = *reinterpret_cast<const float4*>(&sa[cur][k][tx * 4]);
            const float4 a1 = *reinterpret_cast<const float4*>(&sa[cur][k][64 + tx * 4]);
            const float gm[8] = {g0.x, g0.y, g0.z, g0.w, g1.x, g1.y, g1.z, g1.w};
            const float an[8] = {a0.x, a0.y, a0.z, a0.w, a1.x, a1.y, a1.z, a1.w};
#pragma unroll
            for (int i = 0; i < 8; ++i) {
#pragma unroll
                for (int j = 0; j < 8; ++j) acc[i][j] = fmaf(gm[i], an[j], acc[i][j]);
            }
        }

        if (kt == k_tiles - 1) {
            /* Sample b is complete: stream its tile out and fold it into the batch sum. */
            float* const dst = per_sample + b * (long long)n_m * n_n;
            if (full) {
                psg_store_full(dst, acc, m0, n0, ty, tx, n_n, true);
            } else {
                psg_store_tile(dst, acc, m0, n0, ty, tx, n_m, n_n, vec, true);
            }
#pragma unroll
            for (int i = 0; i < 8; ++i) {
#if PSG_BATCH_IN_SHARED
#pragma unroll
                for (int h = 0; h < 2; ++h) {
                    float4* cell = reinterpret_cast<float4*>(
                        &sbatch[psg_local(i, ty) * PSG_BN + h * 64 + tx * 4]);
                    float4 v = *cell;
                    v.x += acc[i][4 * h + 0];
                    v.y += acc[i][4 * h + 1];
                    v.z += acc[i][4 * h + 2];
                    v.w += acc[i][4 * h + 3];
                    *cell = v;
                }
#pragma unroll
                for (int j = 0; j < 8; ++j) acc[i][j] = 0.0f;
#else
#pragma unroll
                for (int j = 0; j < 8; ++j) {
                    tot[i][j] += acc[i][j];
                    acc[i][j] = 0.0f;
                }
#endif
            }
        }

        if (more) {
            PSG_STASH(cur ^ 1);
            PSG_BIAS_ADD(next_b, next_kt);
        }
        __syncthreads();
        kt = next_kt;
        b = next_b;
    }
#undef PSG_FETCH
#undef PSG_FETCH_NEXT
#undef PSG_STASH
#undef PSG_BIAS_ADD

#if PSG_BATCH_IN_SHARED
    /* Each thread reads back the cells it owns (no other thread touches them). */
#pragma unroll
    for (int i = 0; i < 8; ++i) {
#pragma unroll
        for (int j = 0; j < 8; ++j) tot[i][j] = sbatch[psg_local(i, ty) * PSG_BN + psg_local(j, tx)];
    }
#endif

    /* The batch gradient: this block's sum, or (several splits) every split's partial sum, added
       in split order by the tile's last block to finish. */
    if (splits == 1) {
        psg_store_tile(batch, tot, m0, n0, ty, tx, n_m, n_n, vec, false);
        if (with_bias && tid < PSG_BM && m0 + tid < n_m) bias_batch[m0 + tid] = btot;
        return;
    }
    const long long plane = (long long)n_m * n_n;
    psg_store_tile(partial + split * plane, tot, m0, n0, ty, tx, n_m, n_n, vec, false);
    if (with_bias && tid < PSG_BM && m0 + tid < n_m) bias_partial[split * (long long)n_m + m0 + tid] = btot;
    __threadfence();
    __syncthreads();
    if (tid == 0) {
        const unsigned int before = atomicAdd(&arrivals[tile], 1u);
        s_last = before == (unsigned int)(splits - 1);
    }
    __syncthreads();
    if (!s_last) return;
    __threadfence();
#pragma unroll
    for (int i = 0; i < 8; ++i) {
#pragma unroll
        for (int j = 0; j < 8; ++j) tot[i][j] = 0.0f;
    }
#pragma unroll 1
    for (int q = 0; q < splits; ++q) {
#pragma unroll
        for (int i = 0; i < 8; ++i) {
            const int m = m0 + psg_local(i, ty);
            if (m < n_m) {
                const float* row = partial + q * plane + (long long)m * n_n;
#pragma unroll
                for (int h = 0; h < 2; ++h) {
                    const float4 v = psg_load4_l2(row, n0 + h * 64 + tx * 4, n_n, vec);
                    tot[i][4 * h + 0] += v.x;
                    tot[i][4 * h + 1] += v.y;
                    tot[i][4 * h + 2] += v.z;
                    tot[i][4 * h + 3] += v.w;
                }
            }
        }
    }
    psg_store_tile(batch, tot, m0, n0, ty, tx, n_m, n_n, vec, false);
    if (with_bias && tid < PSG_BM && m0 + tid < n_m) {
        float v = 0.0f;
        for (int q = 0; q < splits; ++q) v += __ldcg(bias_partial + q * (long long)n_m + m0 + tid);
        bias_batch[m0 + tid] = v;
    }
}
