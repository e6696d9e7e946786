// gemm_wf_simd.h — weight-only (W4A16 / W8A16) row kernel over a vector type V, included by
// gemm_avx2.cpp and gemm_avx512.cpp (internal linkage: the two never merge).
//
// V provides reg, W (lanes), zero, set1, load, fmadd, reduce, and chunk loaders that turn the
// codes of 32 consecutive elements into 32/W float registers in element order: u4_chunk (16
// bytes, split32 layout: low nibbles are elements 0..15, high nibbles 16..31; the zero point is
// subtracted as bytes, so u − z in [-15, 15] is exact before the sign-extending conversion) and
// s8_chunk (32 bytes). Per group g of W row n and x row m:
//     y[m, n] += s[n, g] · Σ_k x[m, k] · (u[n, k] − z[n, g])
// with the sum in registers (one conversion and one FMA per code). Two W rows at a time
// (independent FMA chains); each weight byte is read once per call.
#pragma once

#include <cstdint>

#include "gemm.h"

namespace {

template <class V, int MR, int NR>
void wf_block(const quellm::GemmWfParams& p, int64_t n, int64_t m0) {
    using reg = typename V::reg;
    constexpr int W = V::W, C = 32 / V::W;  // registers per 32-element chunk
    const quellm::WfWeights& w = *p.w;
    const int64_t K = w.K, G = w.G, NG = K / G;
    const int64_t row_bytes = w.bits == 4 ? K / 2 : K;
    reg tot[NR][MR];
    for (int j = 0; j < NR; ++j)
        for (int r = 0; r < MR; ++r) tot[j][r] = V::zero();
    for (int64_t g = 0; g < NG; ++g) {
        reg acc[NR][MR];
        for (int j = 0; j < NR; ++j)
            for (int r = 0; r < MR; ++r) acc[j][r] = V::zero();
        uint8_t z[NR];
        for (int j = 0; j < NR; ++j) z[j] = w.zeros.empty() ? 0 : w.zeros[size_t((n + j) * NG + g)];
        for (int64_t k = g * G; k < (g + 1) * G; k += 32) {
            reg wv[NR][C];
            for (int j = 0; j < NR; ++j) {
                const uint8_t* c = w.codes.data() + (n + j) * row_bytes;
                if (w.bits == 4)
                    V::u4_chunk(c + k / 2, z[j], wv[j]);
                else
                    V::s8_chunk(c + k, wv[j]);
            }
            for (int r = 0; r < MR; ++r)
                for (int c = 0; c < C; ++c) {
                    const reg xv = V::load(p.x + (m0 + r) * K + k + c * W);
                    for (int j = 0; j < NR; ++j) acc[j][r] = V::fmadd(xv, wv[j][c], acc[j][r]);
                }
        }
        for (int j = 0; j < NR; ++j) {
            const reg sv = V::set1(w.scales[size_t((n + j) * NG + g)]);
            for (int r = 0; r < MR; ++r) tot[j][r] = V::fmadd(acc[j][r], sv, tot[j][r]);
        }
    }
    for (int j = 0; j < NR; ++j)
        for (int r = 0; r < MR; ++r) {
            const float v = V::reduce(tot[j][r]);
            p.y[(m0 + r) * w.N + n + j] = p.bias ? v + p.bias[n + j] : v;
        }
}

template <class V, int MR>
void wf_rows_mr(const quellm::GemmWfParams& p, int64_t n0, int64_t n1, int64_t m0) {
    int64_t n = n0;
    for (; n + 2 <= n1; n += 2) wf_block<V, MR, 2>(p, n, m0);
    if (n < n1) wf_block<V, MR, 1>(p, n, m0);
}

template <class V>
void wf_rows(const quellm::GemmWfParams& p, int64_t n0, int64_t n1, int64_t m0, int mr) {
    switch (mr) {
        case 4: wf_rows_mr<V, 4>(p, n0, n1, m0); break;
        case 3: wf_rows_mr<V, 3>(p, n0, n1, m0); break;
        case 2: wf_rows_mr<V, 2>(p, n0, n1, m0); break;
        default: wf_rows_mr<V, 1>(p, n0, n1, m0); break;
    }
}

// W row n, elements [k0, k1) (multiples of 32): out[k - k0] = (u − z) · s in float32, the same
// value wf_dequant_rows gives (u − z is exact, then one rounding of the product).
template <class V>
void wf_dequant_segment(const quellm::WfWeights& w, int64_t n, int64_t k0, int64_t k1, float* out) {
    using reg = typename V::reg;
    constexpr int W = V::W, C = 32 / V::W;
    const int64_t NG = w.K / w.G;
    const uint8_t* row = w.codes.data() + n * (w.bits == 4 ? w.K / 2 : w.K);
    for (int64_t k = k0; k < k1; k += 32) {
        const int64_t g = k / w.G;
        reg v[C];
        if (w.bits == 4)
            V::u4_chunk(row + k / 2, w.zeros.empty() ? 0 : w.zeros[size_t(n * NG + g)], v);
        else
            V::s8_chunk(row + k, v);
        const reg s = V::set1(w.scales[size_t(n * NG + g)]);
        for (int c = 0; c < C; ++c) V::store(out + (k - k0) + c * W, V::mul(v[c], s));
    }
}

}  // namespace
