// matmul_simd.h — register-tile f32 dot-product kernel over a vector type V, included by
// matmul_avx2.cpp and matmul_avx512.cpp (internal linkage: the two never merge).
//
// V provides reg, W, load, fmadd, zero, reduce (horizontal sum), and load_tail(ptr, count)
// (zero-filled partial load). acc[i][j] accumulates x[i0+i, k:k+W] * w[j0+j, k:k+W] over the
// tile's K block; the tail of the block uses a zero-filled partial load, so every K works.
//
// The packed kernel (many rows of x, see matmul.h) is the outer-product form instead: per K
// block, a panel of MR rows of x packed k-major (MR floats per k) and a strip of NR = 2·W
// columns of Wᵀ packed k-major (NR floats per k, in L1); each k broadcasts MR x values against
// two W vectors into MR × 2 accumulators, with no horizontal sums. V then also provides
// bcast(const float*), add, and store_n(ptr, v, count) (the first count lanes; load_tail reads them).
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

#include "gemm.h"
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

// ---- packed outer-product kernel ------------------------------------------------------------

// Rows [0, m) (m <= R) of a row-major matrix at `rows` (row stride ld), columns [k0, k1) ->
// out[k][r] (R floats per k; rows past m are 0): x panels (R = MR) and W strips (R = 2W).
// Written in order, read across R rows that stay in L1 for 16 consecutive k.
template <int R>
void pack_kmajor(const float* rows, int64_t ld, int m, int64_t k0, int64_t k1, float* out) {
    const float* r_[R];
    for (int r = 0; r < R; ++r) r_[r] = rows + (r < m ? r : 0) * ld;
    for (int64_t k = k0; k < k1; ++k, out += R)
        for (int r = 0; r < R; ++r) out[r] = r < m ? r_[r][k] : 0.0f;
}

// One W strip: rows [0, m) of W (stride ld) over [k0, k1) as pack_kmajor<2W>. An ISA may
// specialize it (matmul_avx2.cpp transposes 8 × 8 blocks: the scalar gather cost as much as the
// products at 16 rows of x).
template <class V>
void pack_strip(const float* rows, int64_t ld, int m, int64_t k0, int64_t k1, float* out) {
    pack_kmajor<2 * V::W>(rows, ld, m, k0, k1, out);
}

// acc = the MR × 2W products of one packed panel and strip over kc. An ISA may specialize it
// (matmul_avx2.cpp does: there gcc kept this loop's accumulators in memory).
template <class V, int MR>
void micro_acc(const float* ap, const float* bp, int64_t kc, typename V::reg (&acc)[MR][2]) {
    constexpr int W = V::W;
    using reg = typename V::reg;
    for (int r = 0; r < MR; ++r) acc[r][0] = acc[r][1] = V::zero();
    for (int64_t k = 0; k < kc; ++k) {
        const reg b0 = V::load(bp + k * 2 * W), b1 = V::load(bp + k * 2 * W + W);
        for (int r = 0; r < MR; ++r) {
            const reg a = V::bcast(ap + k * MR + r);
            acc[r][0] = V::fmadd(a, b0, acc[r][0]);
            acc[r][1] = V::fmadd(a, b1, acc[r][1]);
        }
    }
}

// y[i0 : i0+m, j0 : j0+n] (+)= the MR × 2W products of one packed panel and strip over kc.
template <class V, int MR>
void micro(const float* ap, const float* bp, int64_t kc, const quellm::MatmulParams& p, int64_t i0, int m,
           int64_t j0, int n, bool first) {
    constexpr int W = V::W;
    using reg = typename V::reg;
    reg acc[MR][2];
    micro_acc<V, MR>(ap, bp, kc, acc);
    const int n0 = std::min(n, W), n1 = n - n0;
    reg bias0 = V::zero(), bias1 = V::zero();
    if (first && p.b) {
        bias0 = V::load_tail(p.b + j0, n0);
        if (n1 > 0) bias1 = V::load_tail(p.b + j0 + W, n1);
    }
    for (int r = 0; r < m; ++r) {
        float* y = p.y + (i0 + r) * p.ldy + j0;
        const reg y0 = first ? bias0 : V::load_tail(y, n0);
        V::store_n(y, V::add(acc[r][0], y0), n0);
        if (n1 > 0) {
            const reg y1 = first ? bias1 : V::load_tail(y + W, n1);
            V::store_n(y + W, V::add(acc[r][1], y1), n1);
        }
    }
}

// y[:, n0 : n1) of the whole product with the packed kernel, one thread. Per output the sum
// runs over K blocks of kPackKC in order, each accumulated from zero over k in order and then
// added to y (the first block adds the bias), whatever the thread split: results do not depend
// on the thread count.
constexpr int64_t kPackKC = 256;  // a W strip (kPackKC × 2W floats) stays in L1
constexpr int64_t kPackMC = 1024;  // rows of x packed per block (kPackMC × kPackKC floats, 1 MiB, in L2)
// pack(j0, n, k0, k1, bp) fills one strip's bp as pack_kmajor<2W> of W rows j0.. would (the W
// operand may come from other storage: gemm_wf dequantizes it there); p.w is not read otherwise.
template <class V, int MR, class PackW>
void packed_cols(const quellm::MatmulParams& p, int64_t n0, int64_t n1, const PackW& pack) {
    constexpr int NR = 2 * V::W;
    constexpr int64_t MC = (kPackMC + MR - 1) / MR * MR;
    if (p.K == 0) {  // y = b
        for (int64_t i = 0; i < p.M; ++i)
            for (int64_t j = n0; j < n1; ++j) p.y[i * p.ldy + j] = p.b ? p.b[j] : 0.0f;
        return;
    }
    const int64_t rows = std::min(MC, (p.M + MR - 1) / MR * MR), kcap = std::min(p.K, kPackKC);
    std::vector<float, quellm::CacheAligned<float>> abuf(size_t(rows * kcap)), bbuf(size_t(NR * kcap));
    float* ap = abuf.data();
    float* bp = bbuf.data();
    for (int64_t k0 = 0; k0 < p.K; k0 += kPackKC) {
        const int64_t k1 = std::min(p.K, k0 + kPackKC), kc = k1 - k0;
        for (int64_t ib = 0; ib < p.M; ib += MC) {
            const int64_t ie = std::min(p.M, ib + MC);
            for (int64_t i0 = ib; i0 < ie; i0 += MR)
                pack_kmajor<MR>(p.x + i0 * p.ldx, p.ldx, int(std::min<int64_t>(MR, ie - i0)), k0, k1, ap + (i0 - ib) * kc);
            for (int64_t j0 = n0; j0 < n1; j0 += NR) {
                const int n = int(std::min<int64_t>(NR, n1 - j0));
                pack(j0, n, k0, k1, bp);
                for (int64_t i0 = ib; i0 < ie; i0 += MR)
                    micro<V, MR>(ap + (i0 - ib) * kc, bp, kc, p, i0, int(std::min<int64_t>(MR, ie - i0)), j0, n,
                                 k0 == 0);
            }
        }
    }
}

// The f32 product (W read from p.w) and the weight-only one (each strip's rows dequantized by
// `dequant(w, n, k0, k1, out)` first) over y[:, n0 : n1).
template <class V, int MR>
void matmul_packed(const quellm::MatmulParams& p, int64_t n0, int64_t n1) {
    packed_cols<V, MR>(p, n0, n1, [&](int64_t j0, int n, int64_t k0, int64_t k1, float* bp) {
        pack_strip<V>(p.w + j0 * p.K, p.K, n, k0, k1, bp);
    });
}
template <class V, int MR, class Dequant>
void gemm_wf_packed(const quellm::GemmWfParams& p, int64_t n0, int64_t n1, Dequant dequant) {
    const quellm::WfWeights& w = *p.w;
    std::vector<float> rows(size_t(2 * V::W * std::min(w.K, kPackKC)));  // the strip's W rows, dequantized
    const quellm::MatmulParams mp{p.x, nullptr, p.bias, p.y, p.M, w.N, w.K, w.K, w.N};
    packed_cols<V, MR>(mp, n0, n1, [&](int64_t j0, int n, int64_t k0, int64_t k1, float* bp) {
        const int64_t kc = k1 - k0;
        for (int c = 0; c < n; ++c) dequant(w, j0 + c, k0, k1, rows.data() + c * kc);
        pack_strip<V>(rows.data(), kc, n, 0, kc, bp);
    });
}

}  // namespace
