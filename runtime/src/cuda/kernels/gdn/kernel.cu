// Gated DeltaNet: the gate chain (qgc_ir::interp::fused::gdn_gates) and the gated delta rule in
// its per-token recurrent form (qgc_ir::interp::gdn::recurrent, decode and short calls) and its
// chunked form (qgc_ir::interp::gdn::chunked, prefill), all in f32.

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

// The gated delta rule in its chunked (WY / UT-transform) form for prefill: the same contract
// as qgc_gdn_delta_rule, computed per chunk of GDN_CHUNK tokens (qwen3-next.md §3.8, the
// interpreter's gdn::chunked). Per chunk of n ≤ C tokens, padded to C with k = q = v = 0,
// β = γ = 0 (padded rows leave the state and the real rows unchanged), with S the state before
// the chunk and D(i, j) = e^{Σ_{j<t≤i} γ_t} (summed directly, never a difference of sums):
//   L[i,j] = β_i (k_i·k_j) D(i,j) (j < i),  T = (I + L)⁻¹,  M[i,j] = (q_i·k_j) D(i,j) (j ≤ i)
//   Z_i = β_i (v_i − e^{G_i} (k_i S)),  V' = T Z,  O_i = e^{G_i} (q_i S) + Σ_{j≤i} M[i,j] V'_j
//   S ← e^{G_{C−1}} S + Σ_r D(C−1, r) k_r ⊗ V'_r
// Block (column tile, h, b), as qgc_gdn_delta_rule: thread j of the tile owns state column
// blockIdx.x·blockDim.x + j (kept in global memory, read twice and written once per chunk) and
// its k·S, q·S, Z, V' and O values (registers). Per chunk the block stages K and Q (of q/k head
// h / (hv/hk)), γ and β in shared memory, then, between barriers: (A) every thread computes some
// entries of L and M and the decays e^{G_i}, e^{G_last − G_i}; (B) thread c < C solves column c
// of T by forward substitution (reading only its own column and L) while every owner thread
// forms [K; Q]·S for its column; (C) owners form Z, V', O and the new state column.
// state_out may be state_in and o may be v (each thread reads its column's values before it
// writes them). Dynamic shared memory: (2·C·dk + 3·C² + 4·C) floats.
#define GDN_CHUNK 16

extern "C" __global__ void qgc_gdn_delta_rule_chunked(const float* q, const float* k, const float* v,
                                                      const float* g, const float* beta, const float* state_in,
                                                      float* o, float* state_out, int s, int hk, int hv, int dk,
                                                      int dv) {
    constexpr int C = GDN_CHUNK;
    extern __shared__ float gdn_smem[];
    float* kq = gdn_smem;          // [2C, dk]: rows 0..C−1 keys, C..2C−1 queries
    float* lm = kq + 2 * C * dk;   // [C, C] L
    float* mm = lm + C * C;        // [C, C] M
    float* tt = mm + C * C;        // [C, C] T
    float* gs = tt + C * C;        // [C] γ
    float* bs = gs + C;            // [C] β
    float* eg = bs + C;            // [C] e^{G_i}
    float* el = eg + C;            // [C] e^{G_last − G_i}
    const int h = blockIdx.y;
    const long long b = blockIdx.z;
    const int j = blockIdx.x * blockDim.x + threadIdx.x;
    const bool active = j < dv;
    const int kh = h / (hv / hk);
    const long long st = (b * hv + h) * (long long)dk * dv;
    const float* rd = state_in + st;
    float* wr = state_out + st;
    for (int t0 = 0; t0 < s; t0 += C) {
        const int n = min(C, s - t0);
        // Stage K, Q, γ, β (zero past the chunk's end).
        for (int e = threadIdx.x; e < 2 * C * dk; e += blockDim.x) {
            const int r = e / dk, d = e - r * dk;
            const int t = r < C ? r : r - C;
            float x = 0.0f;
            if (t < n) {
                const long long row = ((b * s + t0 + t) * hk + kh) * (long long)dk;
                x = r < C ? k[row + d] : q[row + d];
            }
            kq[e] = x;
        }
        for (int r = threadIdx.x; r < C; r += blockDim.x) {
            const long long gi = (b * s + t0 + r) * hv + h;
            gs[r] = r < n ? g[gi] : 0.0f;
            bs[r] = r < n ? beta[gi] : 0.0f;
        }
        __syncthreads();
        // (A) L, M and the decays.
        for (int e = threadIdx.x; e < 2 * C * C; e += blockDim.x) {
            const int which = e / (C * C), i = (e / C) % C, c = e % C;
            float val = 0.0f;
            if (which == 0 ? c < i : c <= i) {
                const float* a = kq + (which == 0 ? i : C + i) * dk;
                const float* kc = kq + c * dk;
                float dot = 0.0f;
                for (int d = 0; d < dk; d++) dot = fmaf(a[d], kc[d], dot);
                float seg = 0.0f;
                for (int t = c + 1; t <= i; t++) seg += gs[t];
                val = dot * expf(seg);
                if (which == 0) val *= bs[i];
            }
            (which == 0 ? lm : mm)[i * C + c] = val;
        }
        for (int r = threadIdx.x; r < C; r += blockDim.x) {
            float head = 0.0f, tail = 0.0f;
            for (int t = 0; t <= r; t++) head += gs[t];
            for (int t = r + 1; t < C; t++) tail += gs[t];
            eg[r] = expf(head);
            el[r] = expf(tail);
        }
        __syncthreads();
        // (B) Column c of T = (I + L)⁻¹; [K; Q]·S for this thread's state column.
        for (int c = threadIdx.x; c < C; c += blockDim.x) {
            for (int i = 0; i < C; i++) {
                float x = i == c ? 1.0f : 0.0f;
                if (i > c) {
                    float sum = 0.0f;
                    for (int m = c; m < i; m++) sum = fmaf(lm[i * C + m], tt[m * C + c], sum);
                    x = -sum;
                }
                tt[i * C + c] = x;
            }
        }
        float acc[2 * C];
#pragma unroll
        for (int r = 0; r < 2 * C; r++) acc[r] = 0.0f;
        if (active) {
            for (int d = 0; d < dk; d++) {
                const float sv = rd[(long long)d * dv + j];
#pragma unroll
                for (int r = 0; r < 2 * C; r++) acc[r] = fmaf(kq[r * dk + d], sv, acc[r]);
            }
        }
        __syncthreads();
        // (C) Z, V' = T Z (in place, last row first), O, and the state column.
        if (active) {
            float z[C];
#pragma unroll
            for (int r = 0; r < C; r++) {
                const float vr = r < n ? v[((b * s + t0 + r) * hv + h) * (long long)dv + j] : 0.0f;
                z[r] = bs[r] * (vr - eg[r] * acc[r]);
            }
#pragma unroll
            for (int i = C - 1; i >= 0; i--) {
                float x = 0.0f;
#pragma unroll
                for (int c = 0; c <= i; c++) x = fmaf(tt[i * C + c], z[c], x);
                z[i] = x;
            }
#pragma unroll
            for (int i = 0; i < C; i++) {
                float out = eg[i] * acc[C + i];
#pragma unroll
                for (int c = 0; c <= i; c++) out = fmaf(mm[i * C + c], z[c], out);
                if (i < n) o[((b * s + t0 + i) * hv + h) * (long long)dv + j] = out;
            }
#pragma unroll
            for (int r = 0; r < C; r++) z[r] *= el[r];
            const float decay = eg[C - 1];
            for (int d = 0; d < dk; d++) {
                float sv = decay * rd[(long long)d * dv + j];
#pragma unroll
                for (int r = 0; r < C; r++) sv = fmaf(kq[r * dk + d], z[r], sv);
                wr[(long long)d * dv + j] = sv;
            }
        }
        rd = wr;
        __syncthreads();  // the next chunk restages kq, gs, bs
    }
    if (s == 0 && active)
        for (int d = 0; d < dk; d++) wr[(long long)d * dv + j] = rd[(long long)d * dv + j];
}
