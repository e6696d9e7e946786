// fwht_avx512.cpp — AVX-512 (16 lanes) instantiation of the FWHT row kernel in fwht_simd.h.
#include <immintrin.h>

#include "fwht.h"

namespace {
struct V16 {
    using reg = __m512;
    static constexpr int G = 4;  // 32 registers: radix-16 passes
    static constexpr int MIX_MR = 12;  // H rows per table-mixing tile: MR x 2 accumulators
    static constexpr int MIX_DENSE_MR = 6;  // H rows per small-m mixing tile: MR x 4 accumulators
    static constexpr int W = 16;
    static reg load(const float* p) { return _mm512_loadu_ps(p); }
    static void store(float* p, reg v) { _mm512_storeu_ps(p, v); }
    static reg add(reg a, reg b) { return _mm512_add_ps(a, b); }
    static reg sub(reg a, reg b) { return _mm512_sub_ps(a, b); }
    static reg mul(reg a, reg b) { return _mm512_mul_ps(a, b); }
    static reg fmadd(reg a, reg b, reg c) { return _mm512_fmadd_ps(a, b, c); }
    static reg set1(float x) { return _mm512_set1_ps(x); }
    static reg zero() { return _mm512_setzero_ps(); }
    // Stage with stride h inside the register, `s` being the register with partners swapped:
    // lanes with bit h clear get v + s (= a + b), set get s - v (= a - b), as one multiply-add by
    // ±1 (exact, so the single rounding is that of the add or subtract).
    static reg stage(reg v, reg s, __mmask16 hi) {
        return _mm512_fmadd_ps(v, _mm512_mask_blend_ps(hi, _mm512_set1_ps(1.0f), _mm512_set1_ps(-1.0f)), s);
    }
    // (The masked forms with an all-ones mask are the plain instructions; they spare gcc 12's
    // headers a spurious -Wuninitialized on their _mm512_undefined_ps.)
    static reg in_vector(reg v) {
        v = stage(v, _mm512_mask_permute_ps(v, 0xFFFF, v, 0xB1), 0xAAAA);             // h = 1
        v = stage(v, _mm512_mask_permute_ps(v, 0xFFFF, v, 0x4E), 0xCCCC);             // h = 2
        v = stage(v, _mm512_mask_shuffle_f32x4(v, 0xFFFF, v, v, 0xB1), 0xF0F0);       // h = 4
        v = stage(v, _mm512_mask_shuffle_f32x4(v, 0xFFFF, v, v, 0x4E), 0xFF00);       // h = 8
        return v;
    }
};
}  // namespace

#include "fwht_simd.h"

namespace quellm::x86 {
void fwht_rows_avx512(const float* src, float* dst, int64_t nrows, int64_t p, int m, const FwhtMix& mx, float scale,
                     float* tmp, const FwhtPrefetch& next) {
    fwht_rows<V16>(src, dst, nrows, p, m, mx, scale, tmp, next);
}
}  // namespace quellm::x86
