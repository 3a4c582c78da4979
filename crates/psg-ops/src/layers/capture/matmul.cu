/* psg-ops capture layers: C[M, N] = A(m, k) B(k, n) (+ bias[n]) with A and B given by strides
   (a transpose is a stride swap). 64 x 64 tiles, 16 k per shared-memory tile, a 4 x 4 register
   block per thread, fmaf in increasing k. The forward and backward passes of Linear use it. */

extern "C" __global__ void __launch_bounds__(256) psg_matmul_f32(
    const float* __restrict__ a, const float* __restrict__ b, const float* __restrict__ bias,
    float* __restrict__ c, int n_m, int n_n, int n_k, long long a_m, long long a_k, long long b_k,
    long long b_n) {
    __shared__ __align__(16) float sa[16][68];
    __shared__ __align__(16) float sb[16][68];
    const int tiles_n = (n_n + 63) / 64;
    const int m0 = ((int)blockIdx.x / tiles_n) * 64;
    const int n0 = ((int)blockIdx.x % tiles_n) * 64;
    const int tid = threadIdx.x;
    const int tx = tid & 15;
    const int ty = tid >> 4;
    float acc[4][4];
#pragma unroll
    for (int i = 0; i < 4; ++i) {
#pragma unroll
        for (int j = 0; j < 4; ++j) acc[i][j] = 0.0f;
    }
    for (int k0 = 0; k0 < n_k; k0 += 16) {
#pragma unroll
        for (int e = 0; e < 4; ++e) {
            const int idx = e * 256 + tid;
            const int k = idx & 15;
            const int r = idx >> 4;
            const int kk = k0 + k;
            const int m = m0 + r;
            const int n = n0 + r;
            sa[k][r] = (m < n_m && kk < n_k) ? a[m * a_m + kk * a_k] : 0.0f;
            sb[k][r] = (n < n_n && kk < n_k) ? b[kk * b_k + n * b_n] : 0.0f;
        }
        __syncthreads();
#pragma unroll
        for (int k = 0; k < 16; ++k) {
            const float4 av = *reinterpret_cast<const float4*>(&sa[k][ty * 4]);
            const float4 bv = *reinterpret_cast<const float4*>(&sb[k][tx * 4]);
            const float am[4] = {av.x, av.y, av.z, av.w};
            const float bn[4] = {bv.x, bv.y, bv.z, bv.w};
#pragma unroll
            for (int i = 0; i < 4; ++i) {
#pragma unroll
                for (int j = 0; j < 4; ++j) acc[i][j] = fmaf(am[i], bn[j], acc[i][j]);
            }
        }
        __syncthreads();
    }
#pragma unroll
    for (int i = 0; i < 4; ++i) {
        const int m = m0 + ty * 4 + i;
#pragma unroll
        for (int j = 0; j < 4; ++j) {
            const int n = n0 + tx * 4 + j;
            if (m < n_m && n < n_n) {
                c[(long long)m * n_n + n] = bias ? acc[i][j] + bias[n] : acc[i][j];
            }
        }
    }
}
