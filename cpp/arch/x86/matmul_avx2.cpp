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
