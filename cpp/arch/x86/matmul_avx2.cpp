// matmul_avx2.cpp — AVX2 instantiation of the f32 dot-product tile (matmul_simd.h).
#include <immintrin.h>

#include "matmul_simd.h"

namespace {
struct V8 {
    using reg = __m256;
    static constexpr int W = 8;
    static reg load(const float* p) { return _mm256_loadu_ps(p); }
    static __m256i lanes(int n) {  // the first n lanes set
        alignas(32) static constexpr int32_t ramp[8] = {0, 1, 2, 3, 4, 5, 6, 7};
        return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_load_si256(reinterpret_cast<const __m256i*>(ramp)));
    }
    static reg load_tail(const float* p, int n) { return _mm256_maskload_ps(p, lanes(n)); }
    static void store_n(float* p, reg v, int n) {
        if (n >= W) _mm256_storeu_ps(p, v);
        else _mm256_maskstore_ps(p, lanes(n), v);
    }
    static reg add(reg a, reg b) { return _mm256_add_ps(a, b); }
    static reg bcast(const float* p) { return _mm256_broadcast_ss(p); }
    static reg fmadd(reg a, reg b, reg c) { return _mm256_fmadd_ps(a, b, c); }
    static reg zero() { return _mm256_setzero_ps(); }
    static float reduce(reg v) {
        __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
        s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        s = _mm_add_ss(s, _mm_movehdup_ps(s));
        return _mm_cvtss_f32(s);
    }
};

// Full 16-row strips 8 k at a time: two 8 × 8 transposes in registers (unpack, shuffle, lane swap).
template <>
void pack_strip<V8>(const float* rows, int64_t ld, int m, int64_t k0, int64_t k1, float* out) {
    int64_t k = k0;
    if (m == 16) {
        for (; k + 8 <= k1; k += 8, out += 128)
            for (int h = 0; h < 2; ++h) {
                __m256 r[8], t[8];
                for (int i = 0; i < 8; ++i) r[i] = _mm256_loadu_ps(rows + (h * 8 + i) * ld + k);
                for (int i = 0; i < 8; i += 2) {  // t[i] = r_i, r_i+1 interleaved: lanes 0,1 / 4,5 and 2,3 / 6,7
                    t[i] = _mm256_unpacklo_ps(r[i], r[i + 1]);
                    t[i + 1] = _mm256_unpackhi_ps(r[i], r[i + 1]);
                }
                for (int i = 0; i < 8; i += 4) {  // r: k = 0|4, 1|5 of rows i..i+3 (t[i], t[i+2]); 2|6, 3|7
                    r[i] = _mm256_shuffle_ps(t[i], t[i + 2], 0x44);
                    r[i + 1] = _mm256_shuffle_ps(t[i], t[i + 2], 0xEE);
                    r[i + 2] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0x44);
                    r[i + 3] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0xEE);
                }
                for (int j = 0; j < 4; ++j) {  // rows 0-3 | rows 4-7 of k = j and k = j + 4
                    _mm256_storeu_ps(out + j * 16 + h * 8, _mm256_permute2f128_ps(r[j], r[j + 4], 0x20));
                    _mm256_storeu_ps(out + (j + 4) * 16 + h * 8, _mm256_permute2f128_ps(r[j], r[j + 4], 0x31));
                }
            }
    }
    if (k < k1) pack_kmajor<16>(rows, ld, m, k, k1, out);
}

// The packed k loop with 12 named accumulators. gcc 12 -O3 keeps the generic version's acc[6][2]
// in memory here (15 of the 16 ymm registers are live) and stores all 12 on every k: 3x slower.
template <>
void micro_acc<V8, 6>(const float* ap, const float* bp, int64_t kc, __m256 (&acc)[6][2]) {
    __m256 c00 = _mm256_setzero_ps(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00;
    __m256 c30 = c00, c31 = c00, c40 = c00, c41 = c00, c50 = c00, c51 = c00;
    for (int64_t k = 0; k < kc; ++k, ap += 6, bp += 16) {
        const __m256 b0 = _mm256_loadu_ps(bp), b1 = _mm256_loadu_ps(bp + 8);
#define QUELLM_ROW(r)                                   \
    {                                                   \
        const __m256 a = _mm256_broadcast_ss(ap + r);   \
        c##r##0 = _mm256_fmadd_ps(a, b0, c##r##0);      \
        c##r##1 = _mm256_fmadd_ps(a, b1, c##r##1);      \
    }
        QUELLM_ROW(0) QUELLM_ROW(1) QUELLM_ROW(2) QUELLM_ROW(3) QUELLM_ROW(4) QUELLM_ROW(5)
#undef QUELLM_ROW
    }
    acc[0][0] = c00, acc[0][1] = c01, acc[1][0] = c10, acc[1][1] = c11, acc[2][0] = c20, acc[2][1] = c21;
    acc[3][0] = c30, acc[3][1] = c31, acc[4][0] = c40, acc[4][1] = c41, acc[5][0] = c50, acc[5][1] = c51;
}
}  // namespace

namespace quellm::x86 {
void matmul_tile_avx2(const MatmulParams& p, const MatmulTile& t) {
    tile_any<V8>(p, t);
}
// MR = 6: 12 accumulators + 2 W vectors + a broadcast of the 16 registers
void matmul_packed_avx2(const MatmulParams& p, int64_t n0, int64_t n1) { matmul_packed<V8, 6>(p, n0, n1); }
void gemm_wf_packed_avx2(const GemmWfParams& p, int64_t n0, int64_t n1) {
    gemm_wf_packed<V8, 6>(p, n0, n1, wf_dequant_segment_avx2);
}
}  // namespace quellm::x86
