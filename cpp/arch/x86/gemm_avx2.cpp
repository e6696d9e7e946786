// gemm_avx2.cpp — W4A8 tile kernel for AVX2 (no VNNI), see gemm.h.
//
// Same layout and epilogue as the AVX-512 kernel, in two halves of 8 rows: per 4 k-steps the 16
// bytes of a half-tile's nibbles are widened to 32 u8 weights; vpmaddubsw multiplies them by the
// broadcast int8 activations (u8 × s8 → pairs summed to s16: at most 2·15·127 = 3810, never
// saturating) and vpmaddwd with ones widens the pairs to the 8 int32 lane sums.
#include <immintrin.h>

#include "gemm.h"

namespace {

template <int MR>
void tile(const quellm::GemmW4A8Params& p, int64_t t, int64_t m0, const int32_t* asum) {
    const quellm::W4Packed& w = *p.w;
    const int64_t K = w.K, KQ = K / 4, G = w.G, NG = K / G;
    const uint8_t* wt = w.codes.data() + t * KQ * 32;
    const __m256i lo4 = _mm256_set1_epi16(0x000f), hi4 = _mm256_set1_epi16(0x0f00), ones = _mm256_set1_epi16(1);
    const int64_t n0 = t * 16;
    for (int half = 0; half < 2; ++half) {
        __m256 y[MR];
        for (int r = 0; r < MR; ++r) y[r] = _mm256_setzero_ps();
        for (int64_t g = 0; g < NG; ++g) {
            __m256i acc[MR];
            for (int r = 0; r < MR; ++r) acc[r] = _mm256_setzero_si256();
            for (int64_t kq = g * G / 4; kq < (g + 1) * G / 4; ++kq) {
                const __m256i b16 = _mm256_cvtepu8_epi16(
                    _mm_loadu_si128(reinterpret_cast<const __m128i*>(wt + kq * 32 + half * 16)));
                const __m256i wv = _mm256_or_si256(_mm256_and_si256(b16, lo4), _mm256_and_si256(_mm256_slli_epi16(b16, 4), hi4));
                for (int r = 0; r < MR; ++r) {
                    int32_t a4;
                    __builtin_memcpy(&a4, p.qa + (m0 + r) * K + kq * 4, 4);
                    const __m256i prod = _mm256_maddubs_epi16(wv, _mm256_set1_epi32(a4));
                    acc[r] = _mm256_add_epi32(acc[r], _mm256_madd_epi16(prod, ones));
                }
            }
            const __m256 sw = _mm256_loadu_ps(w.scales.data() + (t * NG + g) * 16 + half * 8);
            for (int r = 0; r < MR; ++r) {
                const __m256i corr = _mm256_set1_epi32(8 * asum[(m0 + r) * NG + g]);
                const __m256 a = _mm256_cvtepi32_ps(_mm256_sub_epi32(acc[r], corr));
                const __m256 s = _mm256_mul_ps(_mm256_set1_ps(p.sa[m0 + r]), sw);
                y[r] = _mm256_fmadd_ps(a, s, y[r]);
            }
        }
        const int64_t nb = n0 + half * 8;
        const int valid = int(w.N - nb < 8 ? (w.N - nb > 0 ? w.N - nb : 0) : 8);
        if (valid == 0) break;
        alignas(32) float buf[8];
        for (int r = 0; r < MR; ++r) {
            _mm256_store_ps(buf, y[r]);
            float* out = p.y + (m0 + r) * w.N + nb;
            for (int j = 0; j < valid; ++j) out[j] = p.bias ? buf[j] + p.bias[nb + j] : buf[j];
        }
    }
}

}  // namespace

namespace quellm::x86 {
void gemm_w4a8_tile_avx2(const GemmW4A8Params& p, int64_t t, int64_t m0, int mr, const int32_t* asum) {
    switch (mr) {
        case 4: tile<4>(p, t, m0, asum); break;
        case 3: tile<3>(p, t, m0, asum); break;
        case 2: tile<2>(p, t, m0, asum); break;
        default: tile<1>(p, t, m0, asum); break;
    }
}
}  // namespace quellm::x86
