// formats_simd.h — the format element kernels (FormatKernels, formats_kernels.h) written once
// over a small vector interface V, instantiated by formats_avx2.cpp (8 lanes) and
// formats_avx512.cpp (16 lanes). Each kernel is the vector form of the formats_elem.h helper
// named in its comment: the same integer steps on the float32 bits, so results are identical;
// the bit length of a significand comes from its exact int→float conversion (no lzcnt needed).
// Tails run the scalar helpers. Include only from an ISA translation unit, after defining V.
#pragma once

#include <algorithm>
#include <cstdint>

#include "formats_kernels.h"

namespace quellm::x86 {
namespace {

template <class V>
struct FmtSimd {
    using iv = typename V::iv;
    using fv = typename V::fv;
    static constexpr int W = V::W;

    // round_shift on lanes: sig < 2^24, shift clamped to [1, 31].
    static iv round_shift_v(iv sig, iv sh, bool rna) {
        sh = V::min_i32(V::max_i32(sh, V::set1i(1)), V::set1i(31));
        const iv q = V::srlv(sig, sh);
        const iv rem = V::sub(sig, V::sllv(q, sh));
        const iv half = V::sllv(V::set1i(1), V::sub(sh, V::set1i(1)));
        typename V::mk up;
        if (rna) up = V::mnot(V::cmpgt(half, rem));
        else up = V::mor(V::cmpgt(rem, half), V::mand(V::cmpeq(rem, half), V::nonzero(V::and_(q, V::set1i(1)))));
        return V::add_if(q, up);
    }

    static iv sig_of(iv u, iv* be) {
        *be = V::and_(V::srli(u, 23), V::set1i(0xFF));
        const iv man = V::and_(u, V::set1i(0x7FFFFF));
        return V::sel(V::cmpeq(*be, V::set1i(0)), man, V::or_(man, V::set1i(0x800000)));
    }

    static uint32_t absmax_bits(const float* x, int64_t n) {
        iv m = V::set1i(0);
        int64_t i = 0;
        for (; i + W <= n; i += W) m = V::max_u32(m, V::and_(V::loadbits(x + i), V::set1i(0x7FFFFFFF)));
        uint32_t r = V::hmax_u32(m);
        for (; i < n; ++i) r = std::max(r, f32_to_bits(x[i]) & 0x7FFFFFFFu);
        return r;
    }

    static void minmax(const float* x, int64_t n, float* mn, float* mx) {
        float a = x[0], b = x[0];
        int64_t i = 0;
        if (n >= W) {
            fv va = V::load(x), vb = va;
            for (i = W; i + W <= n; i += W) {
                const fv v = V::load(x + i);
                va = V::min_ps(va, v);
                vb = V::max_ps(vb, v);
            }
            a = V::hmin_ps(va);
            b = V::hmax_ps(vb);
        }
        for (; i < n; ++i) {
            a = std::min(a, x[i]);
            b = std::max(b, x[i]);
        }
        *mn = a;
        *mx = b;
    }

    // int_encode
    static void int_quant(const float* x, int64_t n, float s, float z, float qmin, float qmax, uint32_t mask,
                          uint8_t* out) {
        const fv vs = V::set1(s), vz = V::set1(z), lo = V::set1(qmin), hi = V::set1(qmax);
        const iv vm = V::set1i(int(mask));
        int64_t i = 0;
        for (; i + W <= n; i += W) {
            fv v = V::add_ps(V::rint(V::div_ps(V::load(x + i), vs)), vz);
            v = V::min_ps(V::max_ps(v, lo), hi);
            V::store_bytes(out + i, V::and_(V::cvtt(v), vm));
        }
        for (; i < n; ++i) out[i] = uint8_t(int_encode(x[i], s, z, qmin, qmax, mask));
    }

    // elem_encode(u, sp, offset, rna) on lanes of float32 bits.
    static iv elem_code(iv u, const ElemSpec& sp, int offset, bool rna) {
        const iv voff = V::set1i(offset), etmin = V::set1i(1 - sp.bias), vm = V::set1i(sp.mbits);
        const iv vbias1 = V::set1i(sp.bias - 1), vmax = V::set1i(sp.max_code), vsb = V::set1i(sp.bits - 1);
        iv be;
        const iv sig = sig_of(u, &be);
        const iv e2 = V::sub(V::max_i32(be, V::set1i(1)), V::set1i(150));
        const iv fl = V::castfi(V::cvt_i2f(sig));  // exact: sig < 2^24
        const iv ex = V::add(e2, V::sub(V::srli(fl, 23), V::set1i(127)));  // e2 + bit_length − 1
        const iv et = V::max_i32(V::sub(ex, voff), etmin);
        const iv q = round_shift_v(sig, V::sub(V::sub(et, vm), V::sub(e2, voff)), rna);
        const iv mag = V::min_i32(V::add(V::sllv(V::add(et, vbias1), vm), q), vmax);
        return V::or_(V::sllv(V::srli(u, 31), vsb), mag);
    }

    // elem_encode (of x / d)
    static void elem_quant(const float* x, int64_t n, float d, const ElemSpec& sp, int offset, bool rna,
                           uint8_t* out) {
        const bool div = d != 1.0f;
        const fv vd = V::set1(d);
        int64_t i = 0;
        for (; i + W <= n; i += W) {
            fv xv = V::load(x + i);
            if (div) xv = V::div_ps(xv, vd);
            V::store_bytes(out + i, elem_code(V::castfi(xv), sp, offset, rna));
        }
        for (; i < n; ++i) out[i] = uint8_t(elem_encode(f32_to_bits(div ? x[i] / d : x[i]), sp, offset, rna));
    }

    // fixed_encode
    static void fixed_quant(const float* x, int64_t n, int base, uint32_t qmax, int smb, bool rna, uint8_t* out) {
        const iv vbase = V::set1i(base), vq = V::set1i(int(qmax)), zero = V::set1i(0);
        int64_t i = 0;
        for (; i + W <= n; i += W) {
            const iv u = V::loadbits(x + i);
            iv be;
            const iv sig = sig_of(u, &be);
            const iv e2 = V::sub(V::max_i32(be, V::set1i(1)), V::set1i(150));
            const iv q = V::min_i32(round_shift_v(sig, V::sub(vbase, e2), rna), vq);
            const iv sign = V::srli(u, 31);
            iv code;
            if (smb == 0) code = V::sel(V::nonzero(sign), V::and_(V::sub(zero, q), V::set1i(0xFF)), q);
            else code = V::sel(V::nonzero(q), V::or_(V::sllv(sign, V::set1i(smb - 1)), q), zero);
            V::store_bytes(out + i, code);
        }
        for (; i < n; ++i) out[i] = uint8_t(fixed_encode(f32_to_bits(x[i]), base, qmax, smb, rna));
    }

    static void lut_decode(const uint8_t* c, int64_t n, const float* lut, float z, float s1, float s2, float* y) {
        const fv vz = V::set1(z), v1 = V::set1(s1), v2 = V::set1(s2);
        int64_t i = 0;
        for (; i + W <= n; i += W) {
            const fv v = V::gather(lut, V::load_bytes(c + i));
            V::store(y + i, V::mul_ps(V::mul_ps(V::sub_ps(v, vz), v1), v2));
        }
        for (; i < n; ++i) y[i] = ((lut[c[i]] - z) * s1) * s2;
    }

    // The OvpSnap constants of one call, in registers (the byte stores of the loops may alias t).
    struct OvpConst {
        fv two, halfv, lim, nlim, flo, fhi;
        iv ilim, ident, even, kl, nm, nnm, mask;
        const int32_t* cell;
        bool fast;
        explicit OvpConst(const OvpSnap& t, bool keep_larger)
            : two(V::set1(2.0f)), halfv(V::set1(0.5f)), lim(V::set1(float(t.lim))), nlim(V::set1(-float(t.lim))),
              flo(V::set1(float(t.fast_lo))), fhi(V::set1(float(t.fast_hi))), ilim(V::set1i(t.lim)),
              ident(V::set1i(t.ident)), even(V::even_lanes()), kl(V::set1i(keep_larger ? -1 : 0)),
              nm(V::set1i(int(t.normal_max))), nnm(V::set1i(-int(t.normal_max))), mask(V::set1i(t.code_mask)),
              cell(t.cell.data()), fast(t.fast_lo <= t.fast_hi) {}
    };

    // ovp_quant_pair on lanes of v = x / s (lanes 2j, 2j+1 hold a pair; booleans as all-ones int
    // lanes): the codes. The snap is arithmetic when every lane lies in the integer cells
    // (OvpSnap::fast_lo..fast_hi: normals only, so no pair rule), else one gather of OvpSnap::cell.
    static iv ovp_codes(fv v, const OvpConst& k) {
        const fv t2 = V::floor(V::mul_ps(v, k.two));
        if (k.fast && V::mall(V::mand(V::fcmpge(t2, k.flo), V::fcmple(t2, k.fhi)))) {
            const iv q = V::srai1(V::add(V::cvtt(t2), V::set1i(1)));  // (t + 1) >> 1: nearest integer, ties up
            return V::and_(V::min_i32(V::max_i32(q, k.nnm), k.nm), k.mask);
        }
        const iv edge = V::fmask(V::fcmpeq(V::mul_ps(t2, k.halfv), v));  // v = t/2 exactly: -1
        const iv ti = V::add(V::cvtt(V::min_ps(V::max_ps(t2, k.nlim), k.lim)), k.ilim);
        const iv e = V::gather_i(k.cell, V::sub(V::add(ti, ti), edge));
        const iv code = V::and_(e, V::set1i(0xFF));
        const iv ob = V::and_(e, V::set1i(0x100));
        if (V::none(ob)) return code;  // no outlier: the pair rule keeps every code
        const iv o = V::fmask(V::nonzero(ob));
        const fv av = V::abs_ps(v), avp = V::swap_pairs_f(av);
        const iv op = V::swap_pairs_i(o);
        const iv o_lo = V::blendv(k.even, o, op), o_hi = V::blendv(k.even, op, o);
        const fv av_lo = V::blendv_f(k.even, av, avp), av_hi = V::blendv_f(k.even, avp, av);
        const iv ge = V::fmask(V::fcmpge(av_lo, av_hi));
        // keep_lo = o_lo & (!keep_larger | !o_hi | |v_lo| >= |v_hi|)
        const iv keep_lo =
            V::and_(o_lo, V::or_(V::andnot(k.kl, V::set1i(-1)), V::or_(V::andnot(o_hi, V::set1i(-1)), ge)));
        const iv victim = V::blendv(k.even, V::andnot(keep_lo, o_hi), keep_lo);
        return V::blendv(victim, k.ident, code);
    }

    static void ovp_quant(const float* x, int64_t n, float s, const OvpSnap& t, bool keep_larger, uint8_t* out) {
        const OvpConst k(t, keep_larger);
        const fv vs = V::set1(s);
        int64_t i = 0;
        for (; i + W <= n; i += W) V::store_bytes(out + i, ovp_codes(V::div_ps(V::load(x + i), vs), k));
        for (; i < n; i += 2) ovp_quant_pair(x + i, s, t, keep_larger, out + i);
    }

    // ovp_quant straight into the row's storage (4-bit codes packed as pack4).
    static void ovp_row(const float* x, int64_t n, float s, const OvpSnap& t, bool keep_larger, uint8_t* out) {
        const OvpConst k(t, keep_larger);
        const fv vs = V::set1(s);
        const bool nib = t.bits == 4;
        int64_t i = 0;
        for (; i + W <= n; i += W) {
            const iv c = ovp_codes(V::div_ps(V::load(x + i), vs), k);
            if (nib) V::store_nib(out + i / 2, c);
            else V::store_bytes(out + i, c);
        }
        for (; i < n; i += 2) {
            uint8_t c[2];
            ovp_quant_pair(x + i, s, t, keep_larger, c);
            if (nib) out[i / 2] = uint8_t(c[0] | (c[1] << 4));
            else std::copy(c, c + 2, out + i);
        }
    }

    // nvfp4_block on W blocks at a time: the W block maxima in one vector (V::absmax16), their
    // scale codes with elem_code and NaN → 0x7F as elem_encode_f32, d = value(sb)·ts from the E4M3
    // table (non-finite blocks: sb = 0x7F, d = NaN, so zero codes as d = 0), then per block the
    // E2M1 codes of x / d packed on the fly.
    // E2M1 codes of y (finite or ±Inf) as elem_code(bits(y), spec_e2m1(), 0, rna), by table where
    // V has 32-entry lookups (V::kLut32): every E2M1 rounding threshold is a multiple of 1/4, so
    // the code of |y| depends only on the cell floor(4|y|) (clamped to 31, where all codes are 7)
    // and on whether |y| is its lower edge (a tie there: the tables hold elem_encode's answer).
    struct E2m1Tables {
        alignas(64) int32_t inside[32], edge[2][32];  // edge[rna]
        E2m1Tables() {
            for (int i = 0; i < 32; ++i) {
                inside[i] = int32_t(elem_encode(f32_to_bits((float(i) + 0.5f) / 4.0f), spec_e2m1(), 0, false));
                for (int r = 0; r < 2; ++r)
                    edge[r][i] = int32_t(elem_encode(f32_to_bits(float(i) / 4.0f), spec_e2m1(), 0, r == 1));
            }
        }
    };
    static iv e2m1_code(fv y, const E2m1Tables& tb, bool rna) {
        if constexpr (V::kLut32) {
            const fv a4 = V::mul_ps(V::abs_ps(y), V::set1(4.0f)), fl = V::floor(a4);
            const iv idx = V::cvtt(V::min_ps(fl, V::set1(31.0f)));
            const iv mag = V::sel(V::fcmpeq(fl, a4), V::lut32(tb.edge[rna], idx), V::lut32(tb.inside, idx));
            return V::or_(mag, V::slli(V::srli(V::castfi(y), 31), 3));
        } else {
            return elem_code(V::castfi(y), spec_e2m1(), 0, rna);
        }
    }

    static void nvfp4_row(const float* x, int64_t K, float ts, bool rna, uint8_t* sc, uint8_t* codes) {
        constexpr int B = QK_NVFP4;
        static_assert(B % W == 0, "a block is whole vectors");
        struct E4m3 {
            float v[256];
            E4m3() {
                for (int c = 0; c < 256; ++c) v[c] = elem_value(uint32_t(c), spec_e4m3());
            }
        };
        static const E4m3 lut;
        static const E2m1Tables e2m1;
        const int64_t nbr = K / B;
        const fv vts = V::set1(ts), six = V::set1(6.0f);
        const iv inf = V::set1i(0x7F800000), nan_code = V::set1i(0x7F);
        alignas(64) float dv[W];
        int64_t j = 0;
        for (; j + W <= nbr; j += W) {
            const float* xg = x + j * B;
            const iv am = V::absmax16(xg);
            const fv r = V::div_ps(V::div_ps(V::castif(am), six), vts);
            const iv ur = V::castfi(r);
            iv sb = elem_code(ur, spec_e4m3(), 0, false);
            sb = V::sel(V::cmpgt(V::and_(ur, V::set1i(0x7FFFFFFF)), inf), nan_code, sb);  // r NaN
            sb = V::sel(V::cmpgt(inf, am), sb, nan_code);                                  // finite block
            V::store(dv, V::mul_ps(V::gather(lut.v, sb), vts));
            V::store_bytes(sc + j, sb);
            for (int b = 0; b < W; ++b) {
                uint8_t* out = codes + (j + b) * (B / 2);
                if (dv[b] > 0.0f) {
                    const fv vd = V::set1(dv[b]);
                    for (int h = 0; h < B; h += W)
                        V::store_nib(out + h / 2, e2m1_code(V::div_ps(V::load(xg + b * B + h), vd), e2m1, rna));
                } else {
                    std::fill(out, out + B / 2, uint8_t(0));
                }
            }
        }
        for (; j < nbr; ++j) nvfp4_block(x + j * B, ts, rna, sc + j, codes + j * (B / 2));
    }

    // Plain loops: the compiler vectorizes them with this file's ISA flags.
    static void pack4(const uint8_t* c, int64_t n, uint8_t* out) {
        for (int64_t j = 0; j < n / 2; ++j) out[j] = uint8_t(c[2 * j] | (c[2 * j + 1] << 4));
    }
    static void unpack4(const uint8_t* in, int64_t n, uint8_t* c) {
        for (int64_t j = 0; j < n / 2; ++j) {
            c[2 * j] = in[j] & 0xF;
            c[2 * j + 1] = in[j] >> 4;
        }
    }

    static const FormatKernels& table() {
        static const FormatKernels k = {absmax_bits, minmax,   int_quant, elem_quant, fixed_quant, lut_decode,
                                        ovp_quant,   ovp_row,  nvfp4_row, pack4,      unpack4};
        return k;
    }
};

}  // namespace
}  // namespace quellm::x86
