// gemm_wf_simd.h — weight-only (W4A16 / W8A16) row kernel over a vector type V, included by
// gemm_avx2.cpp and gemm_avx512.cpp (internal linkage: the two never merge).
//
// V provides reg, W, zero, set1, load, fmadd, sub, mul, add, reduce, load_u4 (W nibbles from W/2
// bytes as floats) and load_s8 (W int8 as floats). For W rows n (two at a time, independent FMA
// chains) and x rows m0..m0+mr-1: per group, w = (u − z) · s in registers, acc += x · w; each
// weight byte is read once per call.
#pragma once

#include <cstdint>

#include "gemm.h"

namespace {

template <class V, int MR, int NR>
void wf_block(const quellm::GemmWfParams& p, int64_t n, int64_t m0) {
    using reg = typename V::reg;
    constexpr int W = V::W;
    const quellm::WfWeights& w = *p.w;
    const int64_t K = w.K, G = w.G, NG = K / G;
    const int64_t row_bytes = w.bits == 4 ? K / 2 : K;
    reg acc[NR][MR];
    for (int j = 0; j < NR; ++j)
        for (int r = 0; r < MR; ++r) acc[j][r] = V::zero();
    for (int64_t g = 0; g < NG; ++g) {
        reg s[NR], z[NR];
        for (int j = 0; j < NR; ++j) {
            s[j] = V::set1(w.scales[size_t((n + j) * NG + g)]);
            z[j] = V::set1(w.zeros[size_t((n + j) * NG + g)]);
        }
        for (int64_t k = g * G; k < (g + 1) * G; k += W) {
            reg wv[NR];
            for (int j = 0; j < NR; ++j) {
                const uint8_t* c = w.codes.data() + (n + j) * row_bytes;
                const reg u = w.bits == 4 ? V::load_u4(c + k / 2) : V::load_s8(c + k);
                wv[j] = V::mul(V::sub(u, z[j]), s[j]);
            }
            for (int r = 0; r < MR; ++r) {
                const reg xv = V::load(p.x + (m0 + r) * K + k);
                for (int j = 0; j < NR; ++j) acc[j][r] = V::fmadd(xv, wv[j], acc[j][r]);
            }
        }
    }
    for (int j = 0; j < NR; ++j)
        for (int r = 0; r < MR; ++r) {
            const float v = V::reduce(acc[j][r]);
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

}  // namespace
