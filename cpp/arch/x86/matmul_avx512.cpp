// matmul_avx512.cpp — AVX-512 instantiation of the f32 dot-product tile (matmul_simd.h).
#include <immintrin.h>

#include "gemm.h"
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
    static reg load_n(const float* p, int n) { return _mm512_maskz_loadu_ps(__mmask16((1u << n) - 1), p); }
    static void store_n(float* p, reg v, int n) { _mm512_mask_storeu_ps(p, __mmask16((1u << n) - 1), v); }
};
}  // namespace

namespace quellm::x86 {
void matmul_tile_avx512(const MatmulParams& p, const MatmulTile& t) {
    tile_any<V16>(p, t);
}
void matmul_packed_avx512(const MatmulParams& p, int64_t n0, int64_t n1) {
    constexpr int NR = 2 * V16::W;
    packed_cols<V16, 14>(p, n0, n1, [&](int64_t j0, int n, int64_t k0, int64_t k1, float* bp) {
        pack_w<NR>(p, j0, n, k0, k1, bp);
    });  // 28 accumulators + 2 W vectors of the 32 registers
}
void gemm_wf_packed_avx512(const GemmWfParams& p, int64_t n0, int64_t n1) {
    constexpr int NR = 2 * V16::W;
    const WfWeights& w = *p.w;
    std::vector<float> rows(size_t(NR * std::min(w.K, kPackKC)));  // the strip's W rows, dequantized
    const MatmulParams mp{p.x, nullptr, p.bias, p.y, p.M, w.N, w.K, w.K, w.N};
    packed_cols<V16, 14>(mp, n0, n1, [&](int64_t j0, int n, int64_t k0, int64_t k1, float* bp) {
        const int64_t kc = k1 - k0;
        for (int c = 0; c < n; ++c) wf_dequant_segment_avx512(w, j0 + c, k0, k1, rows.data() + c * kc);
        for (int64_t k = 0; k < kc; ++k, bp += NR)
            for (int c = 0; c < NR; ++c) bp[c] = c < n ? rows[size_t(c * kc + k)] : 0.0f;
    });
}
}  // namespace quellm::x86
