// Data movement: padding-row masking, KV-cache append, strided slice and concatenation.
// All are 1-D grid-stride loops over their output elements (256 threads per block, any grid),
// with every index computed in 64 bits. Slice and concat move 4-byte words (f32 or i32).

// MaskPadding: out[r, :] = 0 where pos[r] < 0 (a padding slot), else x[r, :].
// x, out [rows, inner] (out may be x: each element is read then written by one thread);
// pos [rows] i32.
extern "C" __global__ void qgc_mask_padding(const float* x, const int* pos, float* out, int rows, int inner) {
    const long long n = (long long)rows * inner;
    const long long step = (long long)gridDim.x * blockDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += step) {
        const float v = x[i];
        out[i] = pos[i / inner] < 0 ? 0.0f : v;
    }
}

// KvAppend: cache [B, heads, in_cap, d] holds `past` entries per (b, h); new [B, snew, heads, d];
// out [B, heads, out_cap, d] receives entries past..past+snew from new and, when copy_old is
// nonzero, entries 0..past from the cache (copy_old = 0 when out is the cache's own buffer:
// only the new entries are written, as runtime::compiled::shims::kv_append). Entries beyond
// past+snew are not touched. Requires past + snew <= out_cap (checked by the launcher).
extern "C" __global__ void qgc_kv_append(const float* cache, const float* nw, float* out, int batch, int heads,
                                         int past, int snew, int d, int in_cap, int out_cap, int copy_old) {
    const long long t0 = copy_old ? 0 : past;
    const long long len = (long long)past + snew - t0;
    const long long n = (long long)batch * heads * len * d;
    const long long step = (long long)gridDim.x * blockDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += step) {
        const long long j = i % d;
        const long long r = i / d;
        const long long t = t0 + r % len;
        const long long bh = r / len;
        float v;
        if (t < past) {
            v = cache[(bh * in_cap + t) * d + j];
        } else {
            const long long b = bh / heads, h = bh % heads;
            v = nw[((b * snew + (t - past)) * heads + h) * d + j];
        }
        out[(bh * out_cap + t) * d + j] = v;
    }
}

// Slice: dst[o, k] = src[o·dim·inner + start·inner + k] for k < len·inner, o < outer.
// src [outer, dim, inner], dst [outer, len, inner], 4-byte words.
extern "C" __global__ void qgc_slice(const unsigned* src, unsigned* dst, int outer, int dim, int start, int len,
                                     int inner) {
    const long long seg = (long long)len * inner;
    const long long n = (long long)outer * seg;
    const long long step = (long long)gridDim.x * blockDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += step) {
        const long long o = i / seg, k = i % seg;
        dst[i] = src[(o * dim + start) * (long long)inner + k];
    }
}

// Concat, one part per launch: dst[o·row + offset + k] = part[o·inner + k] for k < inner,
// o < outer. part [outer, inner]; dst [outer, row] (row = the sum of the parts' inner sizes;
// offset = the sum of the earlier parts'). 4-byte words.
extern "C" __global__ void qgc_concat_part(const unsigned* part, unsigned* dst, int outer, int inner, int row,
                                           int offset) {
    const long long n = (long long)outer * inner;
    const long long step = (long long)gridDim.x * blockDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += step) {
        const long long o = i / inner, k = i % inner;
        dst[o * row + offset + k] = part[i];
    }
}
