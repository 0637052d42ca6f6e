// Depthwise causal conv1d with state (qgc_ir::interp::gdn::causal_conv1d); no activation.
//
// One thread per (batch row b, channel c). Over hist = state ++ x (oldest first), per channel:
// y[t] = Σ_j w[c, j] · hist[t + j] (j < K), and state' = the last K−1 entries of hist. The
// thread slides a right-aligned window of CONV_KMAX registers over hist (win[CONV_KMAX−1] the
// newest), with the weights right-aligned the same way and zero in the unused slots, so every
// register index is a constant. Each x element is read once before its y element is written
// (y may alias x), and the thread's state row is read before it is rewritten (state' may alias
// state).

#define CONV_KMAX 8

// x: [B, S, C]; w: [C, K] (f32); state_in, state_out: [B, C, K−1] (may be the same buffer);
// y: [B, S, C] (may be x).
extern "C" __global__ void qgc_conv1d(const float* x, const float* w, const float* state_in, float* y,
                                      float* state_out, int batch, int s, int channels, int kernel) {
    const long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= (long long)batch * channels) return;
    const int c = (int)(idx % channels);
    const long long b = idx / channels;
    const int keep = kernel - 1;
    float wr[CONV_KMAX], win[CONV_KMAX];
#pragma unroll
    for (int i = 0; i < CONV_KMAX; i++) {
        const int m = CONV_KMAX - 1 - i;  // distance from the newest slot
        wr[i] = m < kernel ? w[(long long)c * kernel + (kernel - 1 - m)] : 0.0f;
        // Before token 0 the newest entry of hist is state[keep − 1].
        win[i] = m < keep ? state_in[idx * keep + (keep - 1 - m)] : 0.0f;
    }
    for (int t = 0; t < s; t++) {
        const long long at = (b * s + t) * channels + c;
#pragma unroll
        for (int i = 0; i < CONV_KMAX - 1; i++) win[i] = win[i + 1];
        win[CONV_KMAX - 1] = x[at];
        float acc = 0.0f;
#pragma unroll
        for (int i = 0; i < CONV_KMAX; i++)
            if (CONV_KMAX - 1 - i < kernel) acc = fmaf(wr[i], win[i], acc);  // oldest tap first
        y[at] = acc;
    }
#pragma unroll
    for (int i = 0; i < CONV_KMAX; i++) {
        const int m = CONV_KMAX - 1 - i;
        if (m < keep) state_out[idx * keep + (keep - 1 - m)] = win[i];
    }
}
