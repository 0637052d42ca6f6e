// The matmul family (qgc_ir::interp::linear::matmul and the fused forms in interp::fused):
// y [rows, n] = x [rows, k] · w [n, k]ᵀ. Small row counts (≤ LIN_ROWS) run the GEMV here with
// the epilogue fused; larger ones run a cuBLAS-semantics GEMM (Device::gemm) and then the
// elementwise epilogue kernels below — for f32 weights; bf16 weights run the GEMV over chunks
// of ≤ LIN_ROWS rows (see linear/mod.rs). Weights f32 or bf16 (decoded by bits), f32
// accumulation.
//
// Gate indexing (`how`): 0 = Full g[r·n + j], 1 = Row g[r], 2 = Suffix g[(r·n + j) mod glen],
// with r the row of the whole matmul (the GEMV adds its chunk's first row `row0`).

#define LIN_ROWS 8
#define LIN_VEC 8

static __device__ __forceinline__ float lin_warp_sum(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

static __device__ __forceinline__ float lin_sigmoid(float x) { return 1.0f / (1.0f + expf(-x)); }

static __device__ __forceinline__ long long lin_gate_index(long long r, long long j, long long n, int how,
                                                           long long glen) {
    if (how == 1) return r;
    const long long i = r * n + j;
    return how == 2 ? i % glen : i;
}

static __device__ __forceinline__ float lin_load(const float* p, long long i) { return p[i]; }
static __device__ __forceinline__ float lin_load(const unsigned short* p, long long i) {
    return __uint_as_float(((unsigned)p[i]) << 16);
}

// LIN_VEC consecutive weights from w + at (16-byte aligned).
static __device__ __forceinline__ void lin_loadv(const float* w, long long at, float* v) {
    const float4 a = *reinterpret_cast<const float4*>(w + at);
    const float4 b = *reinterpret_cast<const float4*>(w + at + 4);
    v[0] = a.x, v[1] = a.y, v[2] = a.z, v[3] = a.w, v[4] = b.x, v[5] = b.y, v[6] = b.z, v[7] = b.w;
}
static __device__ __forceinline__ void lin_loadv(const unsigned short* w, long long at, float* v) {
    const uint4 a = *reinterpret_cast<const uint4*>(w + at);
    const unsigned u[4] = {a.x, a.y, a.z, a.w};
#pragma unroll
    for (int m = 0; m < 4; m++) {
        v[2 * m] = __uint_as_float(u[m] << 16);
        v[2 * m + 1] = __uint_as_float(u[m] & 0xffff0000u);
    }
}

// acc[r] += w[wrow + c] · x[r, c] over c < k, lanes strided; vec: k % LIN_VEC == 0 and x, w
// 16-byte aligned.
template <typename W>
static __device__ __forceinline__ void lin_dot_rows(const float* x, const W* w, long long wrow, int rows, int k,
                                                    int vec, int lane, float* acc) {
    if (vec) {
        for (int c = lane * LIN_VEC; c < k; c += 32 * LIN_VEC) {
            float wv[LIN_VEC];
            lin_loadv(w, wrow + c, wv);
#pragma unroll
            for (int r = 0; r < LIN_ROWS; r++) {
                if (r < rows) {
                    const float* xr = x + (long long)r * k + c;
                    const float4 a = *reinterpret_cast<const float4*>(xr);
                    const float4 b = *reinterpret_cast<const float4*>(xr + 4);
                    float s = acc[r];
                    s = fmaf(wv[0], a.x, s);
                    s = fmaf(wv[1], a.y, s);
                    s = fmaf(wv[2], a.z, s);
                    s = fmaf(wv[3], a.w, s);
                    s = fmaf(wv[4], b.x, s);
                    s = fmaf(wv[5], b.y, s);
                    s = fmaf(wv[6], b.z, s);
                    s = fmaf(wv[7], b.w, s);
                    acc[r] = s;
                }
            }
        }
    } else {
        for (int c = lane; c < k; c += 32) {
            const float wv = lin_load(w, wrow + c);
#pragma unroll
            for (int r = 0; r < LIN_ROWS; r++)
                if (r < rows) acc[r] = fmaf(wv, x[(long long)r * k + c], acc[r]);
        }
    }
}

// GEMV, one warp per output column j < n, rows ≤ LIN_ROWS. mode 0: out = x·w[j]ᵀ;
// mode 1 (SwiGLU over w [2n, k]): out = silu(x·w[j]ᵀ) · (x·w[n+j]ᵀ); mode 2: out = (x·w[j]ᵀ) ·
// σ(g[how]). x: [rows, k]; out: [rows, n] (must not overlap x): a chunk of rows starting at
// row0 of the whole matmul, whose global row row0 + r indexes the gate g (not offset).
template <typename W>
static __device__ void lin_gemv(const float* x, const W* w, const float* g, float* out, int rows, int k, int n,
                                int mode, int how, long long glen, int vec, long long row0) {
    const long long j = ((long long)blockIdx.x * blockDim.x + threadIdx.x) >> 5;
    const int lane = threadIdx.x & 31;
    if (j >= n) return;  // warp-uniform
    float a[LIN_ROWS], b[LIN_ROWS];
#pragma unroll
    for (int r = 0; r < LIN_ROWS; r++) a[r] = b[r] = 0.0f;
    lin_dot_rows(x, w, j * k, rows, k, vec, lane, a);
    if (mode == 1) lin_dot_rows(x, w, (j + n) * k, rows, k, vec, lane, b);
#pragma unroll
    for (int r = 0; r < LIN_ROWS; r++) {
        if (r < rows) {
            const float y = lin_warp_sum(a[r]);
            const float u = mode == 1 ? lin_warp_sum(b[r]) : 0.0f;
            if (lane == 0) {
                float v = y;
                if (mode == 1) v = (y / (1.0f + expf(-y))) * u;
                else if (mode == 2) v = y * lin_sigmoid(g[lin_gate_index(row0 + r, j, n, how, glen)]);
                out[(long long)r * n + j] = v;
            }
        }
    }
}

extern "C" __global__ void qgc_gemv_f32(const float* x, const float* w, const float* g, float* out, int rows, int k,
                                        int n, int mode, int how, long long glen, int vec, long long row0) {
    lin_gemv<float>(x, w, g, out, rows, k, n, mode, how, glen, vec, row0);
}
extern "C" __global__ void qgc_gemv_bf16(const float* x, const unsigned short* w, const float* g, float* out, int rows,
                                         int k, int n, int mode, int how, long long glen, int vec, long long row0) {
    lin_gemv<unsigned short>(x, w, g, out, rows, k, n, mode, how, glen, vec, row0);
}

// SwiGLU epilogue: y2: [rows, 2n] (the GEMM of x with the stacked [2n, k] weight) ->
// out [rows, n] = silu(y2[r, j]) · y2[r, n + j]. One thread per output element.
extern "C" __global__ void qgc_swiglu(const float* y2, float* out, int rows, int n) {
    const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (long long)rows * n) return;
    const long long r = i / n, j = i % n;
    const float a = y2[r * 2 * n + j], u = y2[r * 2 * n + n + j];
    out[i] = (a / (1.0f + expf(-a))) * u;
}

// Sigmoid-gate epilogue in place: y [rows, n] *= σ(g[how]). One thread per element.
extern "C" __global__ void qgc_sigmoid_gate(float* y, const float* g, int rows, int n, int how, long long glen) {
    const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (long long)rows * n) return;
    y[i] = y[i] * lin_sigmoid(g[lin_gate_index(i / n, i % n, n, how, glen)]);
}

// Sigmoid-gate prologue: xs [rows, k] = x ⊙ σ(g[how]) (indexed over x; may be x in place).
extern "C" __global__ void qgc_sigmoid_gate_prologue(const float* x, const float* g, float* xs, int rows, int k,
                                                     int how, long long glen) {
    const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (long long)rows * k) return;
    xs[i] = x[i] * lin_sigmoid(g[lin_gate_index(i / k, i % k, k, how, glen)]);
}
