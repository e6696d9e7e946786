// matmul_avx512.cpp — AVX-512 instantiation of the f32 dot-product tile (matmul_simd.h).
#include <immintrin.h>

#include "matmul_simd.h"

namespace {
struct V16 {
    using reg = __m512;
    static constexpr int W = 16;
    static reg load(const float* p) { return _mm512_loadu_ps(p); }
    static reg load_tail(const float* p, int n) { return _mm512_maskz_loadu_ps(__mmask16((1u << n) - 1), p); }
    static reg fmadd(reg a, reg b, reg c) { return _mm512_fmadd_ps(a, b, c); }
    static reg zero() { return _mm512_setzero_ps(); }
    static float reduce(reg v) { return _mm512_reduce_add_ps(v); }
    static reg add(reg a, reg b) { return _mm512_add_ps(a, b); }
    static reg bcast(const float* p) { return _mm512_set1_ps(*p); }
    static void store_n(float* p, reg v, int n) { _mm512_mask_storeu_ps(p, __mmask16((1u << n) - 1), v); }
};
}  // namespace

namespace quellm::x86 {
void matmul_tile_avx512(const MatmulParams& p, const MatmulTile& t) {
    tile_any<V16>(p, t);
}
// MR = 14: 28 accumulators + 2 W vectors of the 32 registers
void matmul_packed_avx512(const MatmulParams& p, int64_t n0, int64_t n1) { matmul_packed<V16, 14>(p, n0, n1); }
void gemm_wf_packed_avx512(const GemmWfParams& p, int64_t n0, int64_t n1) {
    gemm_wf_packed<V16, 14>(p, n0, n1, wf_dequant_segment_avx512);
}
}  // namespace quellm::x86
