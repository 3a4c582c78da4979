/* psg-ops: a LayerNorm's per-sample gradients of its affine weight and bias, and their batch sums,
   in one launch. y = x_hat * weight + bias over the last dimension D, so for sample b
     weight_b[d] = sum_t gy[b, t, d] * x_hat[b, t, d],   bias_b[d] = sum_t gy[b, t, d].
   One thread per column d (coalesced across a warp), looping over samples and positions in order;
   products and sums round separately (the runtime compiles with --fmad=false), as on the CPU. */

extern "C" __global__ void __launch_bounds__(128) psg_layer_norm_f32(
    const float* __restrict__ x_hat, const float* __restrict__ gy, float* __restrict__ ps_w,
    float* __restrict__ ps_b, float* __restrict__ batch_w, float* __restrict__ batch_b,
    long long n_b, long long n_t, int d) {
    const int col = (int)blockIdx.x * 128 + (int)threadIdx.x;
    if (col >= d) return;
    float tw = 0.0f;
    float tb = 0.0f;
    for (long long b = 0; b < n_b; ++b) {
        float sw = 0.0f;
        float sb = 0.0f;
        const long long base = b * n_t * d + col;
#pragma unroll 4
        for (long long t = 0; t < n_t; ++t) {
            const float gv = gy[base + t * d];
            sw += gv * x_hat[base + t * d];
            sb += gv;
        }
        ps_w[b * d + col] = sw;
        ps_b[b * d + col] = sb;
        tw += sw;
        tb += sb;
    }
    batch_w[col] = tw;
    batch_b[col] = tb;
}
