// Sparse mixture of experts: the fused router (qgc_ir::interp::fused::moe_route) and the routed
// experts' SwiGLU (qgc_ir::interp::moe::moe_experts). Expert weights are f32 or bf16 (as stored;
// bf16 decoded by bits), accumulation in f32.

static __device__ __forceinline__ float moe_warp_sum(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

static __device__ __forceinline__ float moe_load(const float* p, long long i) { return p[i]; }
static __device__ __forceinline__ float moe_load(const unsigned short* p, long long i) {
    return __uint_as_float(((unsigned)p[i]) << 16);
}

// Router, one warp (one block of 32 threads) per row: p = softmax(logits) in f64 with the max
// subtracted, rounded to f32 (as the oracle's softmax); the top_k largest p in descending order,
// ties to the lower expert index; renormalised by their f64 sum when renorm != 0. Lane l owns
// experts l, l+32, .. (its p in shared memory, touched by no other lane).
// logits: [rows, E]; weights: [rows, top_k] f32; ids: [rows, top_k] i32.
// Dynamic shared memory: E floats.
extern "C" __global__ void qgc_moe_route(const float* logits, float* weights, int* ids, int rows, int experts,
                                         int top_k, int renorm) {
    extern __shared__ float moe_p[];
    const int lane = threadIdx.x;
    const long long row = blockIdx.x;
    if (row >= rows) return;
    const float* x = logits + row * experts;
    float mx = __int_as_float(0xff800000);
    for (int e = lane; e < experts; e += 32) mx = fmaxf(mx, x[e]);
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, o));
    double sum = 0.0;
    for (int e = lane; e < experts; e += 32) sum += exp((double)x[e] - (double)mx);
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, o);
    for (int e = lane; e < experts; e += 32) moe_p[e] = (float)(exp((double)x[e] - (double)mx) / sum);
    float* wrow = weights + row * top_k;
    int* irow = ids + row * top_k;
    double chosen = 0.0;
    for (int kk = 0; kk < top_k; kk++) {
        float bv = -1.0f;  // below every probability; taken experts are marked -2
        int bi = 0x7fffffff;
        for (int e = lane; e < experts; e += 32) {
            const float p = moe_p[e];
            if (p > bv) {  // ascending e: a tie keeps the lower index
                bv = p;
                bi = e;
            }
        }
#pragma unroll
        for (int o = 16; o > 0; o >>= 1) {
            const float ov = __shfl_xor_sync(0xffffffffu, bv, o);
            const int oi = __shfl_xor_sync(0xffffffffu, bi, o);
            if (ov > bv || (ov == bv && oi < bi)) {
                bv = ov;
                bi = oi;
            }
        }
        if (bi < experts && (bi & 31) == lane) moe_p[bi] = -2.0f;
        chosen += (double)bv;
        if (lane == 0) {
            wrow[kk] = bv;
            irow[kk] = bi < experts ? bi : 0;
        }
    }
    if (renorm && lane == 0)
        for (int kk = 0; kk < top_k; kk++) wrow[kk] = (float)((double)wrow[kk] / chosen);
}

// Gate/up of the routed experts: one warp per (row r, slot kk, expert row i):
// mid[r, kk, i] = silu(gate_e[i]·x[r]) · (up_e[i]·x[r]) with e = ids[r, kk]; 0 when e is outside
// 0..E (the oracle rejects such an index; nothing reads it then). gate_e = gate + e·estride and
// likewise up: estride = inter·hidden for separate [E, inter, hidden] stacks, 2·inter·hidden
// with up = gate + inter·hidden for a fused [E, 2·inter, hidden] stack.
// x: [rows, hidden]; ids: [rows, top_k]; mid: [rows, top_k, inter] f32.
template <typename W>
static __device__ void moe_gate_up(const float* x, const int* ids, const W* gate, const W* up, float* mid, int rows,
                                   int experts, int hidden, int inter, int top_k, long long estride) {
    const long long warp = ((long long)blockIdx.x * blockDim.x + threadIdx.x) >> 5;
    const int lane = threadIdx.x & 31;
    if (warp >= (long long)rows * top_k * inter) return;  // warp-uniform
    const int i = (int)(warp % inter);
    const long long slot = warp / inter;  // r·top_k + kk
    const long long r = slot / top_k;
    const int e = ids[slot];
    if (e < 0 || e >= experts) {
        if (lane == 0) mid[warp] = 0.0f;
        return;
    }
    const long long wrow = e * estride + (long long)i * hidden;
    const float* xr = x + r * hidden;
    float sg = 0.0f, su = 0.0f;
    for (int c = lane; c < hidden; c += 32) {
        const float xv = xr[c];
        sg = fmaf(moe_load(gate, wrow + c), xv, sg);
        su = fmaf(moe_load(up, wrow + c), xv, su);
    }
    sg = moe_warp_sum(sg);
    su = moe_warp_sum(su);
    if (lane == 0) mid[warp] = (sg / (1.0f + expf(-sg))) * su;
}

// Down and the weighted sum: one warp per (row r, output o):
// out[r, o] = Σ_kk weights[r, kk] · (down_e[o]·mid[r, kk]) over the valid experts, in slot order
// per lane. down: [E, hidden, inter]. out may be x (x is only read by the gate/up launch).
template <typename W>
static __device__ void moe_down(const float* mid, const float* weights, const int* ids, const W* down, float* out,
                                int rows, int experts, int hidden, int inter, int top_k) {
    const long long warp = ((long long)blockIdx.x * blockDim.x + threadIdx.x) >> 5;
    const int lane = threadIdx.x & 31;
    if (warp >= (long long)rows * hidden) return;  // warp-uniform
    const int o = (int)(warp % hidden);
    const long long r = warp / hidden;
    float acc = 0.0f;
    for (int kk = 0; kk < top_k; kk++) {
        const long long slot = r * top_k + kk;
        const int e = ids[slot];
        if (e < 0 || e >= experts) continue;
        const float w = weights[slot];
        const long long drow = ((long long)e * hidden + o) * inter;
        const float* m = mid + slot * inter;
        float part = 0.0f;
        for (int c = lane; c < inter; c += 32) part = fmaf(moe_load(down, drow + c), m[c], part);
        acc = fmaf(w, part, acc);
    }
    acc = moe_warp_sum(acc);
    if (lane == 0) out[warp] = acc;
}

extern "C" __global__ void qgc_moe_gate_up_f32(const float* x, const int* ids, const float* gate, const float* up,
                                               float* mid, int rows, int experts, int hidden, int inter, int top_k,
                                               long long estride) {
    moe_gate_up<float>(x, ids, gate, up, mid, rows, experts, hidden, inter, top_k, estride);
}
extern "C" __global__ void qgc_moe_gate_up_bf16(const float* x, const int* ids, const unsigned short* gate,
                                                const unsigned short* up, float* mid, int rows, int experts,
                                                int hidden, int inter, int top_k, long long estride) {
    moe_gate_up<unsigned short>(x, ids, gate, up, mid, rows, experts, hidden, inter, top_k, estride);
}
extern "C" __global__ void qgc_moe_down_f32(const float* mid, const float* weights, const int* ids, const float* down,
                                            float* out, int rows, int experts, int hidden, int inter, int top_k) {
    moe_down<float>(mid, weights, ids, down, out, rows, experts, hidden, inter, top_k);
}
extern "C" __global__ void qgc_moe_down_bf16(const float* mid, const float* weights, const int* ids,
                                             const unsigned short* down, float* out, int rows, int experts,
                                             int hidden, int inter, int top_k) {
    moe_down<unsigned short>(mid, weights, ids, down, out, rows, experts, hidden, inter, top_k);
}
