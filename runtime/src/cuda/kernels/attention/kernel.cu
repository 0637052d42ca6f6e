// Causal GQA attention over a KV cache with spare capacity (qgc_ir::interp::attention::attention).
//
// One block of ATTN_THREADS threads per (batch row b, query t, query head j); blockIdx.x =
// (b·S + t)·qh + j. The block stages its query row in shared memory, then walks its visible keys
// in tiles of ATTN_TILE: warp w computes the scores of keys w, w+W, .. of the tile (a lane-strided
// dot over d plus a butterfly), then every thread folds the tile into an online softmax (f32) for
// the output columns it owns (e = tid + r·ATTN_THREADS, r < ATTN_DV_PER_THREAD).
//
// Visible keys (left-padded rows): pad = past − positions[b·S] with past = len − S; query t sees
// cache entries pad..=past+t and writes zeros when that range is empty (a padding slot).

#define ATTN_THREADS 128
#define ATTN_WARPS (ATTN_THREADS / 32)
#define ATTN_TILE 32
#define ATTN_DV_PER_THREAD 4

static __device__ __forceinline__ float attn_warp_sum(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

// q: [B, S, qh, d]; k: [B, kvh, cap, d]; v: [B, kvh, cap, dv]; positions: [B, S] (i32);
// out: [B, S, qh, dv]. len = past + S entries are valid per (b, kv head); cap >= len is the
// row stride. Dynamic shared memory: (d + ATTN_TILE) floats.
extern "C" __global__ void __launch_bounds__(ATTN_THREADS) qgc_attention(
    const float* q, const float* k, const float* v, const int* positions, float* out, int batch, int s, int len,
    int cap, int qh, int kvh, int d, int dv, float scale) {
    extern __shared__ float attn_smem[];
    float* qs = attn_smem;       // [d]
    float* sc = attn_smem + d;   // [ATTN_TILE]
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const long long blk = blockIdx.x;
    const int j = (int)(blk % qh);
    const long long bt = blk / qh;  // b·S + t
    const int t = (int)(bt % s);
    const int b = (int)(bt / s);
    if (b >= batch) return;  // block-uniform, before any barrier
    const int group = qh / kvh;
    const int kv = j / group;
    const int past = len - s;
    long long lo = (long long)past - (long long)positions[(long long)b * s];
    if (lo < 0) lo = 0;
    const long long hi = (long long)past + t;  // inclusive, < len

    const float* qrow = q + (bt * qh + j) * (long long)d;
    for (int i = tid; i < d; i += ATTN_THREADS) qs[i] = qrow[i];
    __syncthreads();

    const long long kvrow = (long long)b * kvh + kv;
    const float* kbase = k + kvrow * cap * (long long)d;
    const float* vbase = v + kvrow * cap * (long long)dv;

    float acc[ATTN_DV_PER_THREAD];
#pragma unroll
    for (int r = 0; r < ATTN_DV_PER_THREAD; r++) acc[r] = 0.0f;
    float m = __int_as_float(0xff800000);  // running max
    float l = 0.0f;                        // running sum of exp

    for (long long key0 = lo; key0 <= hi; key0 += ATTN_TILE) {
        long long rem = hi + 1 - key0;
        const int n = rem < ATTN_TILE ? (int)rem : ATTN_TILE;
        for (int kk = warp; kk < n; kk += ATTN_WARPS) {
            const float* krow = kbase + (key0 + kk) * (long long)d;
            float part = 0.0f;
            for (int i = lane; i < d; i += 32) part = fmaf(qs[i], krow[i], part);
            part = attn_warp_sum(part);
            if (lane == 0) sc[kk] = part * scale;
        }
        __syncthreads();
        float mt = m;
        for (int kk = 0; kk < n; kk++) mt = fmaxf(mt, sc[kk]);
        const float corr = expf(m - mt);
        l *= corr;
#pragma unroll
        for (int r = 0; r < ATTN_DV_PER_THREAD; r++) acc[r] *= corr;
        for (int kk = 0; kk < n; kk++) {
            const float p = expf(sc[kk] - mt);
            l += p;
            const float* vrow = vbase + (key0 + kk) * (long long)dv;
#pragma unroll
            for (int r = 0; r < ATTN_DV_PER_THREAD; r++) {
                const int e = tid + r * ATTN_THREADS;
                if (e < dv) acc[r] = fmaf(p, vrow[e], acc[r]);
            }
        }
        m = mt;
        __syncthreads();  // sc is rewritten by the next tile
    }

    float* orow = out + (bt * qh + j) * (long long)dv;
    const float inv = l > 0.0f ? 1.0f / l : 0.0f;
#pragma unroll
    for (int r = 0; r < ATTN_DV_PER_THREAD; r++) {
        const int e = tid + r * ATTN_THREADS;
        if (e < dv) orow[e] = acc[r] * inv;
    }
}
