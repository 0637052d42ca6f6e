// NeoX (rotate-half) RoPE over x [tokens, heads, d] with HF's partial/odd rotary-dim rule, and
// the per-head RMSNorm fused in front of it (rms_norm_rope). One block per token
// (blockDim.x a multiple of 32): the block first builds the token's cos/sin table in dynamic
// shared memory (2·half floats), then each warp takes heads h ≡ warp (mod warps).
//
// Angles as qgc_ir::interp::attention::{inv_freq, rope}: inv_freq[i] = 1 / powf(base, 2i/rot)
// in f32, the power evaluated in f64 as exp2(e·log2 base) (error ~1e-15 relative) and rounded
// once, i.e. a correctly rounded powf (glibc's powf, which the interpreter calls, is within
// 0.82 ulp); angle = f32(pos) · inv_freq[i] in f32, then
// precise sincosf. Negative positions (padding slots) rotate backwards, as in the interpreter.
// The rotation is computed without FMA contraction (x0·c − x1·s with separately rounded
// products), exactly as the interpreter and CPU kernels do.
//
// Every lane reads and writes only its own elements of a head (pairs i ≡ lane mod 32 and
// pass-through dims 2·half + lane + 32k), so out may be x's buffer (in place).

template <bool NORM>
__device__ __forceinline__ void qgc_rope_token(const float* x, const float* w, const int* pos, float* out,
                                               int tokens, int heads, int d, int half, float base, int rot,
                                               float eps, float bias) {
    extern __shared__ float qgc_rope_tab[];  // [0, half): cos, [half, 2·half): sin
    const long long t = blockIdx.x;
    const bool live = t < tokens;
    if (live) {
        const float p = (float)pos[t];
        for (int i = threadIdx.x; i < half; i += blockDim.x) {
            const float e = (float)(2 * i) / (float)rot;
            const float pw = (float)exp2((double)e * log2((double)base));
            const float a = p * (1.0f / pw);
            float s, c;
            sincosf(a, &s, &c);
            qgc_rope_tab[i] = c;
            qgc_rope_tab[half + i] = s;
        }
    }
    __syncthreads();
    if (!live) {
        return;  // after the only barrier: nothing below synchronises the block
    }
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
    const int rotated = 2 * half;
    for (int h = warp; h < heads; h += warps) {
        const long long hb = (t * heads + h) * (long long)d;
        float inv = 1.0f;
        if (NORM) {
            float ss = 0.0f;
            for (int i = lane; i < half; i += 32) {
                const float a = x[hb + i], b = x[hb + half + i];
                ss += a * a;
                ss += b * b;
            }
            for (int j = rotated + lane; j < d; j += 32) {
                const float a = x[hb + j];
                ss += a * a;
            }
            ss = qgc_warp_sum(ss);
            inv = 1.0f / sqrtf(ss / (float)d + eps);
        }
        for (int i = lane; i < half; i += 32) {
            float x0 = x[hb + i], x1 = x[hb + half + i];
            if (NORM) {
                x0 = x0 * inv * (w[i] + bias);
                x1 = x1 * inv * (w[half + i] + bias);
            }
            const float c = qgc_rope_tab[i], s = qgc_rope_tab[half + i];
            out[hb + i] = __fsub_rn(__fmul_rn(x0, c), __fmul_rn(x1, s));
            out[hb + half + i] = __fadd_rn(__fmul_rn(x1, c), __fmul_rn(x0, s));
        }
        for (int j = rotated + lane; j < d; j += 32) {
            float v = x[hb + j];
            if (NORM) {
                v = v * inv * (w[j] + bias);
            }
            out[hb + j] = v;
        }
    }
}

// rope: x, out [tokens, heads, d]; pos [tokens] (i32). Grid: tokens blocks; dynamic shared
// 2·half floats. half = ceil(rot/2), 2·half <= d; base = (float)theta.
extern "C" __global__ void qgc_rope(const float* x, const int* pos, float* out, int tokens, int heads, int d,
                                    int half, float base, int rot) {
    qgc_rope_token<false>(x, nullptr, pos, out, tokens, heads, d, half, base, rot, 0.0f, 0.0f);
}

// rms_norm_rope: per head h ← h · rsqrt(mean(h²) + eps) · (w + bias), then rope as qgc_rope.
// w [d] (f32); bias 1 for a zero-centred weight, else 0.
extern "C" __global__ void qgc_rms_norm_rope(const float* x, const float* w, const int* pos, float* out, int tokens,
                                             int heads, int d, int half, float base, int rot, float eps,
                                             float bias) {
    qgc_rope_token<true>(x, w, pos, out, tokens, heads, d, half, base, rot, eps, bias);
}
