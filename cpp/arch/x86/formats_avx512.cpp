// formats_avx512.cpp — AVX-512 (16 lanes, AVX512F/BW) instantiation of the format element
// kernels in formats_simd.h.
#include <immintrin.h>

#include "formats_simd.h"

namespace {
struct V16 {
    using iv = __m512i;
    using fv = __m512;
    using mk = __mmask16;
    static constexpr int W = 16;
    static fv load(const float* p) { return _mm512_loadu_ps(p); }
    static iv loadbits(const float* p) { return _mm512_loadu_si512(p); }
    static void store(float* p, fv v) { _mm512_storeu_ps(p, v); }
    static fv set1(float x) { return _mm512_set1_ps(x); }
    static iv set1i(int x) { return _mm512_set1_epi32(x); }
    static iv castfi(fv v) { return _mm512_castps_si512(v); }
    static fv cvt_i2f(iv v) { return _mm512_cvtepi32_ps(v); }
    static iv cvtt(fv v) { return _mm512_cvttps_epi32(v); }
    static fv rint(fv v) { return _mm512_roundscale_ps(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
    static fv add_ps(fv a, fv b) { return _mm512_add_ps(a, b); }
    static fv sub_ps(fv a, fv b) { return _mm512_sub_ps(a, b); }
    static fv mul_ps(fv a, fv b) { return _mm512_mul_ps(a, b); }
    static fv div_ps(fv a, fv b) { return _mm512_div_ps(a, b); }
    static fv min_ps(fv a, fv b) { return _mm512_min_ps(a, b); }
    static fv max_ps(fv a, fv b) { return _mm512_max_ps(a, b); }
    static float hmin_ps(fv v) { return _mm512_reduce_min_ps(v); }
    static float hmax_ps(fv v) { return _mm512_reduce_max_ps(v); }
    static iv and_(iv a, iv b) { return _mm512_and_si512(a, b); }
    static iv or_(iv a, iv b) { return _mm512_or_si512(a, b); }
    static iv add(iv a, iv b) { return _mm512_add_epi32(a, b); }
    static iv sub(iv a, iv b) { return _mm512_sub_epi32(a, b); }
    static iv srli(iv a, int n) { return _mm512_srli_epi32(a, n); }
    static iv srlv(iv a, iv n) { return _mm512_srlv_epi32(a, n); }
    static iv sllv(iv a, iv n) { return _mm512_sllv_epi32(a, n); }
    static iv min_i32(iv a, iv b) { return _mm512_min_epi32(a, b); }
    static iv max_i32(iv a, iv b) { return _mm512_max_epi32(a, b); }
    static iv max_u32(iv a, iv b) { return _mm512_max_epu32(a, b); }
    static uint32_t hmax_u32(iv v) { return _mm512_reduce_max_epu32(v); }
    static mk cmpeq(iv a, iv b) { return _mm512_cmpeq_epi32_mask(a, b); }
    static mk cmpgt(iv a, iv b) { return _mm512_cmpgt_epi32_mask(a, b); }
    static mk nonzero(iv a) { return _mm512_test_epi32_mask(a, a); }
    static mk mand(mk a, mk b) { return mk(a & b); }
    static mk mor(mk a, mk b) { return mk(a | b); }
    static mk mnot(mk a) { return mk(~a); }
    static iv sel(mk m, iv a, iv b) { return _mm512_mask_blend_epi32(m, b, a); }  // m ? a : b
    static iv add_if(iv q, mk m) { return _mm512_mask_add_epi32(q, m, q, _mm512_set1_epi32(1)); }
    static void store_bytes(uint8_t* p, iv v) { _mm_storeu_si128(reinterpret_cast<__m128i*>(p), _mm512_cvtepi32_epi8(v)); }
    static iv load_bytes(const uint8_t* p) { return _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))); }
    static fv gather(const float* lut, iv idx) { return _mm512_i32gather_ps(idx, lut, 4); }
    static iv gather_i(const int32_t* lut, iv idx) { return _mm512_i32gather_epi32(idx, lut, 4); }
    static fv floor(fv v) { return _mm512_roundscale_ps(v, _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC); }
    static fv abs_ps(fv v) { return _mm512_abs_ps(v); }
    static mk fcmpeq(fv a, fv b) { return _mm512_cmp_ps_mask(a, b, _CMP_EQ_OQ); }
    static mk fcmpgt(fv a, fv b) { return _mm512_cmp_ps_mask(a, b, _CMP_GT_OQ); }
    static mk fcmpge(fv a, fv b) { return _mm512_cmp_ps_mask(a, b, _CMP_GE_OQ); }
    static iv fmask(mk m) { return _mm512_movm_epi32(m); }  // all-ones lanes
    static iv andnot(iv a, iv b) { return _mm512_andnot_si512(a, b); }  // ~a & b
    static iv blendv(iv m, iv a, iv b) { return sel(nonzero(m), a, b); }  // m lanes ? a : b
    static fv blendv_f(iv m, fv a, fv b) { return _mm512_mask_blend_ps(nonzero(m), b, a); }
    static iv swap_pairs_i(iv v) { return _mm512_shuffle_epi32(v, _MM_PERM_CDAB); }
    static fv swap_pairs_f(fv v) { return _mm512_permute_ps(v, 0xB1); }
    static iv even_lanes() { return _mm512_set1_epi64(0x00000000FFFFFFFFll); }
    static fv castif(iv v) { return _mm512_castsi512_ps(v); }
    static iv srai1(iv v) { return _mm512_srai_epi32(v, 1); }
    static mk fcmple(fv a, fv b) { return _mm512_cmp_ps_mask(a, b, _CMP_LE_OQ); }
    static bool mall(mk m) { return m == 0xFFFF; }
    static bool none(iv v) { return _mm512_test_epi32_mask(v, v) == 0; }
    static iv slli(iv v, int n) { return _mm512_slli_epi32(v, n); }
    static constexpr bool kLut32 = true;
    static iv lut32(const int32_t* t, iv idx) {  // t[idx], idx in [0, 32)
        return _mm512_permutex2var_epi32(_mm512_load_si512(t), idx, _mm512_load_si512(t + 16));
    }
    // Codes c[0..15] (< 16) as 8 bytes c[2j] | c[2j+1] << 4.
    static void store_nib(uint8_t* p, iv c) {
        const __m128i b = _mm512_cvtepi64_epi8(_mm512_or_si512(c, _mm512_srli_epi64(c, 28)));
        _mm_storel_epi64(reinterpret_cast<__m128i*>(p), b);
    }
    // Lane b: max over the 16 floats of x[16b .. 16b+15] of bits & 0x7FFFFFFF (16 blocks).
    // A transposing reduction: each step halves the lanes per block and pairs up the vectors.
    static iv absmax16(const float* x) {
        const __m512i m = _mm512_set1_epi32(0x7FFFFFFF);
        __m512i v[16];
        for (int b = 0; b < 16; ++b) v[b] = _mm512_and_si512(_mm512_loadu_si512(x + 16 * b), m);
        __m512i a[8], c[4], e[2];
        for (int i = 0; i < 8; ++i)  // [blk 2i: 8 | blk 2i+1: 8]
            a[i] = _mm512_max_epu32(_mm512_shuffle_i32x4(v[2 * i], v[2 * i + 1], 0x44),
                                    _mm512_shuffle_i32x4(v[2 * i], v[2 * i + 1], 0xEE));
        for (int i = 0; i < 4; ++i)  // quarter q: blk 4i + q, 4 lanes
            c[i] = _mm512_max_epu32(_mm512_shuffle_i32x4(a[2 * i], a[2 * i + 1], 0x88),
                                    _mm512_shuffle_i32x4(a[2 * i], a[2 * i + 1], 0xDD));
        for (int i = 0; i < 2; ++i)  // quarter q: [blk 8i+q x2, blk 8i+4+q x2]
            e[i] = _mm512_max_epu32(_mm512_unpacklo_epi64(c[2 * i], c[2 * i + 1]),
                                    _mm512_unpackhi_epi64(c[2 * i], c[2 * i + 1]));
        const __m512 e0 = _mm512_castsi512_ps(e[0]), e1 = _mm512_castsi512_ps(e[1]);
        // quarter q, lane l: blk 4l + q
        const __m512i f = _mm512_max_epu32(_mm512_castps_si512(_mm512_shuffle_ps(e0, e1, 0x88)),
                                           _mm512_castps_si512(_mm512_shuffle_ps(e0, e1, 0xDD)));
        const __m512i idx = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
        return _mm512_permutexvar_epi32(idx, f);
    }
};
}  // namespace

namespace quellm::x86 {
const FormatKernels& format_kernels_avx512() { return FmtSimd<V16>::table(); }
}  // namespace quellm::x86
