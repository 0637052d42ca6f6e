// Row-wise norms over rows of `d` f32 elements, one block per row (blockDim.x a multiple of
// 32, at most 1024): RMSNorm (plain or zero-centred weight), the residual add fused with it,
// the gated RMSNorm of Gated DeltaNet, and L2 normalisation. Sums of squares accumulate in f32
// per thread, then a shuffle + shared block sum. Every thread reads and writes only the
// elements j ≡ threadIdx.x (mod blockDim.x) of its row in both passes, so a result may be the
// buffer of any operand (in place).

// Which norm a template instance computes.
#define QGC_NORM_RMS 0
#define QGC_NORM_ADD_RMS 1
#define QGC_NORM_GATED 2
#define QGC_NORM_L2 3

// x·σ(x) in f32 as the CPU kernels compute it.
__device__ __forceinline__ float qgc_norm_silu(float z) {
    return z * (1.0f / (1.0f + expf(-z)));
}

// KIND: one of QGC_NORM_*. Operands not used by KIND are ignored (may be null).
//   x, out: [rows, d]; r (ADD_RMS), z (GATED): [rows, d]; w: [d] (not L2); sum (ADD_RMS): [rows, d].
//   bias: 1 for a zero-centred weight (1 + w), else 0.
template <int KIND>
__device__ __forceinline__ void qgc_norm_row(const float* x, const float* other, const float* w, float* sum,
                                             float* out, int rows, int d, float eps, float bias) {
    __shared__ float sh[33];
    const long long row = blockIdx.x;
    const bool live = row < rows;
    const long long base = row * (long long)d;
    float ss = 0.0f;
    if (live) {
        for (int j = threadIdx.x; j < d; j += blockDim.x) {
            float v = x[base + j];
            if (KIND == QGC_NORM_ADD_RMS) {
                v = v + other[base + j];
                sum[base + j] = v;
            }
            ss += v * v;
        }
    }
    const float total = qgc_block_sum(ss, sh);
    float inv;
    if (KIND == QGC_NORM_L2) {
        inv = 1.0f / sqrtf(total + eps);
    } else {
        inv = 1.0f / sqrtf(total / (float)d + eps);
    }
    if (live) {
        for (int j = threadIdx.x; j < d; j += blockDim.x) {
            const float v = KIND == QGC_NORM_ADD_RMS ? sum[base + j] : x[base + j];
            float y;
            if (KIND == QGC_NORM_L2) {
                y = v * inv;
            } else if (KIND == QGC_NORM_GATED) {
                y = w[j] * (v * inv) * qgc_norm_silu(other[base + j]);
            } else {
                y = v * inv * (w[j] + bias);
            }
            out[base + j] = y;
        }
    }
}

// out[r] = x[r] · rsqrt(mean(x[r]²) + eps) · (w + bias). Grid: rows blocks.
extern "C" __global__ void qgc_rms_norm(const float* x, const float* w, float* out, int rows, int d, float eps,
                                        float bias) {
    qgc_norm_row<QGC_NORM_RMS>(x, nullptr, w, nullptr, out, rows, d, eps, bias);
}

// sum[r] = x[r] + res[r]; out[r] = rms_norm(sum[r]) as qgc_rms_norm. Grid: rows blocks.
extern "C" __global__ void qgc_add_rms_norm(const float* x, const float* res, const float* w, float* sum,
                                            float* out, int rows, int d, float eps, float bias) {
    qgc_norm_row<QGC_NORM_ADD_RMS>(x, res, w, sum, out, rows, d, eps, bias);
}

// out[r] = w · (x[r] · rsqrt(mean(x[r]²) + eps)) · silu(z[r]). Grid: rows blocks.
extern "C" __global__ void qgc_gated_rms_norm(const float* x, const float* z, const float* w, float* out, int rows,
                                              int d, float eps) {
    qgc_norm_row<QGC_NORM_GATED>(x, z, w, nullptr, out, rows, d, eps, 0.0f);
}

// out[r] = x[r] · rsqrt(Σ x[r]² + eps). Grid: rows blocks.
extern "C" __global__ void qgc_l2_norm(const float* x, float* out, int rows, int d, float eps) {
    qgc_norm_row<QGC_NORM_L2>(x, nullptr, nullptr, nullptr, out, rows, d, eps, 0.0f);
}
