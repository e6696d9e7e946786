// fwht_simd.h — the SIMD row kernel of the Walsh–Hadamard transform, written once over a vector
// type V and included by fwht_avx2.cpp (8 lanes) and fwht_avx512.cpp (16 lanes). Everything here
// has internal linkage so the two instantiations, compiled with different target flags, never
// merge.
//
// V provides: reg, W (lanes), G (butterfly stages one pass keeps in registers: 2^G registers),
// load/store (unaligned), add, sub, mul, fmadd, set1, zero, and
// in_vector(reg) — the log2(W) butterfly stages inside one register.
//
// Row plan for dst = scale · (H_m ⊗ H_p) · src, p >= W (see fwht.h):
//   1. m > 1: mix the m sub-rows by H_m, U·W lanes at a time, through `tmp`
//      (reads src, writes dst); R = 4 output sub-rows share each load.
//   2. H_p on each sub-row: pass A = in-vector stages + up to G cross-vector stages on 2^G
//      consecutive registers; pass B = G more stages (stride 2^G registers) on the same
//      block of 4^G·W floats while it is in L1; then radix-2^G (or smaller) passes over the
//      whole sub-row for the remaining strides. The last pass applies `scale`.
// Every butterfly happens in the same order as fwht_ref, and the mixing sums c = 0..m-1 with
// exact ±1 products, so the result is bit-identical to the scalar reference.
#pragma once

#include <cstdint>

namespace {

template <class V, int R>
inline void bfly_regs(typename V::reg* v) {
    for (int h = 1; h < R; h *= 2)
        for (int i = 0; i < R; ++i)
            if (!(i & h)) {
                const typename V::reg a = v[i], b = v[i + h];
                v[i] = V::add(a, b);
                v[i + h] = V::sub(a, b);
            }
}

// Radix-R pass with vector stride h over `nv` vectors of `y` (in place), optional scale.
template <class V, int R>
inline void pass_regs(float* y, int64_t nv, int64_t h, bool scaled, typename V::reg s) {
    constexpr int W = V::W;
    typename V::reg v[R];
    for (int64_t blk = 0; blk < nv; blk += R * h)
        for (int64_t j = blk; j < blk + h; ++j) {
            for (int i = 0; i < R; ++i) v[i] = V::load(y + (j + i * h) * W);
            bfly_regs<V, R>(v);
            if (scaled)
                for (int i = 0; i < R; ++i) v[i] = V::mul(v[i], s);
            for (int i = 0; i < R; ++i) V::store(y + (j + i * h) * W, v[i]);
        }
}

template <class V>
inline void pass_any(float* y, int64_t nv, int64_t h, int stages, bool scaled, typename V::reg s) {
    switch (stages) {
        case 4: pass_regs<V, 16>(y, nv, h, scaled, s); break;
        case 3: pass_regs<V, 8>(y, nv, h, scaled, s); break;
        case 2: pass_regs<V, 4>(y, nv, h, scaled, s); break;
        case 1: pass_regs<V, 2>(y, nv, h, scaled, s); break;
        default: break;
    }
}

// Pass A on one group of R consecutive vectors: in-vector stages, then R-radix across them.
template <class V, int R>
inline void pass_a(const float* src, float* dst, int64_t nv, bool scaled, typename V::reg s) {
    constexpr int W = V::W;
    typename V::reg v[R];
    for (int64_t j = 0; j < nv; j += R) {
        for (int i = 0; i < R; ++i) v[i] = V::in_vector(V::load(src + (j + i) * W));
        bfly_regs<V, R>(v);
        if (scaled)
            for (int i = 0; i < R; ++i) v[i] = V::mul(v[i], s);
        for (int i = 0; i < R; ++i) V::store(dst + (j + i) * W, v[i]);
    }
}

template <class V>
inline int ilog2(int64_t x) {
    int k = 0;
    while ((int64_t(1) << k) < x) ++k;
    return k;
}

// H_p on one sub-row of p floats (p >= W, a power of two): src -> dst, then in place.
template <class V>
void fwht_subrow(const float* src, float* dst, int64_t p, float scale) {
    constexpr int W = V::W;
    const int64_t nv = p / W;
    const int cross = ilog2<V>(nv);  // stages across vectors
    const typename V::reg s = V::set1(scale);
    const bool unit = scale == 1.0f;
    // Stage groups: g0 = min(cross, G) in pass A, then groups of up to G.
    constexpr int G = V::G;
    const int g0 = cross < G ? cross : G;
    const int g1 = (cross - g0) < G ? (cross - g0) : G;
    const bool a_last = cross == g0, b_last = cross == g0 + g1;
    // Blocks of 2^(g0+g1) vectors get passes A and B while in L1.
    const int64_t bv = int64_t(1) << (g0 + g1);
    for (int64_t blk = 0; blk < nv; blk += bv) {
        const float* sb = src + blk * W;
        float* db = dst + blk * W;
        switch (g0) {
            case 4: pass_a<V, 16>(sb, db, bv, a_last && !unit, s); break;
            case 3: pass_a<V, 8>(sb, db, bv, a_last && !unit, s); break;
            case 2: pass_a<V, 4>(sb, db, bv, a_last && !unit, s); break;
            case 1: pass_a<V, 2>(sb, db, bv, a_last && !unit, s); break;
            default: pass_a<V, 1>(sb, db, bv, a_last && !unit, s); break;
        }
        if (g1 > 0) pass_any<V>(db, bv, int64_t(1) << g0, g1, b_last && !unit, s);
    }
    int done = g0 + g1;
    while (done < cross) {
        const int g = (cross - done) < G ? (cross - done) : G;
        pass_any<V>(dst, nv, int64_t(1) << done, g, done + g == cross && !unit, s);
        done += g;
    }
}

// dst[a, lanes] = Σ_c H[a, c] · src[c, lanes] for U·W lanes starting at c0, via tmp.
template <class V, int U>
void mix_chunk(const float* src, float* dst, int64_t p, int m, const float* hmf, int64_t c0, float* tmp) {
    constexpr int W = V::W;
    using reg = typename V::reg;
    int a = 0;
    for (; a + 4 <= m; a += 4) {
        reg acc[4][U];
        for (int r = 0; r < 4; ++r)
            for (int u = 0; u < U; ++u) acc[r][u] = V::zero();
        for (int c = 0; c < m; ++c) {
            reg xv[U];
            for (int u = 0; u < U; ++u) xv[u] = V::load(src + c * p + c0 + u * W);
            for (int r = 0; r < 4; ++r) {
                const reg h = V::set1(hmf[(a + r) * m + c]);
                for (int u = 0; u < U; ++u) acc[r][u] = V::fmadd(h, xv[u], acc[r][u]);
            }
        }
        for (int r = 0; r < 4; ++r)
            for (int u = 0; u < U; ++u) V::store(tmp + (a + r) * U * W + u * W, acc[r][u]);
    }
    for (; a < m; ++a) {
        reg acc[U];
        for (int u = 0; u < U; ++u) acc[u] = V::zero();
        for (int c = 0; c < m; ++c) {
            const reg h = V::set1(hmf[a * m + c]);
            for (int u = 0; u < U; ++u) acc[u] = V::fmadd(h, V::load(src + c * p + c0 + u * W), acc[u]);
        }
        for (int u = 0; u < U; ++u) V::store(tmp + a * U * W + u * W, acc[u]);
    }
    for (int b = 0; b < m; ++b)
        for (int u = 0; u < U; ++u) V::store(dst + b * p + c0 + u * W, V::load(tmp + b * U * W + u * W));
}

template <class V>
void fwht_row(const float* src, float* dst, int64_t p, int m, const float* hmf, float scale, float* tmp) {
    constexpr int W = V::W;
    if (m == 1) {
        fwht_subrow<V>(src, dst, p, scale);
        return;
    }
    if (p % (2 * W) == 0)
        for (int64_t c0 = 0; c0 < p; c0 += 2 * W) mix_chunk<V, 2>(src, dst, p, m, hmf, c0, tmp);
    else
        for (int64_t c0 = 0; c0 < p; c0 += W) mix_chunk<V, 1>(src, dst, p, m, hmf, c0, tmp);
    for (int a = 0; a < m; ++a) fwht_subrow<V>(dst + a * p, dst + a * p, p, scale);
}

}  // namespace
