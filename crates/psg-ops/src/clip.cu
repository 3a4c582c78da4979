/* Flat and per-layer clipping on the device, with the host's arithmetic: each sample's sums of
   squares (f64, see the row scan) added in f64 in tensor order, an IEEE square root, a cast to the accumulator type, and
   Opacus' factor min(1, C / (norm + 1e-6)) in the accumulator type. One thread per sample. */
extern "C" __global__ void CLIP_NORM_ADD(const double* __restrict__ sum_sq,
                                         double* __restrict__ total, long long n_b) {
    const long long b = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (b < n_b) total[b] += sum_sq[b];
}

extern "C" __global__ void CLIP_NORM_SQRT(const double* __restrict__ total,
                                          psg_acc* __restrict__ norms, long long n_b) {
    const long long b = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (b < n_b) norms[b] = (psg_acc)sqrt(total[b]);
}

/* min(1, f), NaN when f is NaN (a NaN norm), as Opacus' clamp(max=1): a sample whose norm is NaN
   is never passed on unclipped. The host computes the same (`clip_factor`). */
extern "C" __global__ void CLIP_FACTORS(const psg_acc* __restrict__ norms,
                                        psg_acc* __restrict__ factors, long long n_b,
                                        double max_norm) {
    const long long b = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (b >= n_b) return;
    const psg_acc f = (psg_acc)max_norm / (norms[b] + (psg_acc)1e-6);
    factors[b] = f >= (psg_acc)1 ? (psg_acc)1 : f;
}
