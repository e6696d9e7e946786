// runtime_ops.h — the per-element arithmetic of the GPU runtime (cuda/runtime_*.cu) as small
// __host__ __device__ helpers, so the CPU tests (cpp/tests/test_kernels.cpp) check exactly the
// code the kernels run against the CPU runtime's own functions (cpp/runtime/ops.h, kv_quant.h):
//
//   * rms_inv            — RMSNorm's 1/sqrt(mean(x²) + eps)            (vs rmsnorm)
//   * rope_pair          — one rotate-half pair at one position          (vs rope_rotate_half)
//   * fwht_butterfly     — one butterfly of the in-place Walsh–Hadamard transform of a head
//                          (vs fwht(): same ordering of the stages, so bit-identical in f32)
//   * kv_quant_params / kv_quant_code / kv_dequant — kv_quant_row split into the parts a
//                          block of threads computes in parallel (min/max reduction → scale
//                          and zero → codes); bit-identical to kv_quant_row / kv_dequant_row
//   * attn_window_start  — first key position a query attends to (sliding window as the CPU)
//   * SoftmaxAcc         — the running (max, sum) of an online softmax and the merge of two
//                          partial results (split-KV decode, tiled prefill)
//   * swiglu             — silu(g) · u
//
// Pure C++ (no CUDA headers): QUELLM_HD marks them __host__ __device__ under nvcc only.
#pragma once

#include <math.h>

#include <cstdint>

#include "common.h"

namespace quellm::rt {

// 1 / sqrt(ss / d + eps) for ss = Σ x² (accumulated by the caller in any order).
QUELLM_HD QUELLM_INLINE float rms_inv(float ss, int64_t d, float eps) {
    return 1.0f / sqrtf(ss / float(d) + eps);
}

// HF rotate-half RoPE of the pair (a = v[i], b = v[i + hd/2]) at position pos with frequency f:
// returns a' in *a and b' in *b (angle pos·f in f32, as rope_rotate_half).
QUELLM_HD QUELLM_INLINE void rope_pair(float* a, float* b, int64_t pos, float f) {
    const float ang = float(pos) * f;
    const float c = cosf(ang), s = sinf(ang);
    const float x = *a, y = *b;
    *a = x * c - y * s;
    *b = y * c + x * s;
}

// In-place unnormalised Walsh–Hadamard transform of v[0:n] (n a power of two) is the loop
//   for (h = 1; h < n; h *= 2) for each butterfly j in [0, n/2): fwht_butterfly(v, h, j)
// with the butterflies of one stage independent (a block runs them in parallel, then syncs).
// Butterfly j of stage h pairs i = (j / h)·2h + j % h with i + h: (a, b) → (a + b, a − b) —
// the Sylvester ordering of cpp/fwht.cpp (H_n = H_2 ⊗ H_{n/2}); the scale is applied after.
QUELLM_HD QUELLM_INLINE void fwht_butterfly(float* v, int64_t h, int64_t j) {
    const int64_t i = (j / h) * 2 * h + j % h;
    const float a = v[i], b = v[i + h];
    v[i] = a + b;
    v[i + h] = a - b;
}

// kv_quant_row (kv_quant.h) in parts. mn = min(min x, 0), mx = max(max x, 0) over the row
// (order-free, so a parallel reduction gives the same values); finite = no NaN / inf in the row.
struct KvQParams {
    float s, z;
};
QUELLM_HD QUELLM_INLINE KvQParams kv_quant_params(float mn, float mx, int bits, float clip) {
    float lo = clip * mn, hi = clip * mx;
    if (lo == 0.0f && hi == 0.0f) {
        lo = -1.0f;
        hi = 1.0f;
    }
    const float qmax = float((1 << bits) - 1);
    float s = (hi - lo) / qmax;
    if (s == 0.0f) s = 1.0f;
    return KvQParams{s, nearbyintf(-lo / s)};
}
// The code (0 .. 2^bits − 1) of one value.
QUELLM_HD QUELLM_INLINE uint8_t kv_quant_code(float x, KvQParams p, int bits) {
    const float qmax = float((1 << bits) - 1);
    return uint8_t(fminf(qmax, fmaxf(0.0f, nearbyintf(x / p.s) + p.z)));
}
// Element i of a packed row (int8: one byte per value; int4: element 2i in the low nibble).
QUELLM_HD QUELLM_INLINE float kv_dequant(const uint8_t* codes, int64_t i, int bits, float scale, float zero) {
    const int q = bits == 8 ? codes[i] : ((i & 1) ? codes[i >> 1] >> 4 : codes[i >> 1] & 15);
    return (float(q) - zero) * scale;
}

// First key position query position `pos` sees: 0, or pos − window + 1 with a sliding window.
QUELLM_HD QUELLM_INLINE int64_t attn_window_start(int64_t pos, int64_t window) {
    return window > 0 && pos - window + 1 > 0 ? pos - window + 1 : 0;
}

// Online softmax: m = running max of the scores seen, l = Σ exp(score − m). The weighted sum of
// values acc (kept by the caller) is rescaled by the factor `add` returns whenever m grows.
struct SoftmaxAcc {
    float m = -INFINITY;
    float l = 0.0f;
    // Add one score; returns the factor to multiply the old acc by, and *p the new weight.
    QUELLM_HD float add(float s, float* p) {
        const float mn = s > m ? s : m;
        const float alpha = m == -INFINITY ? 0.0f : expf(m - mn);
        *p = expf(s - mn);
        l = l * alpha + *p;
        m = mn;
        return alpha;
    }
    // Merge another partial result (m2, l2) whose acc is acc2: returns the factors (*fa for
    // this acc, *fb for acc2) so acc_merged = fa·acc + fb·acc2.
    QUELLM_HD void merge(float m2, float l2, float* fa, float* fb) {
        const float mn = m2 > m ? m2 : m;
        *fa = m == -INFINITY ? 0.0f : expf(m - mn);
        *fb = m2 == -INFINITY ? 0.0f : expf(m2 - mn);
        l = l * *fa + l2 * *fb;
        m = mn;
    }
};

QUELLM_HD QUELLM_INLINE float swiglu(float g, float u) { return g / (1.0f + expf(-g)) * u; }

}  // namespace quellm::rt
