// formats_kernels.h — the per-ISA element kernels the dispatched encoders/decoders are built
// from (formats_fast.cpp). One table per ISA: scalar (formats_fast.cpp, plain loops over the
// formats_elem.h helpers) and arch/x86/formats_avx2.cpp / formats_avx512.cpp (the same integer
// steps on 8 / 16 lanes, scalar helpers for the tails). Codes are one byte per element here;
// packing to 4 / 6 bits is separate.
#pragma once

#include <cmath>
#include <cstdint>
#include <vector>

#include "formats.h"
#include "formats_elem.h"

namespace quellm {

// OVP snapping by table (formats._OvpType.snap): every midpoint is a multiple of 1/2, so the
// nearest grid point of v depends only on the cell t = floor(2v) (clamped to [-lim, lim]) and on
// whether v = t/2 exactly. Built from ovp_snap (formats_fast.cpp); host only.
struct OvpSnap {
    int lim = 0, ident = 0, bits = 0;
    float normal_max = 0.0f;
    std::vector<int32_t> inside, edge;  // (2·lim + 1) grid indices
    std::vector<float> grid;            // grid values
    std::vector<int32_t> codes;         // grid codes
};
const OvpSnap& ovp_snap_table(FormatType t);

QUELLM_INLINE int ovp_snap_fast(const OvpSnap& t, float v) {
    const float t2 = std::floor(v * 2.0f);
    const bool edge = t2 * 0.5f == v;
    const float lim = float(t.lim);
    const int ti = int(t2 < -lim ? -lim : (t2 > lim ? lim : t2)) + t.lim;
    return edge ? t.edge[size_t(ti)] : t.inside[size_t(ti)];
}

struct FormatKernels {
    // Max over i of bits(x[i]) & 0x7FFFFFFF: the bits of max |x|, >= 0x7F800000 if a NaN/Inf is present.
    uint32_t (*absmax_bits)(const float* x, int64_t n);
    // Min and max of finite x (n >= 1); the sign of a zero result is unspecified.
    void (*minmax)(const float* x, int64_t n, float* mn, float* mx);
    // out[i] = int_encode(x[i], s, z, qmin, qmax, mask).
    void (*int_quant)(const float* x, int64_t n, float s, float z, float qmin, float qmax, uint32_t mask, uint8_t* out);
    // out[i] = elem_encode(bits(x[i] / d), spec, offset, rna); d == 1 skips the division.
    void (*elem_quant)(const float* x, int64_t n, float d, const ElemSpec& spec, int offset, bool rna, uint8_t* out);
    // Fixed-point codes q = min(round(|x| / 2^(base − e2)), qmax) (e2 of each x): two's complement
    // byte when signmag_bits == 0 (MXINT8), else sign << (signmag_bits − 1) | q with +0 (BFP).
    void (*fixed_quant)(const float* x, int64_t n, int base, uint32_t qmax, int signmag_bits, bool rna, uint8_t* out);
    // y[i] = ((lut[c[i]] − z) · s1) · s2   (lut: 256 floats).
    void (*lut_decode)(const uint8_t* c, int64_t n, const float* lut, float z, float s1, float s2, float* y);
    // OVP codes of the pairs (x[2j], x[2j+1]) at scale s, one byte per element (n even).
    void (*ovp_quant)(const float* x, int64_t n, float s, const OvpSnap& t, bool keep_larger, uint8_t* out);
    // 4-bit packing: out[j] = c[2j] | c[2j+1] << 4 (n even), and its inverse.
    void (*pack4)(const uint8_t* c, int64_t n, uint8_t* out);
    void (*unpack4)(const uint8_t* in, int64_t n, uint8_t* c);
};

const FormatKernels& format_kernels_scalar();

namespace x86 {
const FormatKernels& format_kernels_avx2();
const FormatKernels& format_kernels_avx512();
}  // namespace x86

// The scalar body of fixed_quant for one element (also the SIMD tails).
QUELLM_HD QUELLM_INLINE uint32_t fixed_encode(uint32_t u, int base, uint32_t qmax, int signmag_bits, bool rna) {
    const F32Parts p = f32_parts(u);
    uint32_t q = round_shift(p.sig, base - p.e2, rna);
    if (q > qmax) q = qmax;
    if (signmag_bits == 0) return (p.sign ? (0u - q) : q) & 0xFFu;
    return q ? ((p.sign << (signmag_bits - 1)) | q) : 0u;
}

}  // namespace quellm

namespace quellm {
// Scalar body of ovp_quant for one pair (also the SIMD tails).
QUELLM_INLINE void ovp_quant_pair(const float* x, float s, const OvpSnap& t, bool keep_larger, uint8_t* out) {
    const float v0 = x[0] / s, v1 = x[1] / s;
    const int i0 = ovp_snap_fast(t, v0), i1 = ovp_snap_fast(t, v1);
    uint32_t c0, c1;
    ovp_pair_rule(v0, v1, t.grid[size_t(i0)], t.grid[size_t(i1)], uint32_t(t.codes[size_t(i0)]),
                  uint32_t(t.codes[size_t(i1)]), t.normal_max, uint32_t(t.ident), keep_larger, &c0, &c1);
    out[0] = uint8_t(c0);
    out[1] = uint8_t(c1);
}
}  // namespace quellm
