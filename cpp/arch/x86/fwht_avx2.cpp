// fwht_avx2.cpp — AVX2 (8 lanes) instantiation of the FWHT row kernel in fwht_simd.h.
#include <immintrin.h>

#include "fwht.h"

namespace {
struct V8 {
    using reg = __m256;
    static constexpr int G = 3;  // 16 registers: radix-8 passes
    static constexpr int MIX_MR = 6;  // H rows per table-mixing tile: MR x 2 accumulators
    static constexpr int MIX_DENSE_MR = 2;  // H rows per small-m mixing tile: MR x 4 accumulators
    static constexpr int W = 8;
    static reg load(const float* p) { return _mm256_loadu_ps(p); }
    static void store(float* p, reg v) { _mm256_storeu_ps(p, v); }
    static reg add(reg a, reg b) { return _mm256_add_ps(a, b); }
    static reg sub(reg a, reg b) { return _mm256_sub_ps(a, b); }
    static reg mul(reg a, reg b) { return _mm256_mul_ps(a, b); }
    static reg fmadd(reg a, reg b, reg c) { return _mm256_fmadd_ps(a, b, c); }
    static reg set1(float x) { return _mm256_set1_ps(x); }
    static reg zero() { return _mm256_setzero_ps(); }
    // Lanes whose stride-h bit is clear get v + s, the others s - v (s = partners swapped), as one
    // multiply-add by ±1 (exact, so the single rounding is that of the add or subtract).
    template <int MASK>
    static reg stage(reg v, reg s) {
        return _mm256_fmadd_ps(v, _mm256_blend_ps(_mm256_set1_ps(1.0f), _mm256_set1_ps(-1.0f), MASK), s);
    }
    static reg in_vector(reg v) {
        v = stage<0xAA>(v, _mm256_permute_ps(v, 0xB1));         // h = 1
        v = stage<0xCC>(v, _mm256_permute_ps(v, 0x4E));         // h = 2
        v = stage<0xF0>(v, _mm256_permute2f128_ps(v, v, 0x01)); // h = 4
        return v;
    }
};
}  // namespace

#include "fwht_simd.h"

namespace quellm::x86 {
void fwht_rows_avx2(const float* src, float* dst, int64_t nrows, int64_t p, int m, const FwhtMix& mx, float scale,
                     float* tmp, const FwhtPrefetch& next) {
    fwht_rows<V8>(src, dst, nrows, p, m, mx, scale, tmp, next);
}
}  // namespace quellm::x86
