/* psg-ops capture layers: element-wise kernels (grid-stride loops over n elements). Products and
   sums round separately (the runtime compiles with --fmad=false), as on the CPU. */

/* ReLU: y = x < 0 ? 0 : x (NaN propagates, as torch.relu). */
extern "C" __global__ void psg_relu_forward_f32(const float* __restrict__ x, float* __restrict__ y,
                                                long long n) {
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (long long)gridDim.x * blockDim.x) {
        const float v = x[i];
        y[i] = v < 0.0f ? 0.0f : v;
    }
}

/* ReLU's backward: gx = x > 0 ? gy : 0. */
extern "C" __global__ void psg_relu_backward_f32(const float* __restrict__ x,
                                                 const float* __restrict__ gy,
                                                 float* __restrict__ gx, long long n) {
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (long long)gridDim.x * blockDim.x) {
        gx[i] = x[i] > 0.0f ? gy[i] : 0.0f;
    }
}

/* out = p + alpha * d (an SGD step with alpha = -lr). */
extern "C" __global__ void psg_axpy_f32(const float* __restrict__ p, const float* __restrict__ d,
                                        float* __restrict__ out, float alpha, long long n) {
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (long long)gridDim.x * blockDim.x) {
        out[i] = p[i] + alpha * d[i];
    }
}
