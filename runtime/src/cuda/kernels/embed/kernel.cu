// Token embedding: out[n] = table[ids[n]] (a row gather), table [vocab, hidden] f32 or bf16
// (widened exactly), ids [tokens] i32, out [tokens, hidden] f32. One block per token
// (grid-stride over tokens when the grid is smaller), threads over the row.
//
// An id outside 0..vocab never reads the table: its row of out is written as zeros and, when
// `bad` is not null, atomicMin(bad, n) records the smallest such flat index n (the host sets
// *bad = INT_MAX before the launch and reports the CPU path's "token id outside the
// vocabulary" error when it changed). Unlike the CPU kernel, which stops at the first bad id,
// the rows of the other ids are still written.

template <typename T>
__device__ __forceinline__ float qgc_embed_load(const T* p, long long i);

template <>
__device__ __forceinline__ float qgc_embed_load<float>(const float* p, long long i) {
    return p[i];
}

template <>
__device__ __forceinline__ float qgc_embed_load<unsigned short>(const unsigned short* p, long long i) {
    return qgc_bf16_to_f32(p[i]);
}

template <typename T>
__device__ __forceinline__ void qgc_embed_rows(const T* table, const int* ids, float* out, int* bad, int tokens,
                                               int vocab, int hidden) {
    for (long long n = blockIdx.x; n < tokens; n += gridDim.x) {
        const int id = ids[n];
        const bool ok = id >= 0 && id < vocab;
        if (!ok && bad != nullptr && threadIdx.x == 0) {
            atomicMin(bad, (int)n);
        }
        const long long src = (long long)(ok ? id : 0) * hidden;
        const long long dst = n * (long long)hidden;
        for (int j = threadIdx.x; j < hidden; j += blockDim.x) {
            out[dst + j] = ok ? qgc_embed_load<T>(table, src + j) : 0.0f;
        }
    }
}

// table [vocab, hidden] f32. Grid: min(tokens, 2^31-1) blocks.
extern "C" __global__ void qgc_embed_f32(const float* table, const int* ids, float* out, int* bad, int tokens,
                                         int vocab, int hidden) {
    qgc_embed_rows<float>(table, ids, out, bad, tokens, vocab, hidden);
}

// table [vocab, hidden] bf16 (as raw 16-bit words).
extern "C" __global__ void qgc_embed_bf16(const unsigned short* table, const int* ids, float* out, int* bad,
                                          int tokens, int vocab, int hidden) {
    qgc_embed_rows<unsigned short>(table, ids, out, bad, tokens, vocab, hidden);
}
