// formats_avx2.cpp — AVX2 (8 lanes) instantiation of the format element kernels in
// formats_simd.h. Masks are all-ones lanes.
#include <immintrin.h>

#include <cstring>

#include "formats_simd.h"

namespace {
struct V8 {
    using iv = __m256i;
    using fv = __m256;
    using mk = __m256i;
    static constexpr int W = 8;
    static fv load(const float* p) { return _mm256_loadu_ps(p); }
    static iv loadbits(const float* p) { return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)); }
    static void store(float* p, fv v) { _mm256_storeu_ps(p, v); }
    static fv set1(float x) { return _mm256_set1_ps(x); }
    static iv set1i(int x) { return _mm256_set1_epi32(x); }
    static iv castfi(fv v) { return _mm256_castps_si256(v); }
    static fv cvt_i2f(iv v) { return _mm256_cvtepi32_ps(v); }
    static iv cvtt(fv v) { return _mm256_cvttps_epi32(v); }
    static fv rint(fv v) { return _mm256_round_ps(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
    static fv add_ps(fv a, fv b) { return _mm256_add_ps(a, b); }
    static fv sub_ps(fv a, fv b) { return _mm256_sub_ps(a, b); }
    static fv mul_ps(fv a, fv b) { return _mm256_mul_ps(a, b); }
    static fv div_ps(fv a, fv b) { return _mm256_div_ps(a, b); }
    static fv min_ps(fv a, fv b) { return _mm256_min_ps(a, b); }
    static fv max_ps(fv a, fv b) { return _mm256_max_ps(a, b); }
    static float hmin_ps(fv v) {
        alignas(32) float t[8];
        _mm256_store_ps(t, v);
        float r = t[0];
        for (int i = 1; i < 8; ++i) r = std::min(r, t[i]);
        return r;
    }
    static float hmax_ps(fv v) {
        alignas(32) float t[8];
        _mm256_store_ps(t, v);
        float r = t[0];
        for (int i = 1; i < 8; ++i) r = std::max(r, t[i]);
        return r;
    }
    static iv and_(iv a, iv b) { return _mm256_and_si256(a, b); }
    static iv or_(iv a, iv b) { return _mm256_or_si256(a, b); }
    static iv add(iv a, iv b) { return _mm256_add_epi32(a, b); }
    static iv sub(iv a, iv b) { return _mm256_sub_epi32(a, b); }
    static iv srli(iv a, int n) { return _mm256_srli_epi32(a, n); }
    static iv srlv(iv a, iv n) { return _mm256_srlv_epi32(a, n); }
    static iv sllv(iv a, iv n) { return _mm256_sllv_epi32(a, n); }
    static iv min_i32(iv a, iv b) { return _mm256_min_epi32(a, b); }
    static iv max_i32(iv a, iv b) { return _mm256_max_epi32(a, b); }
    static iv max_u32(iv a, iv b) { return _mm256_max_epu32(a, b); }
    static uint32_t hmax_u32(iv v) {
        alignas(32) uint32_t t[8];
        _mm256_store_si256(reinterpret_cast<__m256i*>(t), v);
        uint32_t r = t[0];
        for (int i = 1; i < 8; ++i) r = std::max(r, t[i]);
        return r;
    }
    static mk cmpeq(iv a, iv b) { return _mm256_cmpeq_epi32(a, b); }
    static mk cmpgt(iv a, iv b) { return _mm256_cmpgt_epi32(a, b); }
    static mk nonzero(iv a) { return mnot(_mm256_cmpeq_epi32(a, _mm256_setzero_si256())); }
    static mk mand(mk a, mk b) { return _mm256_and_si256(a, b); }
    static mk mor(mk a, mk b) { return _mm256_or_si256(a, b); }
    static mk mnot(mk a) { return _mm256_xor_si256(a, _mm256_set1_epi32(-1)); }
    static iv sel(mk m, iv a, iv b) { return _mm256_blendv_epi8(b, a, m); }  // m ? a : b
    static iv add_if(iv q, mk m) { return _mm256_sub_epi32(q, m); }           // m lanes are -1
    static void store_bytes(uint8_t* p, iv v) {
        // byte 0 of each 32-bit lane to the low 4 bytes of each 128-bit half, then join the halves
        const __m256i pick = _mm256_setr_epi8(0, 4, 8, 12, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
                                              0, 4, 8, 12, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1);
        const __m256i s = _mm256_shuffle_epi8(v, pick);
        const __m128i b = _mm_unpacklo_epi32(_mm256_castsi256_si128(s), _mm256_extracti128_si256(s, 1));
        _mm_storel_epi64(reinterpret_cast<__m128i*>(p), b);
    }
    static iv load_bytes(const uint8_t* p) { return _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p))); }
    static fv gather(const float* lut, iv idx) { return _mm256_i32gather_ps(lut, idx, 4); }
    static iv gather_i(const int32_t* lut, iv idx) { return _mm256_i32gather_epi32(reinterpret_cast<const int*>(lut), idx, 4); }
    static fv floor(fv v) { return _mm256_round_ps(v, _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC); }
    static fv abs_ps(fv v) { return _mm256_andnot_ps(_mm256_set1_ps(-0.0f), v); }
    static mk fcmpeq(fv a, fv b) { return _mm256_castps_si256(_mm256_cmp_ps(a, b, _CMP_EQ_OQ)); }
    static mk fcmpgt(fv a, fv b) { return _mm256_castps_si256(_mm256_cmp_ps(a, b, _CMP_GT_OQ)); }
    static mk fcmpge(fv a, fv b) { return _mm256_castps_si256(_mm256_cmp_ps(a, b, _CMP_GE_OQ)); }
    static iv fmask(mk m) { return m; }
    static iv andnot(iv a, iv b) { return _mm256_andnot_si256(a, b); }  // ~a & b
    static iv blendv(iv m, iv a, iv b) { return _mm256_blendv_epi8(b, a, m); }
    static fv blendv_f(iv m, fv a, fv b) { return _mm256_blendv_ps(b, a, _mm256_castsi256_ps(m)); }
    static iv swap_pairs_i(iv v) { return _mm256_shuffle_epi32(v, 0xB1); }
    static fv swap_pairs_f(fv v) { return _mm256_permute_ps(v, 0xB1); }
    static iv even_lanes() { return _mm256_set1_epi64x(0x00000000FFFFFFFFll); }
    static fv castif(iv v) { return _mm256_castsi256_ps(v); }
    static iv srai1(iv v) { return _mm256_srai_epi32(v, 1); }
    static mk fcmple(fv a, fv b) { return _mm256_castps_si256(_mm256_cmp_ps(a, b, _CMP_LE_OQ)); }
    static bool mall(mk m) { return _mm256_movemask_ps(_mm256_castsi256_ps(m)) == 0xFF; }
    static bool none(iv v) { return _mm256_testz_si256(v, v); }
    static iv slli(iv v, int n) { return _mm256_slli_epi32(v, n); }
    static constexpr bool kLut32 = false;
    static iv lut32(const int32_t*, iv idx) { return idx; }  // unused (kLut32)
    // Codes c[0..7] (< 16) as 4 bytes c[2j] | c[2j+1] << 4.
    static void store_nib(uint8_t* p, iv c) {
        const __m256i y = _mm256_or_si256(c, _mm256_srli_epi64(c, 28));  // byte 0 of each 64-bit lane
        const __m256i pick = _mm256_setr_epi8(0, 8, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
                                              0, 8, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1);
        const __m256i s = _mm256_shuffle_epi8(y, pick);
        const __m128i b = _mm_unpacklo_epi16(_mm256_castsi256_si128(s), _mm256_extracti128_si256(s, 1));
        const uint32_t w = uint32_t(_mm_cvtsi128_si32(b));
        std::memcpy(p, &w, 4);
    }
    // Lane b: max over the 16 floats of x[16b .. 16b+15] of bits & 0x7FFFFFFF (8 blocks).
    static iv absmax16(const float* x) {
        const __m256i m = _mm256_set1_epi32(0x7FFFFFFF);
        const auto ld = [&](int i) { return _mm256_and_si256(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(x + 8 * i)), m); };
        __m256i v[8], a[4], e[2];
        for (int b = 0; b < 8; ++b) v[b] = _mm256_max_epu32(ld(2 * b), ld(2 * b + 1));
        for (int i = 0; i < 4; ++i)  // [blk 2i: 4 | blk 2i+1: 4]
            a[i] = _mm256_max_epu32(_mm256_permute2x128_si256(v[2 * i], v[2 * i + 1], 0x20),
                                    _mm256_permute2x128_si256(v[2 * i], v[2 * i + 1], 0x31));
        for (int i = 0; i < 2; ++i)  // half h: [blk 4i+h x2, blk 4i+2+h x2]
            e[i] = _mm256_max_epu32(_mm256_unpacklo_epi64(a[2 * i], a[2 * i + 1]),
                                    _mm256_unpackhi_epi64(a[2 * i], a[2 * i + 1]));
        const __m256 e0 = _mm256_castsi256_ps(e[0]), e1 = _mm256_castsi256_ps(e[1]);
        // half h, lane l: blk 2l + h
        const __m256i f = _mm256_max_epu32(_mm256_castps_si256(_mm256_shuffle_ps(e0, e1, 0x88)),
                                           _mm256_castps_si256(_mm256_shuffle_ps(e0, e1, 0xDD)));
        return _mm256_permutevar8x32_epi32(f, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
    }
};
}  // namespace

namespace quellm::x86 {
const FormatKernels& format_kernels_avx2() { return FmtSimd<V8>::table(); }
}  // namespace quellm::x86
