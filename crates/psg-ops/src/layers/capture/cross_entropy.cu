/* psg-ops capture layers: softmax cross-entropy, one thread per sample (row of C logits).
   loss[b] = log(sum_j exp(z_j - max)) + max - z_label and grad[b, j] = softmax(z)_j - [j == label],
   the gradient of the summed loss. */

extern "C" __global__ void psg_softmax_xent_f32(const float* __restrict__ z,
                                                const int* __restrict__ labels,
                                                float* __restrict__ loss, float* __restrict__ grad,
                                                long long n_b, int c) {
    const long long row = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (row >= n_b) return;
    const float* zr = z + row * c;
    float mx = zr[0];
    for (int j = 1; j < c; ++j) mx = zr[j] > mx ? zr[j] : mx;
    float sum = 0.0f;
    for (int j = 0; j < c; ++j) sum += expf(zr[j] - mx);
    const int y = labels[row];
    loss[row] = (logf(sum) + mx) - zr[y];
    float* gr = grad + row * c;
    for (int j = 0; j < c; ++j) gr[j] = expf(zr[j] - mx) / sum - (j == y ? 1.0f : 0.0f);
}
