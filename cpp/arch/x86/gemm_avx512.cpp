// gemm_avx512.cpp — W4A8 tile kernel with AVX-512 VNNI (vpdpbusd), see gemm.h.
//
// One call: rows m0..m0+mr-1 (mr <= 4) of the int8 activations against one 16-row weight tile.
// Per 4 k-steps: 32 bytes of nibbles are widened to 64 bytes (16 lanes × 4 weights, u8 0..15)
// and fed to one vpdpbusd per activation row, whose 4 int8 activations are broadcast to every
// lane. At each group end: y += float(acc − 8·Σqa) · (sa · sw), the same fma as the reference.
#include <immintrin.h>

#include "gemm.h"

namespace {

template <int MR>
void tile(const quellm::GemmW4A8Params& p, int64_t t, int64_t m0, const int32_t* asum) {
    const quellm::W4Packed& w = *p.w;
    const int64_t K = w.K, KQ = K / 4, G = w.G, NG = K / G;
    const uint8_t* wt = w.codes.data() + t * KQ * 32;
    const __m512i lo4 = _mm512_set1_epi16(0x000f), hi4 = _mm512_set1_epi16(0x0f00);
    __m512 y[MR];
    for (int r = 0; r < MR; ++r) y[r] = _mm512_setzero_ps();
    for (int64_t g = 0; g < NG; ++g) {
        __m512i acc[MR];
        for (int r = 0; r < MR; ++r) acc[r] = _mm512_setzero_si512();
        for (int64_t kq = g * G / 4; kq < (g + 1) * G / 4; ++kq) {
            // 16 rows × 2 bytes -> 16 rows × 4 bytes: each u16 0xHL (nibbles b a, d c) becomes
            // bytes (a, b) then (c, d): low nibble first, matching k order.
            const __m512i b16 = _mm512_cvtepu8_epi16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(wt + kq * 32)));
            const __m512i wv = _mm512_or_si512(_mm512_and_si512(b16, lo4), _mm512_and_si512(_mm512_slli_epi16(b16, 4), hi4));
            for (int r = 0; r < MR; ++r) {
                int32_t a4;
                __builtin_memcpy(&a4, p.qa + (m0 + r) * K + kq * 4, 4);
                acc[r] = _mm512_dpbusd_epi32(acc[r], wv, _mm512_set1_epi32(a4));
            }
        }
        const __m512 sw = _mm512_loadu_ps(w.scales.data() + (t * NG + g) * 16);
        for (int r = 0; r < MR; ++r) {
            const __m512i corr = _mm512_set1_epi32(8 * asum[(m0 + r) * NG + g]);
            const __m512 a = _mm512_cvtepi32_ps(_mm512_sub_epi32(acc[r], corr));
            const __m512 s = _mm512_mul_ps(_mm512_set1_ps(p.sa[m0 + r]), sw);
            y[r] = _mm512_fmadd_ps(a, s, y[r]);
        }
    }
    const int64_t n0 = t * 16;
    const int valid = int(w.N - n0 < 16 ? w.N - n0 : 16);
    const __mmask16 mask = __mmask16((1u << valid) - 1);
    const __m512 b = p.bias ? _mm512_maskz_loadu_ps(mask, p.bias + n0) : _mm512_setzero_ps();
    for (int r = 0; r < MR; ++r) {
        const __m512 out = p.bias ? _mm512_add_ps(y[r], b) : y[r];
        _mm512_mask_storeu_ps(p.y + (m0 + r) * w.N + n0, mask, out);
    }
}

}  // namespace

namespace quellm::x86 {
void gemm_w4a8_tile_avx512(const GemmW4A8Params& p, int64_t t, int64_t m0, int mr, const int32_t* asum) {
    switch (mr) {
        case 4: tile<4>(p, t, m0, asum); break;
        case 3: tile<3>(p, t, m0, asum); break;
        case 2: tile<2>(p, t, m0, asum); break;
        default: tile<1>(p, t, m0, asum); break;
    }
}
}  // namespace quellm::x86
