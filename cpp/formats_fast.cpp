// formats_fast.cpp — the dispatched encoders/decoders: OpenMP over rows, element work through the
// FormatKernels table of the active ISA (scalar here; AVX2 / AVX-512 in arch/x86/formats_*.cpp).
// Same results, bit for bit, as the references in formats_int.cpp / formats_mx.cpp. NVFP4 and
// OVP encode whole rows in one kernel call (nvfp4_row, ovp_row: scales, codes and packing fused).
#include <omp.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "common.h"
#include "cpu_features.h"
#include "formats.h"
#include "formats_elem.h"
#include "formats_kernels.h"

namespace quellm {

ElemSpec mx_elem_spec(FormatType t, int* emax);  // formats_mx.cpp

// ---- scalar kernels -------------------------------------------------------------------------

namespace {

uint32_t absmax_bits_s(const float* x, int64_t n) {
    uint32_t m = 0;
    for (int64_t i = 0; i < n; ++i) m = std::max(m, f32_to_bits(x[i]) & 0x7FFFFFFFu);
    return m;
}
void minmax_s(const float* x, int64_t n, float* mn, float* mx) {
    float a = x[0], b = x[0];
    for (int64_t i = 1; i < n; ++i) {
        a = std::min(a, x[i]);
        b = std::max(b, x[i]);
    }
    *mn = a;
    *mx = b;
}
void int_quant_s(const float* x, int64_t n, float s, float z, float qmin, float qmax, uint32_t mask, uint8_t* out) {
    for (int64_t i = 0; i < n; ++i) out[i] = uint8_t(int_encode(x[i], s, z, qmin, qmax, mask));
}
void elem_quant_s(const float* x, int64_t n, float d, const ElemSpec& sp, int offset, bool rna, uint8_t* out) {
    for (int64_t i = 0; i < n; ++i)
        out[i] = uint8_t(elem_encode(f32_to_bits(d == 1.0f ? x[i] : x[i] / d), sp, offset, rna));
}
void fixed_quant_s(const float* x, int64_t n, int base, uint32_t qmax, int smb, bool rna, uint8_t* out) {
    for (int64_t i = 0; i < n; ++i) out[i] = uint8_t(fixed_encode(f32_to_bits(x[i]), base, qmax, smb, rna));
}
void lut_decode_s(const uint8_t* c, int64_t n, const float* lut, float z, float s1, float s2, float* y) {
    for (int64_t i = 0; i < n; ++i) y[i] = ((lut[c[i]] - z) * s1) * s2;
}
void ovp_quant_s(const float* x, int64_t n, float s, const OvpSnap& t, bool keep_larger, uint8_t* out) {
    for (int64_t j = 0; j < n; j += 2) ovp_quant_pair(x + j, s, t, keep_larger, out + j);
}
void pack4_s(const uint8_t* c, int64_t n, uint8_t* out) {
    for (int64_t j = 0; j < n / 2; ++j) out[j] = uint8_t(c[2 * j] | (c[2 * j + 1] << 4));
}
void unpack4_s(const uint8_t* in, int64_t n, uint8_t* c) {
    for (int64_t j = 0; j < n / 2; ++j) {
        c[2 * j] = in[j] & 0xF;
        c[2 * j + 1] = in[j] >> 4;
    }
}

void ovp_row_s(const float* x, int64_t n, float s, const OvpSnap& t, bool keep_larger, uint8_t* out) {
    for (int64_t j = 0; j < n; j += 2) {
        uint8_t c[2];
        ovp_quant_pair(x + j, s, t, keep_larger, c);
        if (t.bits == 4) out[j / 2] = uint8_t(c[0] | (c[1] << 4));
        else std::copy(c, c + 2, out + j);
    }
}
void nvfp4_row_s(const float* x, int64_t K, float ts, bool rna, uint8_t* sc, uint8_t* codes) {
    for (int64_t j = 0; j < K / QK_NVFP4; ++j) nvfp4_block(x + j * QK_NVFP4, ts, rna, sc + j, codes + j * (QK_NVFP4 / 2));
}

const FormatKernels kScalar = {absmax_bits_s, minmax_s, int_quant_s, elem_quant_s, fixed_quant_s, lut_decode_s,
                               ovp_quant_s, ovp_row_s, nvfp4_row_s, pack4_s, unpack4_s};

OvpSnap make_ovp_snap(FormatType type) {
    const OvpTables& t = ovp_tables(type);
    OvpSnap f;
    f.lim = int(2.0f * t.grid[t.n - 1]) + 2;
    f.ident = t.ident;
    f.bits = t.bits;
    f.normal_max = t.normal_max;
    for (int c = -f.lim; c <= f.lim; ++c) {
        f.inside.push_back(ovp_snap(t, float(2 * c + 1) / 4.0f));
        f.edge.push_back(ovp_snap(t, float(c) / 2.0f));
    }
    f.grid.assign(t.grid, t.grid + t.n);
    f.codes.assign(t.codes, t.codes + t.n);
    const auto entry = [&](int i) { return f.codes[size_t(i)] | (std::fabs(f.grid[size_t(i)]) > f.normal_max ? 0x100 : 0); };
    for (size_t c = 0; c < f.inside.size(); ++c) {
        f.cell.push_back(entry(f.inside[c]));
        f.cell.push_back(entry(f.edge[c]));
    }
    if (t.uniform_lo >= 0) {  // integer normals: the widest cell range around 0 where the arithmetic holds
        f.code_mask = (1 << f.bits) - 1;
        const int nm = int(f.normal_max);
        const auto arith_ok = [&](int c) {
            const int k = std::min(std::max((c + 1) >> 1, -nm), nm);
            for (int e = 0; e < 2; ++e)
                if (f.cell[size_t(2 * (c + f.lim) + e)] != (k & f.code_mask)) return false;  // also: not an outlier
            return true;
        };
        f.fast_lo = 0;
        f.fast_hi = -1;
        while (f.fast_hi + 1 <= f.lim && arith_ok(f.fast_hi + 1)) ++f.fast_hi;
        while (f.fast_lo - 1 >= -f.lim && arith_ok(f.fast_lo - 1)) --f.fast_lo;
        if (f.fast_hi < 0) f.fast_lo = 1;
    }
    return f;
}

const FormatKernels& kernels() {
    switch (active_isa()) {
#if defined(QUELLM_X86_PATHS)
        case Isa::AVX512: return x86::format_kernels_avx512();
        case Isa::AVX2: return x86::format_kernels_avx2();
#endif
        default: return kScalar;
    }
}

// Packs / unpacks one row between byte-per-element codes and `bits`-bit storage.
void pack_row(const FormatKernels& kn, const uint8_t* c, int64_t K, int bits, uint8_t* out) {
    if (bits == 8) std::copy(c, c + K, out);
    else if (bits == 4) kn.pack4(c, K, out);
    else
        for (int64_t j = 0; j < K / 4; ++j) {
            const uint32_t q[4] = {c[4 * j], c[4 * j + 1], c[4 * j + 2], c[4 * j + 3]};
            pack6(q, out + 3 * j);
        }
}
const uint8_t* unpack_row(const FormatKernels& kn, const uint8_t* in, int64_t K, int bits, uint8_t* tmp) {
    if (bits == 8) return in;
    if (bits == 4) kn.unpack4(in, K, tmp);
    else
        for (int64_t j = 0; j < K / 4; ++j) {
            uint32_t q[4];
            unpack6(in + 3 * j, q);
            for (int t = 0; t < 4; ++t) tmp[4 * j + t] = uint8_t(q[t]);
        }
    return tmp;
}

// Decode tables (256 floats) by kind, built once.
struct Luts {
    float elem[5][256];   // E2M1, E2M3, E3M2, E4M3, E5M2 (codes beyond 2^bits unused)
    float mxint8[256];    // int8 / 64
    float sint[2][256];   // two's complement value of 4- / 8-bit codes
    float uint[256];      // unsigned value
    float bfp[3][256];    // sign-magnitude value, m = 4, 6, 8
    Luts() {
        const ElemSpec specs[5] = {spec_e2m1(), spec_e2m3(), spec_e3m2(), spec_e4m3(), spec_e5m2()};
        for (int c = 0; c < 256; ++c) {
            for (int i = 0; i < 5; ++i) elem[i][c] = elem_value(uint32_t(c) & ((1u << specs[i].bits) - 1u), specs[i]);
            mxint8[c] = float(int8_t(uint8_t(c))) / 64.0f;
            sint[0][c] = int_value(uint32_t(c) & 0xFu, 4, true, 0.0f);
            sint[1][c] = int_value(uint32_t(c), 8, true, 0.0f);
            uint[c] = float(c);
            for (int i = 0; i < 3; ++i) {
                const int m = 4 + 2 * i;
                const uint32_t cc = uint32_t(c) & ((1u << m) - 1u);
                const float mag = float(cc & ((1u << (m - 1)) - 1u));
                bfp[i][c] = (cc >> (m - 1)) & 1u ? -mag : mag;
            }
        }
    }
};
const Luts& luts() {
    static const Luts l;
    return l;
}
const float* elem_lut(const ElemSpec& s) {
    const Luts& l = luts();
    if (s.bits == 4) return l.elem[0];
    if (s.bits == 6) return s.ebits == 2 ? l.elem[1] : l.elem[2];
    return s.ebits == 4 ? l.elem[3] : l.elem[4];
}

// First failing row of a parallel loop, reported after it (no throwing inside OpenMP regions).
struct RowError {
    std::atomic<int64_t> row{std::numeric_limits<int64_t>::max()};
    std::atomic<int> kind{0};
    void set(int64_t r, int k) {
        int64_t cur = row.load();
        while (r < cur && !row.compare_exchange_weak(cur, r)) {
        }
        if (row.load() == r) kind.store(k);
    }
};

int threads_for(int64_t rows) { return int(std::max<int64_t>(1, std::min<int64_t>(num_threads(), rows))); }

}  // namespace

const FormatKernels& format_kernels_scalar() { return kScalar; }

const OvpSnap& ovp_snap_table(FormatType t) {
    static const OvpSnap t4 = make_ovp_snap(QUELLM_TYPE_OVP4);
    static const OvpSnap tf = make_ovp_snap(QUELLM_TYPE_OVP4_FLINT);
    static const OvpSnap t8 = make_ovp_snap(QUELLM_TYPE_OVP8);
    return t == QUELLM_TYPE_OVP4 ? t4 : (t == QUELLM_TYPE_OVP4_FLINT ? tf : t8);
}

// ---- int ------------------------------------------------------------------------------------

void int_encode(const FormatParams& p) {
    const FormatKernels& kn = kernels();
    const int bits = format_element_bits(p);
    const char* nm = format_traits(p.type).name;
    const float qmax = float(p.sym ? (1 << (bits - 1)) - 1 : (1 << bits) - 1);
    const float qmin = p.sym ? (p.narrow ? -qmax : -qmax - 1.0f) : 0.0f;
    const uint32_t mask = (1u << bits) - 1u;
    const bool tensor = p.gran == ScaleGran::TENSOR;
    const int64_t blen = tensor ? p.K : format_block_len(p), nbr = p.K / blen, row_bytes = p.K * bits / 8;
    float* s = static_cast<float*>(p.scales);
    RowError err;
    const int nt = threads_for(p.rows);
    if (tensor) {  // one scale over all rows: a reduction pass first
        uint32_t am = 0;
        float mn = std::numeric_limits<float>::infinity(), mx = -mn;
#pragma omp parallel for num_threads(nt) schedule(static) reduction(max : am) reduction(min : mn) reduction(max : mx)
        for (int64_t r = 0; r < p.rows; ++r) {
            const float* x = p.x + r * p.K;
            am = std::max(am, kn.absmax_bits(x, p.K));
            if (!p.sym && !p.scales_given) {
                float a, b;
                kn.minmax(x, p.K, &a, &b);
                mn = std::min(mn, a);
                mx = std::max(mx, b);
            }
        }
        QUELLM_CHECK(f32_bits_finite(am), nm, ": input contains NaN or Inf, which this format cannot encode");
        if (!p.scales_given) {
            if (p.sym) s[0] = int_scale_sym(bits_to_f32(am), p.clip, int(qmax));
            else
                QUELLM_CHECK(int_scale_asym(mn, mx, p.clip, int(qmax), &s[0], &p.zeros[0]), nm,
                             ": value range exceeds float32");
        }
    }
#pragma omp parallel num_threads(nt)
    {
        std::vector<uint8_t> tmp(size_t(p.K));
#pragma omp for schedule(static)
        for (int64_t r = 0; r < p.rows; ++r) {
            for (int64_t j = 0; j < nbr; ++j) {
                const float* x = p.x + r * p.K + j * blen;
                const int64_t b = tensor ? 0 : r * nbr + j;
                const uint32_t am = tensor ? 0u : kn.absmax_bits(x, blen);
                if (!f32_bits_finite(am)) {
                    err.set(r, 1);
                    break;
                }
                if (!tensor && !p.scales_given) {
                    if (p.sym) {
                        s[b] = int_scale_sym(bits_to_f32(am), p.clip, int(qmax));
                    } else {
                        float mn, mx;
                        kn.minmax(x, blen, &mn, &mx);
                        if (!int_scale_asym(mn, mx, p.clip, int(qmax), &s[b], &p.zeros[b])) {
                            err.set(r, 2);
                            break;
                        }
                    }
                }
                kn.int_quant(x, blen, s[b], p.sym ? 0.0f : p.zeros[b], qmin, qmax, mask, tmp.data() + j * blen);
            }
            pack_row(kn, tmp.data(), p.K, bits, p.codes + r * row_bytes);
        }
    }
    if (err.kind.load() == 1)
        QUELLM_CHECK(false, nm, ": input contains NaN or Inf, which this format cannot encode (row ", err.row.load(), ")");
    QUELLM_CHECK(err.kind.load() != 2, nm, ": value range exceeds float32 (row ", err.row.load(), ")");
}

void int_decode(const FormatParams& p) {
    const FormatKernels& kn = kernels();
    const int bits = format_element_bits(p);
    const float* lut = p.sym ? luts().sint[bits == 8] : luts().uint;
    const bool tensor = p.gran == ScaleGran::TENSOR;
    const int64_t blen = tensor ? p.K : format_block_len(p), nbr = p.K / blen, row_bytes = p.K * bits / 8;
    const float* s = static_cast<const float*>(p.scales);
#pragma omp parallel num_threads(threads_for(p.rows))
    {
        std::vector<uint8_t> tmp(size_t(p.K));
#pragma omp for schedule(static)
        for (int64_t r = 0; r < p.rows; ++r) {
            const uint8_t* c = unpack_row(kn, p.codes + r * row_bytes, p.K, bits, tmp.data());
            for (int64_t j = 0; j < nbr; ++j) {
                const int64_t b = tensor ? 0 : r * nbr + j;
                kn.lut_decode(c + j * blen, blen, lut, p.sym ? 0.0f : p.zeros[b], s[b], 1.0f, p.y + r * p.K + j * blen);
            }
        }
    }
}

// ---- OVP (snap tables; decode with the scalar pair helper) -----------------------------------

void ovp_encode(const FormatParams& p) {
    const OvpSnap& t = ovp_snap_table(p.type);
    const char* nm = format_traits(p.type).name;
    QUELLM_CHECK(p.scales_given, nm, ": the C++ encoder needs the scales (the scale search runs in formats.py)");
    const float* s = static_cast<const float*>(p.scales);
    const bool per_tensor = p.gran == ScaleGran::TENSOR;
    const FormatKernels& kn = kernels();
    RowError err;
#pragma omp parallel for num_threads(threads_for(p.rows)) schedule(static)
    for (int64_t r = 0; r < p.rows; ++r) {
        const float* x = p.x + r * p.K;
        if (!f32_bits_finite(kn.absmax_bits(x, p.K))) {  // (also brings the row into L1 for ovp_row)
            err.set(r, 1);
            continue;
        }
        kn.ovp_row(x, p.K, s[per_tensor ? 0 : r], t, p.keep_larger, p.codes + r * (p.K * t.bits / 8));
    }
    QUELLM_CHECK(err.kind.load() == 0, nm, ": input contains NaN or Inf, which this format cannot encode (row ",
                 err.row.load(), ")");
}

void ovp_decode(const FormatParams& p) {
    const OvpTables& t = ovp_tables(p.type);
    const float* s = static_cast<const float*>(p.scales);
    const bool per_tensor = p.gran == ScaleGran::TENSOR;
#pragma omp parallel for num_threads(threads_for(p.rows)) schedule(static)
    for (int64_t r = 0; r < p.rows; ++r) {
        const uint8_t* in = p.codes + r * (p.K * t.bits / 8);
        float* y = p.y + r * p.K;
        const float sr = s[per_tensor ? 0 : r];
        for (int64_t j = 0; j < p.K / 2; ++j) {
            const uint32_t c0 = t.bits == 4 ? in[j] & 0xFu : in[2 * j];
            const uint32_t c1 = t.bits == 4 ? uint32_t(in[j] >> 4) : in[2 * j + 1];
            ovp_decode_pair(t, c0, c1, sr, &y[2 * j], &y[2 * j + 1]);
        }
    }
}

// ---- OVP scale search ----------------------------------------------------------------------

float ovp_search_scale(FormatType type, const float* x, int64_t n, const int* ks, int nk, bool keep_larger,
                       double* mse) {
    QUELLM_CHECK(n >= 2 && n % 2 == 0 && nk >= 1, "ovp_search_scale: need an even length >= 2 and candidates");
    const OvpTables& t = ovp_tables(type);
    const OvpSnap& snap = ovp_snap_table(type);
    const FormatKernels& kn = kernels();
    double sum = 0.0;
    for (int64_t i = 0; i < n; ++i) sum += double(x[i]);
    const double mu = sum / double(n);
    double ss = 0.0;
    for (int64_t i = 0; i < n; ++i) {
        const double d = double(x[i]) - mu;
        ss += d * d;
    }
    const double sd = std::sqrt(ss / double(n - 1));
    const double xmax = std::max(std::fabs(mu + 3 * sd), std::fabs(mu - 3 * sd));
    std::vector<uint8_t> codes(static_cast<size_t>(n));
    double best = std::numeric_limits<double>::infinity();
    float best_s = 1.0f;
    for (int c = 0; c < nk; ++c) {
        float s = float(std::min(xmax * ks[c] / 100 / double(t.normal_max), double(std::numeric_limits<float>::max())));
        if (!(s > 0.0f)) s = 1.0f;
        kn.ovp_quant(x, n, s, snap, keep_larger, codes.data());
        double part[16] = {};
        for (int64_t j = 0; j < n / 2; ++j) {
            float y0, y1;
            ovp_decode_pair(t, codes[size_t(2 * j)], codes[size_t(2 * j + 1)], s, &y0, &y1);
            const double d0 = double(y0) - double(x[2 * j]), d1 = double(y1) - double(x[2 * j + 1]);
            part[(2 * j) & 15] += d0 * d0;
            part[(2 * j + 1) & 15] += d1 * d1;
        }
        double e = 0.0;
        for (double v : part) e += v;
        if (e < best) {
            best = e;
            best_s = s;
        }
    }
    if (mse) *mse = best / double(n);
    return best_s;
}

void ovp_search_scales(FormatType type, const float* x, int64_t rows, int64_t K, const int* ks, int nk,
                       bool keep_larger, float* s, double* mse) {
    const int nt = int(std::min<int64_t>(num_threads(), rows));
#pragma omp parallel for num_threads(nt) schedule(dynamic, 1)
    for (int64_t r = 0; r < rows; ++r) s[r] = ovp_search_scale(type, x + r * K, K, ks, nk, keep_larger, mse + r);
}

// ---- shared-exponent blocks (MX, BFP) ---------------------------------------------------------

// The encode loop of MX and BFP: per row, blocks of `blen` elements with an E8M0 scale; a block
// with a NaN/Inf gets scale 0xFF and zero codes, else scale_of(absmax bits, x, codes) quantizes
// it and returns its scale code. Codes narrower than 8 bits are packed per row at the end.
namespace {
template <class F>
void shared_exp_encode(const FormatParams& p, int64_t blen, int bits, F scale_of) {
    const FormatKernels& kn = kernels();
    const int64_t nbr = p.K / blen;
    uint8_t* sc = static_cast<uint8_t*>(p.scales);
#pragma omp parallel num_threads(threads_for(p.rows))
    {
        std::vector<uint8_t> tmp(size_t(p.K));
#pragma omp for schedule(static)
        for (int64_t r = 0; r < p.rows; ++r) {
            uint8_t* out = p.codes + r * (p.K * bits / 8);
            uint8_t* c = bits == 8 ? out : tmp.data();
            for (int64_t j = 0; j < nbr; ++j) {
                const float* x = p.x + r * p.K + j * blen;
                const uint32_t am = kn.absmax_bits(x, blen);
                if (!f32_bits_finite(am)) {
                    sc[r * nbr + j] = 0xFF;
                    std::fill(c + j * blen, c + (j + 1) * blen, uint8_t(0));
                    continue;
                }
                sc[r * nbr + j] = scale_of(am, x, c + j * blen);
            }
            if (bits != 8) pack_row(kn, c, p.K, bits, out);
        }
    }
}

}  // namespace

// ---- MX -------------------------------------------------------------------------------------

void mx_encode(const FormatParams& p) {
    const FormatKernels& kn = kernels();
    int emax;
    const ElemSpec sp = mx_elem_spec(p.type, &emax);
    shared_exp_encode(p, QK_MX, format_element_bits(p), [&](uint32_t am, const float* x, uint8_t* c) {
        const int shared = mx_shared(am, emax);
        if (sp.bits) kn.elem_quant(x, QK_MX, 1.0f, sp, shared, p.rna, c);
        else kn.fixed_quant(x, QK_MX, shared - 6, 127, 0, p.rna, c);
        return uint8_t(shared + 127);
    });
}

void mx_decode(const FormatParams& p) {
    const FormatKernels& kn = kernels();
    int emax;
    const ElemSpec sp = mx_elem_spec(p.type, &emax);
    const int bits = format_element_bits(p);
    const float* lut = sp.bits ? elem_lut(sp) : luts().mxint8;
    const int64_t nbr = p.K / QK_MX;
    const uint8_t* sc = static_cast<const uint8_t*>(p.scales);
#pragma omp parallel num_threads(threads_for(p.rows))
    {
        std::vector<uint8_t> tmp(size_t(p.K));
#pragma omp for schedule(static)
        for (int64_t r = 0; r < p.rows; ++r) {
            const uint8_t* c = unpack_row(kn, p.codes + r * (p.K * bits / 8), p.K, bits, tmp.data());
            for (int64_t j = 0; j < nbr; ++j)
                kn.lut_decode(c + j * QK_MX, QK_MX, lut, 0.0f, e8m0_value(sc[r * nbr + j]), 1.0f,
                              p.y + r * p.K + j * QK_MX);
        }
    }
}

// ---- NVFP4 ----------------------------------------------------------------------------------

// Tensor scale (when not given) from the maximum |x| over the finite blocks: per row one absmax,
// block by block only for a row holding a NaN/Inf. Then per row kn.nvfp4_row: block scales
// sb = e4m3((amax_b / 6) / ts), d = value(sb)·ts, codes e2m1(x / d) (0 when !(d > 0)); a block
// with a NaN/Inf gets 0x7F and zero codes.
void nvfp4_encode(const FormatParams& p) {
    const FormatKernels& kn = kernels();
    const int64_t nbr = p.K / QK_NVFP4;
    const int nt = threads_for(p.rows);
    float ts = p.tensor_scale_given ? p.tensor_scale[0] : 0.0f;
    if (!p.tensor_scale_given) {
        uint32_t amax = 0;
#pragma omp parallel for num_threads(nt) schedule(static) reduction(max : amax)
        for (int64_t r = 0; r < p.rows; ++r) {
            const float* x = p.x + r * p.K;
            const uint32_t am = kn.absmax_bits(x, p.K);
            if (f32_bits_finite(am)) amax = std::max(amax, am);
            else
                for (int64_t j = 0; j < nbr; ++j) {
                    const uint32_t ab = kn.absmax_bits(x + j * QK_NVFP4, QK_NVFP4);
                    if (f32_bits_finite(ab)) amax = std::max(amax, ab);
                }
        }
        ts = nvfp4_tensor_scale(bits_to_f32(amax));
        p.tensor_scale[0] = ts;
    }
    uint8_t* sc = static_cast<uint8_t*>(p.scales);
#pragma omp parallel for num_threads(nt) schedule(static)
    for (int64_t r = 0; r < p.rows; ++r)
        kn.nvfp4_row(p.x + r * p.K, p.K, ts, p.rna, sc + r * nbr, p.codes + r * (p.K / 2));
}

void nvfp4_decode(const FormatParams& p) {
    const FormatKernels& kn = kernels();
    const int64_t nbr = p.K / QK_NVFP4;
    const uint8_t* sc = static_cast<const uint8_t*>(p.scales);
    const float ts = p.tensor_scale[0];
    const float* lut = luts().elem[0];
#pragma omp parallel num_threads(threads_for(p.rows))
    {
        std::vector<uint8_t> tmp(size_t(p.K));
#pragma omp for schedule(static)
        for (int64_t r = 0; r < p.rows; ++r) {
            kn.unpack4(p.codes + r * (p.K / 2), p.K, tmp.data());
            for (int64_t j = 0; j < nbr; ++j)
                kn.lut_decode(tmp.data() + j * QK_NVFP4, QK_NVFP4, lut, 0.0f, luts().elem[3][sc[r * nbr + j]], ts,
                              p.y + r * p.K + j * QK_NVFP4);
        }
    }
}

// ---- BFP ------------------------------------------------------------------------------------

void bfp_encode(const FormatParams& p) {
    const FormatKernels& kn = kernels();
    const int m = p.mantissa_bits;
    shared_exp_encode(p, p.block, m, [&](uint32_t am, const float* x, uint8_t* c) {
        const int e = block_exponent(am);
        kn.fixed_quant(x, p.block, e + 2 - m, (1u << (m - 1)) - 1u, m, p.rna, c);
        return uint8_t(e + 127);
    });
}

void bfp_decode(const FormatParams& p) {
    const FormatKernels& kn = kernels();
    const int m = p.mantissa_bits;
    const int64_t blen = p.block, nbr = p.K / blen;
    const float* lut = luts().bfp[(m - 4) / 2];
    const uint8_t* sc = static_cast<const uint8_t*>(p.scales);
#pragma omp parallel num_threads(threads_for(p.rows))
    {
        std::vector<uint8_t> tmp(size_t(p.K));
#pragma omp for schedule(static)
        for (int64_t r = 0; r < p.rows; ++r) {
            const uint8_t* c = unpack_row(kn, p.codes + r * (p.K * m / 8), p.K, m, tmp.data());
            for (int64_t j = 0; j < nbr; ++j) {
                const uint32_t e = sc[r * nbr + j];
                const float d = e == 255 ? bits_to_f32(kF32NaNBits) : pow2f(int(e) - 127 + 2 - m);
                kn.lut_decode(c + j * blen, blen, lut, 0.0f, d, 1.0f, p.y + r * p.K + j * blen);
            }
        }
    }
}

}  // namespace quellm
