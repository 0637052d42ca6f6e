// Greedy argmax per row of logits [rows, vocab] -> i32 [rows], one block per row (blockDim.x a
// multiple of 32, at most 1024). Semantics of runtime::sampling::argmax: the smallest index of
// the largest non-NaN value (ties go to the first), 0 when every value is NaN (or vocab is 0).
// The reduction picks by the total order (value descending, index ascending) over non-NaN
// candidates, so the result does not depend on which thread saw which element.

#define QGC_ARGMAX_NONE 0x7fffffff

// Whether candidate (bv, bi) beats (av, ai); QGC_ARGMAX_NONE marks "no candidate".
__device__ __forceinline__ bool qgc_argmax_beats(float bv, int bi, float av, int ai) {
    return bi != QGC_ARGMAX_NONE && (ai == QGC_ARGMAX_NONE || bv > av || (bv == av && bi < ai));
}

// Reduces (v, i) over the warp; every lane gets the winner.
__device__ __forceinline__ void qgc_argmax_warp(float& v, int& i) {
    for (int m = 16; m > 0; m >>= 1) {
        const float ov = __shfl_xor_sync(0xffffffffu, v, m);
        const int oi = __shfl_xor_sync(0xffffffffu, i, m);
        if (qgc_argmax_beats(ov, oi, v, i)) {
            v = ov;
            i = oi;
        }
    }
}

// logits [rows, vocab] f32, out [rows] i32. Grid: rows blocks.
extern "C" __global__ void qgc_argmax(const float* logits, int* out, int rows, int vocab) {
    __shared__ float sv[32];
    __shared__ int si[32];
    const long long row = blockIdx.x;
    const bool live = row < rows;
    float bv = QGC_NEG_INF;
    int bi = QGC_ARGMAX_NONE;
    if (live) {
        const float* l = logits + row * (long long)vocab;
        for (int j = threadIdx.x; j < vocab; j += blockDim.x) {
            const float v = l[j];
            // Ascending j: strictly greater keeps the first of equal values; NaN never wins.
            if (v == v && (bi == QGC_ARGMAX_NONE || v > bv)) {
                bv = v;
                bi = j;
            }
        }
    }
    qgc_argmax_warp(bv, bi);
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
    if (lane == 0) {
        sv[warp] = bv;
        si[warp] = bi;
    }
    __syncthreads();
    if (warp == 0) {
        float v = QGC_NEG_INF;
        int i = QGC_ARGMAX_NONE;
        if (lane < warps) {
            v = sv[lane];
            i = si[lane];
        }
        qgc_argmax_warp(v, i);
        if (lane == 0 && live) {
            out[row] = i == QGC_ARGMAX_NONE ? 0 : i;
        }
    }
}
