// matmul_simd.h — register-tile f32 dot-product kernel over a vector type V, included by
// matmul_avx2.cpp and matmul_avx512.cpp (internal linkage: the two never merge).
//
// V provides reg, W, load, fmadd, zero, reduce (horizontal sum), and load_tail(ptr, count)
// (zero-filled partial load). acc[i][j] accumulates x[i0+i, k:k+W] * w[j0+j, k:k+W] over the
// tile's K block; the tail of the block uses a zero-filled partial load, so every K works.
#pragma once

#include <cstdint>

#include "matmul.h"

namespace {

template <class V, int MR, int NR>
void tile_fixed(const quellm::MatmulParams& p, const quellm::MatmulTile& t) {
    const int64_t i0 = t.i0, j0 = t.j0;
    using reg = typename V::reg;
    constexpr int W = V::W;
    reg acc[MR][NR];
    for (int i = 0; i < MR; ++i)
        for (int j = 0; j < NR; ++j) acc[i][j] = V::zero();
    const float* xr[MR];
    const float* wr[NR];
    for (int i = 0; i < MR; ++i) xr[i] = p.x + (i0 + i) * p.ldx;
    for (int j = 0; j < NR; ++j) wr[j] = p.w + (j0 + j) * p.K;
    int64_t k = t.k0;
    for (; k + W <= t.k1; k += W) {
        reg wv[NR];
        for (int j = 0; j < NR; ++j) wv[j] = V::load(wr[j] + k);
        for (int i = 0; i < MR; ++i) {
            const reg xv = V::load(xr[i] + k);
            for (int j = 0; j < NR; ++j) acc[i][j] = V::fmadd(xv, wv[j], acc[i][j]);
        }
    }
    if (k < t.k1) {
        const int rem = int(t.k1 - k);
        reg wv[NR];
        for (int j = 0; j < NR; ++j) wv[j] = V::load_tail(wr[j] + k, rem);
        for (int i = 0; i < MR; ++i) {
            const reg xv = V::load_tail(xr[i] + k, rem);
            for (int j = 0; j < NR; ++j) acc[i][j] = V::fmadd(xv, wv[j], acc[i][j]);
        }
    }
    for (int i = 0; i < MR; ++i)
        for (int j = 0; j < NR; ++j) {
            float& out = p.y[(i0 + i) * p.ldy + j0 + j];
            const float s = V::reduce(acc[i][j]);
            out = t.first ? s + (p.b ? p.b[j0 + j] : 0.0f) : out + s;
        }
}

template <class V, int MR>
void tile_rows(const quellm::MatmulParams& p, const quellm::MatmulTile& t) {
    switch (t.nr) {
        case 4: tile_fixed<V, MR, 4>(p, t); break;
        case 3: tile_fixed<V, MR, 3>(p, t); break;
        case 2: tile_fixed<V, MR, 2>(p, t); break;
        default: tile_fixed<V, MR, 1>(p, t); break;
    }
}

template <class V>
void tile_any(const quellm::MatmulParams& p, const quellm::MatmulTile& t) {
    switch (t.mr) {
        case 6: tile_rows<V, 6>(p, t); break;
        case 5: tile_rows<V, 5>(p, t); break;
        case 4: tile_rows<V, 4>(p, t); break;
        case 3: tile_rows<V, 3>(p, t); break;
        case 2: tile_rows<V, 2>(p, t); break;
        default: tile_rows<V, 1>(p, t); break;
    }
}

}  // namespace
