// formats_int.cpp — scalar references of the per-row / per-group / per-tensor formats:
// int4 / int8 (symmetric, asymmetric; tensor, row, group; clip) and OliVe OVP (ovp4, ovp4_flint,
// ovp8; encode given the scales, decode), plus the OVP grid tables. The twin is
// python/quellm/formats.py (IntFormat, OvpFormat); formulas in formats_elem.h.
//
// Data: x / y (rows, K) f32; codes (rows, K·bits/8); scales / zeros one per block of
// format_block_len(p) elements in row-major order (a single one per tensor).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "common.h"
#include "formats.h"
#include "formats_elem.h"

namespace quellm {

// ---- int reference --------------------------------------------------------------------------

namespace {

void put_code(uint8_t* row, int64_t i, int bits, uint32_t c) {
    if (bits == 8) {
        row[i] = uint8_t(c);
    } else {  // 4 bits
        uint8_t& b = row[i / 2];
        b = (i & 1) ? uint8_t((b & 0x0F) | (c << 4)) : uint8_t((b & 0xF0) | c);
    }
}

void int_range(int bits, bool sym, bool narrow, float* qmin, float* qmax) {
    const int hi = sym ? (1 << (bits - 1)) - 1 : (1 << bits) - 1;
    *qmax = float(hi);
    *qmin = sym ? (narrow ? -float(hi) : -float(hi) - 1.0f) : 0.0f;
}

}  // namespace

void int_encode_ref(const FormatParams& p) {
    const int bits = format_element_bits(p);
    const int64_t n = p.rows * p.K, blen = format_block_len(p), nb = n / blen;
    const char* nm = format_traits(p.type).name;
    for (int64_t i = 0; i < n; ++i)
        QUELLM_CHECK(std::isfinite(p.x[i]), nm, ": input contains NaN or Inf, which this format cannot encode (row ",
                     i / p.K, ")");
    float qmin, qmax;
    int_range(bits, p.sym, p.narrow, &qmin, &qmax);
    float* s = static_cast<float*>(p.scales);
    const int64_t row_bytes = p.K * bits / 8;
    std::fill(p.codes, p.codes + p.rows * row_bytes, uint8_t(0));
    for (int64_t b = 0; b < nb; ++b) {
        const float* xb = p.x + b * blen;
        if (!p.scales_given) {
            if (p.sym) {
                float amax = 0.0f;
                for (int64_t i = 0; i < blen; ++i) amax = std::max(amax, std::fabs(xb[i]));
                s[b] = int_scale_sym(amax, p.clip, int(qmax));
            } else {
                float mn = xb[0], mx = xb[0];
                for (int64_t i = 1; i < blen; ++i) {
                    mn = std::min(mn, xb[i]);
                    mx = std::max(mx, xb[i]);
                }
                QUELLM_CHECK(int_scale_asym(mn, mx, p.clip, int(qmax), &s[b], &p.zeros[b]), nm,
                             ": value range exceeds float32");
            }
        }
        const float z = p.sym ? 0.0f : p.zeros[b];
        for (int64_t i = 0; i < blen; ++i) {
            const int64_t e = b * blen + i, r = e / p.K, k = e % p.K;
            put_code(p.codes + r * row_bytes, k, bits, int_encode(xb[i], s[b], z, qmin, qmax, (1u << bits) - 1));
        }
    }
}

void int_decode_ref(const FormatParams& p) {
    const int bits = format_element_bits(p);
    const int64_t n = p.rows * p.K, blen = format_block_len(p), row_bytes = p.K * bits / 8;
    const float* s = static_cast<const float*>(p.scales);
    for (int64_t e = 0; e < n; ++e) {
        const int64_t b = e / blen, r = e / p.K, k = e % p.K;
        const uint32_t c = code_at(p.codes + r * row_bytes, k, bits);
        p.y[e] = int_value(c, bits, p.sym, p.sym ? 0.0f : p.zeros[b]) * s[b];
    }
}

// ---- OVP tables -----------------------------------------------------------------------------

namespace {

struct GridPoint {
    double v;
    int code;
    bool outlier;
};

// formats._OvpType: normal grid of `kind` ∪ abfloat outliers S|E(2)|M(ob_m), value
// (1 + M/2^ob_m)·2^(E + bias), E = M = 0 reserved.
OvpTables make_ovp_tables(FormatType t) {
    std::vector<GridPoint> pts;
    int bits, bias, ob_m;
    if (t == QUELLM_TYPE_OVP4) {
        for (int v = -7; v <= 7; ++v) pts.push_back({double(v), v & 0xF, false});
        bits = 4, bias = 3, ob_m = 1;
    } else if (t == QUELLM_TYPE_OVP4_FLINT) {
        const int mags[8] = {0, 1, 2, 3, 4, 6, 8, 16};
        pts.push_back({0.0, 0, false});
        for (int i = 1; i < 8; ++i) {
            pts.push_back({double(mags[i]), i, false});
            pts.push_back({-double(mags[i]), 8 | i, false});
        }
        bits = 4, bias = 4, ob_m = 1;
    } else {
        for (int v = -127; v <= 127; ++v) pts.push_back({double(v), v & 0xFF, false});
        bits = 8, bias = 7, ob_m = 5;
    }
    OvpTables tb{};
    tb.bits = bits;
    tb.ident = 1 << (bits - 1);
    for (const GridPoint& g : pts) {
        tb.normal_max = std::max(tb.normal_max, float(g.v));
        tb.normal_value[g.code] = float(g.v);
    }
    for (int e = 0; e < 4; ++e)
        for (int m = 0; m < (1 << ob_m); ++m) {
            if (e == 0 && m == 0) continue;
            const double v = (1.0 + double(m) / (1 << ob_m)) * std::ldexp(1.0, e + bias);
            const int c = (e << ob_m) | m;
            pts.push_back({v, c, true});
            pts.push_back({-v, c | (1 << (bits - 1)), true});
            tb.outlier_value[c] = float(v);
            tb.outlier_value[c | (1 << (bits - 1))] = float(-v);
        }
    std::sort(pts.begin(), pts.end(), [](const GridPoint& a, const GridPoint& b) { return a.v < b.v; });
    QUELLM_CHECK(int(pts.size()) <= OvpTables::kMaxGrid, "ovp grid too large");
    tb.n = int(pts.size());
    tb.uniform_lo = -1;
    for (int i = 0; i < tb.n; ++i) {
        if (t != QUELLM_TYPE_OVP4_FLINT && !pts[size_t(i)].outlier && pts[size_t(i)].v == -double(tb.normal_max))
            tb.uniform_lo = i;
        tb.grid[i] = float(pts[size_t(i)].v);
        tb.codes[i] = uint8_t(pts[size_t(i)].code);
        if (i + 1 < tb.n) {
            tb.mids[i] = float((pts[size_t(i)].v + pts[size_t(i + 1)].v) / 2);
            tb.tie_up[i] = !(pts[size_t(i)].outlier && !pts[size_t(i + 1)].outlier);
        }
    }
    return tb;
}

}  // namespace

const OvpTables& ovp_tables(FormatType t) {
    static const OvpTables t4 = make_ovp_tables(QUELLM_TYPE_OVP4);
    static const OvpTables tf = make_ovp_tables(QUELLM_TYPE_OVP4_FLINT);
    static const OvpTables t8 = make_ovp_tables(QUELLM_TYPE_OVP8);
    QUELLM_CHECK(t == QUELLM_TYPE_OVP4 || t == QUELLM_TYPE_OVP4_FLINT || t == QUELLM_TYPE_OVP8,
                 "ovp_tables: not an OVP format");
    return t == QUELLM_TYPE_OVP4 ? t4 : (t == QUELLM_TYPE_OVP4_FLINT ? tf : t8);
}

const int kOvpActSearchK[8] = {75, 100, 125, 150, 175, 200, 225, 249};

// ---- OVP reference --------------------------------------------------------------------------

void ovp_encode_ref(const FormatParams& p) {
    const OvpTables& t = ovp_tables(p.type);
    const char* nm = format_traits(p.type).name;
    QUELLM_CHECK(p.scales_given, nm, ": the C++ encoder needs the scales (the scale search runs in formats.py)");
    const float* s = static_cast<const float*>(p.scales);
    const bool per_tensor = p.gran == ScaleGran::TENSOR;
    for (int64_t r = 0; r < p.rows; ++r) {
        const float* x = p.x + r * p.K;
        for (int64_t k = 0; k < p.K; ++k)
            QUELLM_CHECK(std::isfinite(x[k]), nm, ": input contains NaN or Inf, which this format cannot encode (row ",
                         r, ")");
        const float sr = s[per_tensor ? 0 : r];
        for (int64_t j = 0; j < p.K / 2; ++j) {
            uint32_t c0, c1;
            ovp_encode_pair(t, x[2 * j], x[2 * j + 1], sr, p.keep_larger, &c0, &c1);
            if (t.bits == 4) {
                p.codes[r * (p.K / 2) + j] = uint8_t(c0 | (c1 << 4));
            } else {
                p.codes[r * p.K + 2 * j] = uint8_t(c0);
                p.codes[r * p.K + 2 * j + 1] = uint8_t(c1);
            }
        }
    }
}

void ovp_decode_ref(const FormatParams& p) {
    const OvpTables& t = ovp_tables(p.type);
    const float* s = static_cast<const float*>(p.scales);
    const bool per_tensor = p.gran == ScaleGran::TENSOR;
    for (int64_t r = 0; r < p.rows; ++r) {
        const float sr = s[per_tensor ? 0 : r];
        for (int64_t j = 0; j < p.K / 2; ++j) {
            uint32_t c0, c1;
            if (t.bits == 4) {
                const uint8_t b = p.codes[r * (p.K / 2) + j];
                c0 = b & 0xFu;
                c1 = uint32_t(b >> 4);
            } else {
                c0 = p.codes[r * p.K + 2 * j];
                c1 = p.codes[r * p.K + 2 * j + 1];
            }
            ovp_decode_pair(t, c0, c1, sr, &p.y[r * p.K + 2 * j], &p.y[r * p.K + 2 * j + 1]);
        }
    }
}

}  // namespace quellm
