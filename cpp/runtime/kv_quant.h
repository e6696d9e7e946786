// kv_quant.h — the KV cache's number format: f32, or asymmetric int8 / int4 per (token, KV head)
// group of head_dim values with a clip ratio (QuaRot's KV quantizer), optionally after a
// Walsh–Hadamard rotation of each head (keys and queries rotated alike, so scores are unchanged
// in exact arithmetic; values rotated before caching and rotated back after the weighted sum).
//
// Quantizer (the numpy twin is quellm.formats.IntFormat(bits, sym=False, clip=clip) over rows of
// head_dim, float32 arithmetic in the same order):
//   lo = clip · min(min x, 0), hi = clip · max(max x, 0)  (lo = −1, hi = 1 when both are 0)
//   s = (hi − lo) / (2^b − 1) (1 if 0), z = RNE(−lo / s), q = clamp(RNE(x / s) + z, 0, 2^b − 1)
//   x̂ = (q − z) · s.   int4 codes: element 2i in the low nibble of byte i.
#pragma once

#include <cmath>
#include <cstdint>

#include "common.h"

namespace quellm {

struct KvQuant {
    int bits = 0;           // 0: f32 cache; 8 or 4
    float clip = 1.0f;
    bool hadamard = false;  // rotate heads by H_hd / sqrt(hd) (hd a power of two)
    bool operator==(const KvQuant& o) const { return bits == o.bits && clip == o.clip && hadamard == o.hadamard; }
    int64_t row_bytes(int64_t n) const { return bits == 4 ? n / 2 : n; }
};

// x (n) -> codes, scale, zero. Returns false (codes unspecified) if x has a NaN or infinity.
QUELLM_HD QUELLM_INLINE bool kv_quant_row(const float* x, int64_t n, int bits, float clip, uint8_t* codes,
                                          float* scale, float* zero) {
    float mn = 0.0f, mx = 0.0f;
    bool finite = true;
    for (int64_t i = 0; i < n; ++i) {
        finite = finite && x[i] - x[i] == 0.0f;  // false for NaN and ±inf
        mn = fminf(mn, x[i]);
        mx = fmaxf(mx, x[i]);
    }
    if (!finite) return false;
    float lo = clip * mn, hi = clip * mx;
    if (lo == 0.0f && hi == 0.0f) {
        lo = -1.0f;
        hi = 1.0f;
    }
    const float qmax = float((1 << bits) - 1);
    float s = (hi - lo) / qmax;
    if (s == 0.0f) s = 1.0f;
    const float z = nearbyintf(-lo / s);
    for (int64_t i = 0; i < n; ++i) {
        const float q = fminf(qmax, fmaxf(0.0f, nearbyintf(x[i] / s) + z));
        if (bits == 8) {
            codes[i] = uint8_t(q);
        } else if (i % 2 == 0) {
            codes[i / 2] = uint8_t(q);
        } else {
            codes[i / 2] = uint8_t(codes[i / 2] | (uint8_t(q) << 4));
        }
    }
    *scale = s;
    *zero = z;
    return true;
}

QUELLM_HD QUELLM_INLINE void kv_dequant_row(const uint8_t* codes, int64_t n, int bits, float scale, float zero,
                                            float* out) {
    for (int64_t i = 0; i < n; ++i) {
        const int q = bits == 8 ? codes[i] : (i % 2 ? codes[i / 2] >> 4 : codes[i / 2] & 15);
        out[i] = (float(q) - zero) * scale;
    }
}

}  // namespace quellm
