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
//   1. m > 1: mix the m sub-rows by H_m, several lane vectors at a time (from one row, or from
//      several rows when p is short): for small m a register-tiled GEMM over 4 lane vectors
//      (mix_vectors), from m = kFwhtGroupedMinM per-group sign-pattern tables (mix_lookup).
//      When p == W or p == 4·W the mixing applies H_p and the scale as it writes each sub-row
//      (it holds the whole sub-row in registers), and step 2 is skipped.
//   2. H_p on each sub-row: pass A = in-vector stages + up to G cross-vector stages on 2^G
//      consecutive registers; pass B = G more stages (stride 2^G registers) on the same
//      block of 4^G·W floats while it is in L1; then radix-2^G (or smaller) passes over the
//      whole sub-row for the remaining strides. The last pass applies `scale`.
// Every butterfly happens in the same order as fwht_ref, and the mixing follows fwht_mix_dot's
// order for its m, so the result is bit-identical to the scalar reference.
#pragma once

#include <cstddef>
#include <cstdint>

#include "fwht.h"

namespace {

using quellm::fwht_groups;
using quellm::kFwhtGroup;

// FwhtPrefetch as the kernels walk it: step() asks for the next two lines (of src, and of dst
// when it differs) into L2; the mixing loops call it once per column or group.
class Prefetch {
   public:
    explicit Prefetch(const quellm::FwhtPrefetch& n)
        : s_(reinterpret_cast<const char*>(n.src)), left_((n.bytes + 63) / 64),
          d_off_(n.dst == n.src ? 0 : reinterpret_cast<const char*>(n.dst) - s_) {}
    void step(int times = 1) {
        for (int i = 0; i < 2 * times && left_ > 0; ++i, --left_, s_ += 64) {
            __builtin_prefetch(s_, 0, 2);
            if (d_off_) __builtin_prefetch(s_ + d_off_, 1, 2);
        }
    }

   private:
    const char* s_;
    int64_t left_;
    std::ptrdiff_t d_off_;
};

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
void fwht_subrow(const float* src, float* dst, int64_t p, float scale, Prefetch& pf) {
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
        pf.step();
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

// ---- H_m mixing by table lookup -------------------------------------------------------------
//
// Each output sub-row is y_a = Σ_k ±(x_c0 ± x_c0+1 ± x_c0+2 ± x_c0+3) over the column groups k
// (fwht.h gives the exact order). A group's signed sum takes one of 16 values (8 sign patterns
// and their negations), so the kernel builds those 16 lane vectors once per group and each
// output then costs one load-and-add per group: about m²/4 adds per lane vector instead of m²
// multiply-adds, plus 22 operations per group to build its table.
//
// NV lane vectors are mixed together (they share the offset loads): vector j starts at xs[j] (sub-row
// 0 of some row, at some lane offset) and its sub-row c lies at xs[j] + c·p. Tables cover KB
// groups at a time so they stay in L1; outputs accumulate in `part` between group blocks and go
// to ys[j] + a·p after the last one (xs may equal ys: every input is read before the first
// output is written). When p == W a lane vector is a whole sub-row, so H_p and the scale are
// applied on the way out (`whole_subrow`); likewise when p == 4·W and NV == 4 (the 4 lane vectors
// of a tile, consecutive chunks of one row, are one whole sub-row): the in-vector stages and a
// radix-4 stage, as fwht_subrow's pass A.
template <int NV>
constexpr int kMixKB = NV == 4 ? 4 : 8;  // groups per table block: KB·16·NV·W floats (16 KiB at W = 16)

template <class V, int R, int NV>
inline void mix_accumulate(const float* tab, float* part, float* const* ys, int64_t p, int m, int a0, int kb0,
                           int kn, const int32_t* offs, bool first, bool last, bool whole_subrow, float scale,
                           Prefetch& pf) {
    constexpr int W = V::W;
    using reg = typename V::reg;
    pf.step(kn);
    reg acc[R][NV];
    for (int r = 0; r < R; ++r)
        for (int j = 0; j < NV; ++j) acc[r][j] = first ? V::zero() : V::load(part + ((a0 + r) * NV + j) * W);
    // offs[k·m + a]: row a's entry in group k's table, in floats at NV = 2 (halved for NV = 1);
    // group-major, so one pointer walks the R rows of every group
    const int32_t* ok = offs + int64_t(kb0) * m + a0;
    for (int k = 0; k < kn; ++k, ok += m) {
        const float* tk = tab + k * 16 * NV * W;
        for (int r = 0; r < R; ++r) {
            const float* t = tk + (NV == 4 ? ok[r] << 1 : NV == 2 ? ok[r] : ok[r] >> 1);
            for (int j = 0; j < NV; ++j) acc[r][j] = V::add(acc[r][j], V::load(t + j * W));
        }
    }
    if (!last) {
        for (int r = 0; r < R; ++r)
            for (int j = 0; j < NV; ++j) V::store(part + ((a0 + r) * NV + j) * W, acc[r][j]);
        return;
    }
    const reg sc = V::set1(scale);
    if (NV == 4 && p == 4 * W) {  // the tile's 4 lane vectors are one whole sub-row
        for (int r = 0; r < R; ++r) {
            reg v[4];
            for (int j = 0; j < 4; ++j) v[j] = V::in_vector(acc[r][j]);
            bfly_regs<V, 4>(v);
            for (int j = 0; j < 4; ++j) V::store(ys[j] + (a0 + r) * p, scale == 1.0f ? v[j] : V::mul(v[j], sc));
        }
        return;
    }
    for (int r = 0; r < R; ++r)
        for (int j = 0; j < NV; ++j) {
            reg v = acc[r][j];
            if (whole_subrow) {
                v = V::in_vector(v);
                if (scale != 1.0f) v = V::mul(v, sc);
            }
            V::store(ys[j] + (a0 + r) * p, v);
        }
}

template <class V, int NV>
void mix_lookup(const float* const* xs, float* const* ys, int64_t p, int m, const int32_t* offs, float* tmp,
                bool whole_subrow, float scale, Prefetch& pf) {
    constexpr int W = V::W, MR = NV == 4 ? V::MIX_MR / 2 : V::MIX_MR;  // MR × NV accumulators
    using reg = typename V::reg;
    const int ng = fwht_groups(m);
    // 64-byte aligned scratch: part (m·NV·W) then the tables (kMixKB·16·NV·W)
    float* part = reinterpret_cast<float*>((reinterpret_cast<uintptr_t>(tmp) + 63) & ~uintptr_t(63));
    float* tab = part + int64_t(m) * NV * W;
    const reg zero = V::zero();
    for (int kb0 = 0; kb0 < ng; kb0 += kMixKB<NV>) {
        const int kn = ng - kb0 < kMixKB<NV> ? ng - kb0 : kMixKB<NV>;
        for (int k = 0; k < kn; ++k) {
            const int c0 = (kb0 + k) * kFwhtGroup, g = m - c0 < kFwhtGroup ? m - c0 : kFwhtGroup;
            float* tk = tab + k * 16 * NV * W;
            if (g == 4) {  // every group when 4 | m (all Hadamard orders > 2): unrolled, so e[] stays in registers
                for (int j = 0; j < NV; ++j) {
                    const float* x = xs[j] + c0 * p;
                    const reg x0 = V::load(x), x1 = V::load(x + p), x2 = V::load(x + 2 * p), x3 = V::load(x + 3 * p);
                    const reg a0 = V::add(x0, x1), a1 = V::sub(x0, x1);
                    const reg b0 = V::add(a0, x2), b1 = V::add(a1, x2), b2 = V::sub(a0, x2), b3 = V::sub(a1, x2);
                    const reg e[8] = {V::add(b0, x3), V::add(b1, x3), V::add(b2, x3), V::add(b3, x3),
                                      V::sub(b0, x3), V::sub(b1, x3), V::sub(b2, x3), V::sub(b3, x3)};
                    for (int q = 0; q < 8; ++q) {
                        V::store(tk + (q * NV + j) * W, e[q]);
                        V::store(tk + ((8 + q) * NV + j) * W, V::sub(zero, e[q]));
                    }
                }
                continue;
            }
            for (int j = 0; j < NV; ++j) {
                // e[q]: x_c0 then ± each further column, bit i-1 of q choosing '-' for column c0+i
                reg e[8];
                e[0] = V::load(xs[j] + c0 * p);
                for (int i = 1; i < g; ++i) {
                    const reg x = V::load(xs[j] + (c0 + i) * p);
                    const int half = 1 << (i - 1);
                    for (int q = 0; q < half; ++q) {
                        e[q + half] = V::sub(e[q], x);
                        e[q] = V::add(e[q], x);
                    }
                }
                // acc - t is acc + (0 - t) bit for bit (acc is never -0), NaN payloads aside
                for (int q = 0; q < (1 << (g - 1)); ++q) {
                    V::store(tk + (q * NV + j) * W, e[q]);
                    V::store(tk + ((8 + q) * NV + j) * W, V::sub(zero, e[q]));
                }
            }
        }
        const bool first = kb0 == 0, last = kb0 + kn == ng;
        int a0 = 0;
        for (; a0 + MR <= m; a0 += MR)
            mix_accumulate<V, MR, NV>(tab, part, ys, p, m, a0, kb0, kn, offs, first, last, whole_subrow, scale, pf);
        for (; a0 + 4 <= m; a0 += 4)
            mix_accumulate<V, 4, NV>(tab, part, ys, p, m, a0, kb0, kn, offs, first, last, whole_subrow, scale, pf);
        for (; a0 < m; ++a0)
            mix_accumulate<V, 1, NV>(tab, part, ys, p, m, a0, kb0, kn, offs, first, last, whole_subrow, scale, pf);
    }
}

// H_m mixing for small m (below kFwhtGroupedMinM), NV "lane vectors" at once: vector j starts at xs[j] (sub-row 0 of some row, at
// some lane offset) and its sub-row c lies at xs[j] + c·p. For every output sub-row a:
//     ys[j] + a·p  =  Σ_c H[a, c] · (xs[j] + c·p)       (summed c = 0..m-1, exact ±1 products:
//                                                        fwht_mix_dot's order for m < kFwhtGroupedMinM)
// The vectors may come from one row (p ≥ NV·W) or from several rows (short p), so the MR×NV
// register tile stays full: per c, NV loads and MR broadcasts feed MR·NV FMAs. Results go
// through tmp (m·NV·W floats) so xs may equal ys. hT is H transposed: hT[c·m + a] = H[a, c].
//
// When p == W each lane vector is a whole sub-row, so H_p (the in-register stages) and the
// scale are applied here on the way out (`whole_subrow`), saving a pass per sub-row; likewise
// when p == 4·W, where the 4 lane vectors of a tile (consecutive chunks of one row, as fwht_rows
// groups them) are one whole sub-row: the in-vector stages and a radix-4 stage, as fwht_subrow.
template <class V, int MR, int NV>
void mix_vectors(const float* const* xs, float* const* ys, int64_t p, int m, const float* hT, float* tmp,
                 bool whole_subrow, float scale, Prefetch& pf) {
    constexpr int W = V::W;
    using reg = typename V::reg;
    int a0 = 0;
    for (; a0 + MR <= m; a0 += MR) {
        reg acc[MR][NV];
        for (int r = 0; r < MR; ++r)
            for (int j = 0; j < NV; ++j) acc[r][j] = V::zero();
        for (int c = 0; c < m; ++c) {
            pf.step();
            reg xv[NV];
            for (int j = 0; j < NV; ++j) xv[j] = V::load(xs[j] + c * p);
            const float* hc = hT + c * m + a0;
            for (int r = 0; r < MR; ++r) {
                const reg h = V::set1(hc[r]);
                for (int j = 0; j < NV; ++j) acc[r][j] = V::fmadd(h, xv[j], acc[r][j]);
            }
        }
        for (int r = 0; r < MR; ++r)
            for (int j = 0; j < NV; ++j) V::store(tmp + ((a0 + r) * NV + j) * W, acc[r][j]);
    }
    for (; a0 < m; ++a0) {  // tail rows of H, one at a time
        reg acc[NV];
        for (int j = 0; j < NV; ++j) acc[j] = V::zero();
        for (int c = 0; c < m; ++c) {
            const reg h = V::set1(hT[c * m + a0]);
            for (int j = 0; j < NV; ++j) acc[j] = V::fmadd(h, V::load(xs[j] + c * p), acc[j]);
        }
        for (int j = 0; j < NV; ++j) V::store(tmp + (a0 * NV + j) * W, acc[j]);
    }
    if (whole_subrow) {
        const reg sc = V::set1(scale);
        for (int a = 0; a < m; ++a)
            for (int j = 0; j < NV; ++j) {
                const reg v = V::in_vector(V::load(tmp + (a * NV + j) * W));
                V::store(ys[j] + a * p, scale == 1.0f ? v : V::mul(v, sc));
            }
        return;
    }
    if (NV == 4 && p == 4 * W) {  // the 4 lane vectors are one whole sub-row: fwht_subrow's pass A here
        const reg sc = V::set1(scale);
        for (int a = 0; a < m; ++a) {
            reg v[4];
            for (int j = 0; j < 4; ++j) v[j] = V::in_vector(V::load(tmp + (a * NV + j) * W));
            bfly_regs<V, 4>(v);
            for (int j = 0; j < 4; ++j) V::store(ys[j] + a * p, scale == 1.0f ? v[j] : V::mul(v[j], sc));
        }
        return;
    }
    for (int a = 0; a < m; ++a)
        for (int j = 0; j < NV; ++j) V::store(ys[j] + a * p, V::load(tmp + (a * NV + j) * W));
}

// nrows consecutive rows (row stride n = m·p) of dst = scale · (H_m ⊗ H_p) · src. Requires
// p ≥ W; tmp holds fwht_scratch_floats(m) floats.
template <class V>
void fwht_rows(const float* src, float* dst, int64_t nrows, int64_t p, int m, const quellm::FwhtMix& mx, float scale,
               float* tmp, const quellm::FwhtPrefetch& next) {
    constexpr int W = V::W;
    Prefetch pf(next);
    const int64_t n = int64_t(m) * p;
    if (m > 1) {
        // Enumerate the (row, lane chunk) vectors of the group and mix NV at a time: 4 for the
        // register-tiled small-m kernel, 2 for the tables (4 when p = 4·W, a whole sub-row).
        const int64_t per_row = p / W, total = nrows * per_row;
        auto lane = [&](int64_t v, const float*& x, float*& y) {
            const int64_t r = v / per_row, off = (v % per_row) * W;
            x = src + r * n + off;
            y = dst + r * n + off;
        };
        int64_t v = 0;
        if (m < quellm::kFwhtGroupedMinM) {
            for (; v + 4 <= total; v += 4) {
                const float* xs[4];
                float* ys[4];
                for (int j = 0; j < 4; ++j) lane(v + j, xs[j], ys[j]);
                mix_vectors<V, V::MIX_DENSE_MR, 4>(xs, ys, p, m, mx.hT, tmp, p == W, scale, pf);
            }
            for (; v < total; ++v) {
                const float* xs[1];
                float* ys[1];
                lane(v, xs[0], ys[0]);
                mix_vectors<V, V::MIX_DENSE_MR, 1>(xs, ys, p, m, mx.hT, tmp, p == W, scale, pf);
            }
        } else {
            if (p == 4 * W)  // a sub-row per tile of 4: H_p is applied on the way out
                for (; v + 4 <= total; v += 4) {
                    const float* xs[4];
                    float* ys[4];
                    for (int j = 0; j < 4; ++j) lane(v + j, xs[j], ys[j]);
                    mix_lookup<V, 4>(xs, ys, p, m, mx.offs, tmp, false, scale, pf);
                }
            for (; v + 2 <= total; v += 2) {
                const float* xs[2];
                float* ys[2];
                for (int j = 0; j < 2; ++j) lane(v + j, xs[j], ys[j]);
                mix_lookup<V, 2>(xs, ys, p, m, mx.offs, tmp, p == W, scale, pf);
            }
            for (; v < total; ++v) {
                const float* xs[1];
                float* ys[1];
                lane(v, xs[0], ys[0]);
                mix_lookup<V, 1>(xs, ys, p, m, mx.offs, tmp, p == W, scale, pf);
            }
        }
        // H_p and the scale were applied by the mixing
        if (p == W || p == 4 * W) return;
        for (int64_t r = 0; r < nrows; ++r)
            for (int a = 0; a < m; ++a) fwht_subrow<V>(dst + r * n + a * p, dst + r * n + a * p, p, scale, pf);
    } else {
        for (int64_t r = 0; r < nrows; ++r) fwht_subrow<V>(src + r * n, dst + r * n, p, scale, pf);
    }
}

}  // namespace
