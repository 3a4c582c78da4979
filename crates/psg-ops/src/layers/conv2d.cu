/* psg-ops: a Conv2d layer's per-sample weight (and bias) gradients and their batch sums, in one
   launch.

   For group gr and sample b, with L = Ho * Wo output positions and R = Cg * KH * KW:
     W_b[gr * Cog + m, r] = sum_l gy[b, gr * Cog + m, l] * X_b(r, l)
     X_b((ci, ky, kx), (oh, ow)) = x[b, gr * Cg + ci, oh * sh - ph + ky * dh, ow * sw - pw + kx * dw]
   (zero outside the image): a per-sample GEMM whose second operand is the unfolded input, built
   on the fly in shared memory (implicit im2col). A block owns a 64 x 64 tile of one group's
   [Cog, R] gradient and loops over the samples, writing each sample's tile and keeping the batch
   sum in registers (4 x 4 per thread). Blocks past `gemm_blocks` compute the bias: one warp per
   output channel. The sum over l runs in increasing l, with fmaf. */

#define PSG_CT 64  /* tile rows and columns */
#define PSG_CK 16  /* output positions per shared-memory tile */

extern "C" __global__ void __launch_bounds__(256) psg_conv2d_f32(
    const float* __restrict__ x, const float* __restrict__ gy, float* __restrict__ per_sample,
    float* __restrict__ batch, float* __restrict__ bias_ps, float* __restrict__ bias_batch,
    long long n_b, int c_in, int h, int w, int c_out, int ho, int wo, int kh, int kw, int sh,
    int sw, int ph, int pw, int dh, int dw, int groups, int gemm_blocks) {
    __shared__ __align__(16) float sg[PSG_CK][PSG_CT + 4];
    __shared__ __align__(16) float sx[PSG_CK][PSG_CT + 4];
    const int tid = threadIdx.x;
    const int n_l = ho * wo;

    if ((int)blockIdx.x >= gemm_blocks) {
        /* Bias: warp `wid` of block j owns output channel 8 j + wid. */
        const int lane = tid & 31;
        const int co = ((int)blockIdx.x - gemm_blocks) * 8 + (tid >> 5);
        if (co >= c_out) return;
        float total = 0.0f;
        for (long long b = 0; b < n_b; ++b) {
            const float* row = gy + (b * c_out + co) * (long long)n_l;
            float s = 0.0f;
            for (int l = lane; l < n_l; l += 32) s += row[l];
#pragma unroll
            for (int off = 16; off > 0; off >>= 1) s += __shfl_xor_sync(0xffffffffu, s, off);
            total += s;
            if (lane == 0) bias_ps[b * c_out + co] = s;
        }
        if (lane == 0) bias_batch[co] = total;
        return;
    }

    const int cg = c_in / groups;
    const int cog = c_out / groups;
    const int khw = kh * kw;
    const int n_r = cg * khw;
    const int tiles_m = (cog + PSG_CT - 1) / PSG_CT;
    const int tiles_n = (n_r + PSG_CT - 1) / PSG_CT;
    const int gr = (int)blockIdx.x / (tiles_m * tiles_n);
    const int rem = (int)blockIdx.x % (tiles_m * tiles_n);
    const int m0 = (rem / tiles_n) * PSG_CT;
    const int n0 = (rem % tiles_n) * PSG_CT;
    const int tx = tid & 15;
    const int ty = tid >> 4;

    float acc[4][4];
    float tot[4][4];
#pragma unroll
    for (int i = 0; i < 4; ++i) {
#pragma unroll
        for (int j = 0; j < 4; ++j) {
            acc[i][j] = 0.0f;
            tot[i][j] = 0.0f;
        }
    }

    for (long long b = 0; b < n_b; ++b) {
        for (int l0 = 0; l0 < n_l; l0 += PSG_CK) {
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                const int idx = e * 256 + tid;
                const int k = idx & (PSG_CK - 1);
                const int mm = idx >> 4;
                const int l = l0 + k;
                const int co = m0 + mm;
                float gv = 0.0f;
                if (co < cog && l < n_l) {
                    gv = gy[(b * c_out + gr * cog + co) * (long long)n_l + l];
                }
                sg[k][mm] = gv;
                const int r = n0 + mm;
                float xv = 0.0f;
                if (r < n_r && l < n_l) {
                    const int ci = r / khw;
                    const int kk = r % khw;
                    const int ih = (l / wo) * sh - ph + (kk / kw) * dh;
                    const int iw = (l % wo) * sw - pw + (kk % kw) * dw;
                    if (ih >= 0 && ih < h && iw >= 0 && iw < w) {
                        xv = x[((b * c_in + gr * cg + ci) * (long long)h + ih) * w + iw];
                    }
                }
                sx[k][mm] = xv;
            }
            __syncthreads();
#pragma unroll
            for (int k = 0; k < PSG_CK; ++k) {
                const float4 gv = *reinterpret_cast<const float4*>(&sg[k][ty * 4]);
                const float4 xv = *reinterpret_cast<const float4*>(&sx[k][tx * 4]);
                const float gm[4] = {gv.x, gv.y, gv.z, gv.w};
                const float xn[4] = {xv.x, xv.y, xv.z, xv.w};
#pragma unroll
                for (int i = 0; i < 4; ++i) {
#pragma unroll
                    for (int j = 0; j < 4; ++j) acc[i][j] = fmaf(gm[i], xn[j], acc[i][j]);
                }
            }
            __syncthreads();
        }
        /* Sample b is complete. */
#pragma unroll
        for (int i = 0; i < 4; ++i) {
            const int co = m0 + ty * 4 + i;
#pragma unroll
            for (int j = 0; j < 4; ++j) {
                const int r = n0 + tx * 4 + j;
                if (co < cog && r < n_r) {
                    per_sample[(b * c_out + gr * cog + co) * (long long)n_r + r] = acc[i][j];
                }
                tot[i][j] += acc[i][j];
                acc[i][j] = 0.0f;
            }
        }
    }
#pragma unroll
    for (int i = 0; i < 4; ++i) {
        const int co = m0 + ty * 4 + i;
#pragma unroll
        for (int j = 0; j < 4; ++j) {
            const int r = n0 + tx * 4 + j;
            if (co < cog && r < n_r) batch[(long long)(gr * cog + co) * n_r + r] = tot[i][j];
        }
    }
}
