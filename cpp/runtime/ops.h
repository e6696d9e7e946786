// ops.h — the small element-wise and row-wise operators of the runtime (scalar, f32).
//
// Dimension letters: T tokens, D model dim, H heads, Hd head dim.
#pragma once

#include <math.h>

#include <cmath>
#include <cstdint>

#include "common.h"

namespace quellm {

// Element-wise regions with less work than this run on one thread: an OpenMP barrier costs
// microseconds on a quiet machine, and a whole scheduler time slice when another process holds
// the other core (decode steps are full of small regions).
constexpr int64_t kParallelMin = int64_t(1) << 15;

// out[i] = x[i] · (mean(x²) + eps)^-½ · w[i]  (w may be null: weightless norm). Computed in f32
// with a double accumulator for the mean, as HF computes it in f32 (within 1e-6).
QUELLM_INLINE void rmsnorm(float* out, const float* x, const float* w, int64_t d, float eps) {
    double ss = 0.0;
    for (int64_t i = 0; i < d; ++i) ss += double(x[i]) * x[i];
    const float r = 1.0f / std::sqrt(float(ss / double(d)) + eps);
    for (int64_t i = 0; i < d; ++i) out[i] = x[i] * r * (w ? w[i] : 1.0f);
}

QUELLM_HD QUELLM_INLINE float silu(float x) { return x / (1.0f + expf(-x)); }

// softplus(v) = log(1 + e^v), identity above 20 (as PyTorch and mamba_ssm).
QUELLM_HD QUELLM_INLINE float softplus(float v) { return v > 20.0f ? v : log1pf(expf(v)); }

// ---- Mamba: the per-channel arithmetic shared by the CPU runtime and the CUDA kernels ----------

// One token of the causal depthwise conv for one channel. win[0:K-1] holds the previous K-1
// inputs (oldest first); x_new is appended, the K-tap dot product (+ bias) is returned before
// SiLU, and the window shifts so win[0:K-1] is ready for the next token.
QUELLM_HD QUELLM_INLINE float mamba_conv_token(float* win, const float* w, float bias, int64_t K, float x_new) {
    win[K - 1] = x_new;
    float acc = bias;
    for (int64_t k = 0; k < K; ++k) acc += w[k] * win[k];
    for (int64_t k = 0; k + 1 < K; ++k) win[k] = win[k + 1];
    return acc;
}

// One token of the selective scan for one channel with state hs[0:N] (updated in place):
//   hs[n] = exp(dt·A[n])·hs[n] + dt·B[n]·u;  returns Σ_n hs[n]·C[n] + Dskip·u  (before gating).
// dt is already softplus'd; B and C are read with a stride (they live in the x_proj output row).
QUELLM_HD QUELLM_INLINE float mamba_scan_token(float* hs, const float* A, int64_t N, float dt, float u,
                                               const float* B, const float* C, float Dskip) {
    float acc = 0.0f;
    const float du = dt * u;
    for (int64_t n = 0; n < N; ++n) {
        hs[n] = expf(dt * A[n]) * hs[n] + du * B[n];
        acc += hs[n] * C[n];
    }
    return acc + Dskip * u;
}

// In-place softmax of x[0:n], max-subtracted.
QUELLM_INLINE void softmax(float* x, int64_t n) {
    float mx = -INFINITY;
    for (int64_t i = 0; i < n; ++i) mx = x[i] > mx ? x[i] : mx;
    float sum = 0.0f;
    for (int64_t i = 0; i < n; ++i) {
        x[i] = std::exp(x[i] - mx);
        sum += x[i];
    }
    const float inv = 1.0f / sum;
    for (int64_t i = 0; i < n; ++i) x[i] *= inv;
}

// HF rotate-half RoPE on one head vector v[0:hd] at position pos:
//   v_i' = v_i cos θ_i − v_{i+hd/2} sin θ_i,  v_{i+hd/2}' = v_{i+hd/2} cos θ_i + v_i sin θ_i,
// θ_i = pos · inv_freq[i] in f32.
QUELLM_INLINE void rope_rotate_half(float* v, const float* inv_freq, int64_t hd, int64_t pos) {
    const int64_t half = hd / 2;
    for (int64_t i = 0; i < half; ++i) {
        const float ang = float(pos) * inv_freq[i];
        const float c = std::cos(ang), s = std::sin(ang);
        const float a = v[i], b = v[i + half];
        v[i] = a * c - b * s;
        v[i + half] = b * c + a * s;
    }
}

}  // namespace quellm
