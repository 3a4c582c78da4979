/* psg-ops: an Embedding's per-sample gradients (only the rows each sample touched) and the batch
   gradient, in one launch.

   The host groups the B * T lookups by table row ("union rows", ascending), then by sample
   ("entries"), then by position. Block (u, column chunk) owns union row u: for each entry e of u it
   sums the output gradients of e's positions (in position order), writes that as sample
   entry_sample[e]'s gradient for the row, and adds it to the row's batch gradient (in sample order).
   `dense` = 0 writes entry e to out[entry_slot[e]] (the sparse layout: one row per (sample, touched
   row)); `dense` = 1 writes it to out[entry_sample[e] * n_union + u] (a zeroed [B, U, D]: dense over
   the union of touched rows, for a batch reduction). The batch output [V, D] is zeroed by the host,
   so rows nobody touched stay zero. No atomics: deterministic. */

extern "C" __global__ void __launch_bounds__(128) psg_embedding_f32(
    const float* __restrict__ g, const int* __restrict__ union_rows,
    const int* __restrict__ entry_off, const int* __restrict__ entry_sample,
    const int* __restrict__ entry_slot, const int* __restrict__ tok_off,
    const int* __restrict__ toks, float* __restrict__ out, float* __restrict__ batch, int n_union,
    int d, int dense) {
    const int chunks = (d + 127) / 128;
    const int u = (int)(blockIdx.x / chunks);
    const int col = (int)(blockIdx.x % chunks) * 128 + (int)threadIdx.x;
    if (u >= n_union || col >= d) return;
    float total = 0.0f;
    for (int e = entry_off[u]; e < entry_off[u + 1]; ++e) {
        float v = 0.0f;
        for (int j = tok_off[e]; j < tok_off[e + 1]; ++j) v += g[(long long)toks[j] * d + col];
        const long long dst = dense ? (long long)entry_sample[e] * n_union + u : (long long)entry_slot[e];
        out[dst * d + col] = v;
        total += v;
    }
    batch[(long long)union_rows[u] * d + col] = total;
}

/* A reduction's result over the union rows [U, D] spread to the whole table [V, D]: row v is
   reduced[union_of[v]], or `untouched` (the reduction of an all-zero column) where union_of[v] < 0. */
extern "C" __global__ void psg_embedding_scatter_f32(const float* __restrict__ reduced,
                                                     const float* __restrict__ untouched,
                                                     const int* __restrict__ union_of,
                                                     float* __restrict__ out, long long n_v, int d) {
    const long long n = n_v * d;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (long long)gridDim.x * blockDim.x) {
        const long long v = i / d;
        const int col = (int)(i % d);
        const int u = union_of[v];
        out[i] = u >= 0 ? reduced[(long long)u * d + col] : untouched[0];
    }
}
