// Gated DeltaNet: the gate chain (qgc_ir::interp::fused::gdn_gates) and the gated delta rule in
// its per-token recurrent form (qgc_ir::interp::gdn::recurrent), all in f32.

static __device__ __forceinline__ float gdn_warp_sum(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

// L2 norm of the q and k heads: one warp per head row of dk. Warps 0..heads−1 take q rows
// (result x·rsqrt(Σx² + eps)·q_scale), warps heads..2·heads−1 take k rows (factor 1).
// q, k: [heads, dk] (heads = rows·hk); q_out, k_out: the same (may be q, k: each lane rewrites
// only the elements it read). Blocks of whole warps; extra warps do nothing.
extern "C" __global__ void qgc_gdn_l2norm(const float* q, const float* k, float* q_out, float* k_out, int heads,
                                          int dk, float eps, float q_scale) {
    const long long warp = ((long long)blockIdx.x * blockDim.x + threadIdx.x) >> 5;
    const int lane = threadIdx.x & 31;
    if (warp >= 2LL * heads) return;  // warp-uniform
    const bool is_q = warp < heads;
    const long long row = is_q ? warp : warp - heads;
    const float* src = (is_q ? q : k) + row * dk;
    float* dst = (is_q ? q_out : k_out) + row * dk;
    float ss = 0.0f;
    for (int i = lane; i < dk; i += 32) ss = fmaf(src[i], src[i], ss);
    ss = gdn_warp_sum(ss);
    const float inv = 1.0f / sqrtf(ss + eps);
    const float f = is_q ? q_scale : 1.0f;
    for (int i = lane; i < dk; i += 32) dst[i] = (src[i] * inv) * f;
}

// g = −exp(a_log[h]) · softplus(a + dt_bias[h]) (softplus(x) = x above 20), beta = σ(b).
// a, b, g, beta: [rows, hv] (g may be a, beta may be b); dt_bias, a_log: [hv]. One thread per
// element.
extern "C" __global__ void qgc_gdn_gates(const float* a, const float* b, const float* dt_bias, const float* a_log,
                                         float* g, float* beta, int rows, int hv) {
    const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (long long)rows * hv) return;
    const int h = (int)(i % hv);
    const float x = a[i] + dt_bias[h];
    const float sp = x > 20.0f ? x : log1pf(expf(x));
    const float decay = -expf(a_log[h]);
    const float bv = b[i];
    g[i] = sp * decay;
    beta[i] = 1.0f / (1.0f + expf(-bv));
}

// The gated delta rule, token by token, per (batch row b, value head h), state [dk, dv] f32:
//   S ← e^g S;  m = Sᵀk;  S += k ⊗ β(v − m);  o = Sᵀq.
// Block (column tile, h, b): thread j of the tile owns state column blockIdx.x·blockDim.x + j
// (all dk entries of it, in global memory). Per token the block stages k and q (of q/k head
// h / (hv/hk)) in shared memory. The state is read from state_in for the first token and from
// state_out afterwards (state_out may be state_in: each thread only touches its own column);
// o may be v (each thread reads its v element before writing the o element at the same place).
// q, k: [B, S, hk, dk]; v, o: [B, S, hv, dv]; g, beta: [B, S, hv]; state_*: [B, hv, dk, dv].
// Dynamic shared memory: 2·dk floats.
extern "C" __global__ void qgc_gdn_delta_rule(const float* q, const float* k, const float* v, const float* g,
                                              const float* beta, const float* state_in, float* o,
                                              float* state_out, int s, int hk, int hv, int dk, int dv) {
    extern __shared__ float gdn_smem[];
    float* ks = gdn_smem;       // [dk]
    float* qs = gdn_smem + dk;  // [dk]
    const int h = blockIdx.y;
    const long long b = blockIdx.z;
    const int j = blockIdx.x * blockDim.x + threadIdx.x;
    const bool active = j < dv;
    const int kh = h / (hv / hk);
    const long long st = (b * hv + h) * (long long)dk * dv;
    const float* rd = state_in + st;
    float* wr = state_out + st;
    if (s == 0) {
        if (active)
            for (int i = 0; i < dk; i++) wr[(long long)i * dv + j] = rd[(long long)i * dv + j];
        return;  // block-uniform, no barrier reached
    }
    for (int t = 0; t < s; t++) {
        const long long tok = b * s + t;
        const float* krow = k + (tok * hk + kh) * (long long)dk;
        const float* qrow = q + (tok * hk + kh) * (long long)dk;
        for (int i = threadIdx.x; i < dk; i += blockDim.x) {
            ks[i] = krow[i];
            qs[i] = qrow[i];
        }
        __syncthreads();
        if (active) {
            const long long gi = tok * hv + h;
            const float decay = expf(g[gi]);
            const float bt = beta[gi];
            float m = 0.0f;
            for (int i = 0; i < dk; i++) m = fmaf(rd[(long long)i * dv + j], ks[i], m);
            m *= decay;
            const long long vi = gi * dv + j;
            const float delta = bt * (v[vi] - m);
            float out = 0.0f;
            for (int i = 0; i < dk; i++) {
                const float sv = fmaf(ks[i], delta, decay * rd[(long long)i * dv + j]);
                wr[(long long)i * dv + j] = sv;
                out = fmaf(sv, qs[i], out);
            }
            o[vi] = out;
        }
        rd = wr;
        __syncthreads();  // ks, qs are rewritten by the next token
    }
}
