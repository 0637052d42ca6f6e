// Helpers every qgc kernel source sees (prepended to each family's kernel.cu by NVRTC
// compilation): bf16 decode/encode by bits, -inf, warp reductions by butterfly shuffles and a
// block sum through a caller-provided shared array.
//
// Rules these helpers follow (the PTX interpreter checks them): every lane of a warp reaches
// every shuffle, every thread of a block reaches every barrier, and no two threads touch the
// same shared address between barriers unless both only read.

// -inf and +inf (NVRTC has no INFINITY).
#define QGC_NEG_INF __int_as_float(0xff800000)
#define QGC_POS_INF __int_as_float(0x7f800000)

// bf16 bits -> f32 (exact: bf16 is the high half of an f32).
__device__ __forceinline__ float qgc_bf16_to_f32(unsigned short bits) {
    return __uint_as_float(((unsigned)bits) << 16);
}

// f32 -> bf16 bits, round to nearest even; NaN stays a (quiet) NaN.
__device__ __forceinline__ unsigned short qgc_f32_to_bf16(float f) {
    unsigned u = __float_as_uint(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) {
        return (unsigned short)((u >> 16) | 0x40u);
    }
    u += 0x7fffu + ((u >> 16) & 1u);
    return (unsigned short)(u >> 16);
}

// Sum over the 32 lanes of a warp; every lane gets the same value (a butterfly adds the same
// pair on both sides, so the result does not depend on the lane).
__device__ __forceinline__ float qgc_warp_sum(float v) {
    for (int m = 16; m > 0; m >>= 1) {
        v += __shfl_xor_sync(0xffffffffu, v, m);
    }
    return v;
}

// Max over the 32 lanes of a warp (fmaxf: a NaN lane loses to a number); every lane gets it.
__device__ __forceinline__ float qgc_warp_max(float v) {
    for (int m = 16; m > 0; m >>= 1) {
        v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, m));
    }
    return v;
}

// Sum of `v` over the block (blockDim.x a multiple of 32, at most 1024); every thread gets the
// same value. `sh` is a __shared__ array of at least 33 floats, used only by this call: it
// starts with a barrier (so earlier uses of `sh` are finished), lane 0 of each warp writes its
// own slot, warp 0 reduces the slots and lane 0 publishes the total in slot 32. Every thread
// of the block must call it.
__device__ __forceinline__ float qgc_block_sum(float v, float* sh) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
    v = qgc_warp_sum(v);
    __syncthreads();
    if (lane == 0) {
        sh[warp] = v;
    }
    __syncthreads();
    if (warp == 0) {
        float t = lane < warps ? sh[lane] : 0.0f;
        t = qgc_warp_sum(t);
        if (lane == 0) {
            sh[32] = t;
        }
    }
    __syncthreads();
    return sh[32];
}
