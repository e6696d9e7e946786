// ops.h — the small element-wise and row-wise operators of the runtime (scalar, f32).
//
// Dimension letters: T tokens, D model dim, H heads, Hd head dim.
#pragma once

#include <cmath>
#include <cstdint>

#include "common.h"

namespace quellm {

// out[i] = x[i] · (mean(x²) + eps)^-½ · w[i]  (w may be null: weightless norm). Computed in f32
// with a double accumulator for the mean, as HF computes it in f32 (within 1e-6).
QUELLM_INLINE void rmsnorm(float* out, const float* x, const float* w, int64_t d, float eps) {
    double ss = 0.0;
    for (int64_t i = 0; i < d; ++i) ss += double(x[i]) * x[i];
    const float r = 1.0f / std::sqrt(float(ss / double(d)) + eps);
    for (int64_t i = 0; i < d; ++i) out[i] = x[i] * r * (w ? w[i] : 1.0f);
}

QUELLM_INLINE float silu(float x) { return x / (1.0f + std::exp(-x)); }

// softplus(v) = log(1 + e^v), identity above 20 (as PyTorch and mamba_ssm).
QUELLM_INLINE float softplus(float v) { return v > 20.0f ? v : std::log1p(std::exp(v)); }

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
