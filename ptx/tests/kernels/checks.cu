// Kernels for the interpreter's own tests (ptx/tests/kernels.rs). The .ptx beside this file is
// what NVRTC 13.0.88 writes for it (compute_90); regenerate with scripts/ptx-fixtures.
#include <cuda_bf16.h>

// Writes one past the end when i == n: memcheck must catch it.
extern "C" __global__ void oob_write(float* out, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i <= n) out[i] = 1.0f;
}

// A block sum through shared memory; `sync` chooses whether the barrier is there.
extern "C" __global__ void block_sum(const float* x, float* out, int sync) {
    __shared__ float s[64];
    s[threadIdx.x] = x[threadIdx.x];
    if (sync) __syncthreads();
    if (threadIdx.x == 0) {
        float a = 0.0f;
        for (int i = 0; i < 64; i++) a += s[i];
        out[0] = a;
    }
}

// Warp collectives: a butterfly sum, a shift down, an indexed broadcast and a ballot.
extern "C" __global__ void warp_ops(const float* x, float* sum, float* down, float* bcast, unsigned* ballot) {
    int l = threadIdx.x;
    float v = x[l];
    float s = v;
    for (int o = 16; o > 0; o /= 2) s += __shfl_xor_sync(0xffffffffu, s, o);
    sum[l] = s;
    down[l] = __shfl_down_sync(0xffffffffu, v, 3);
    bcast[l] = __shfl_sync(0xffffffffu, v, 5);
    ballot[l] = __ballot_sync(0xffffffffu, v > 0.0f);
}

// Only half the warp reaches a full-mask shuffle: undefined behaviour, reported.
extern "C" __global__ void divergent_shfl(float* x) {
    float v = x[threadIdx.x];
    if (threadIdx.x < 16) v += __shfl_xor_sync(0xffffffffu, v, 1);
    x[threadIdx.x] = v;
}

// Half the warp waits at a shuffle, the other half at a barrier: a deadlock.
extern "C" __global__ void deadlock(float* x) {
    float v = x[threadIdx.x];
    if (threadIdx.x < 16) {
        v = __shfl_sync(0xffffffffu, v, 0);
    } else {
        __syncthreads();
    }
    x[threadIdx.x] = v;
}

// Precise libm-style math as NVRTC lowers it (expf: fma.rm + ex2.approx; logf; tanhf; sinf).
extern "C" __global__ void math(const float* x, float* e, float* l, float* t, float* s, float* r, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) {
        float v = x[i];
        e[i] = expf(v);
        l[i] = logf(fabsf(v) + 1.0f);
        t[i] = tanhf(v);
        s[i] = sinf(v);
        r[i] = rsqrtf(fabsf(v) + 1.0f);
    }
}

// bf16 round trips and packing order.
extern "C" __global__ void bf16_ops(const float* x, unsigned short* b, float* back, unsigned* packed, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) {
        __nv_bfloat16 h = __float2bfloat16_rn(x[i]);
        b[i] = __bfloat16_as_ushort(h);
        back[i] = __bfloat162float(h);
        __nv_bfloat162 p = __floats2bfloat162_rn(x[i], -x[i]);
        packed[i] = *reinterpret_cast<unsigned*>(&p);
    }
}

// Integer and conversion corner cases.
extern "C" __global__ void int_ops(const int* a, const int* b, int* o, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) {
        int x = a[i], y = b[i];
        o[8 * i + 0] = x / (y == 0 ? 1 : y);
        o[8 * i + 1] = x % (y == 0 ? 1 : y);
        o[8 * i + 2] = x >> 3;
        o[8 * i + 3] = (int)((unsigned)x >> 3);
        o[8 * i + 4] = __mulhi(x, y);
        o[8 * i + 5] = __float2int_rn((float)x / 2.0f);
        o[8 * i + 6] = __popc(x) + __clz(x);
        o[8 * i + 7] = min(x, y) * 3 + max(x, y);
    }
}
