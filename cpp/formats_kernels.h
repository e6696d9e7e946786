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
//
// For the SIMD kernels the same snap is also tabulated as cell[2·(t + lim) + edge] = code |
// outlier << 8 (one gather instead of four), and, for the integer normal grids (int4, int8),
// as arithmetic: in the cells fast_lo <= t <= fast_hi the nearest point is a normal and its code
// is clamp((t + 1) >> 1, ±normal_max) & code_mask (checked against the table when built; empty
// range, fast_lo > fast_hi, for flint4).
struct OvpSnap {
    int lim = 0, ident = 0, bits = 0;
    float normal_max = 0.0f;
    std::vector<int32_t> inside, edge;  // (2·lim + 1) grid indices
    std::vector<float> grid;            // grid values
    std::vector<int32_t> codes;         // grid codes
    std::vector<int32_t> cell;          // 2·(2·lim + 1) entries: code | outlier << 8
    int fast_lo = 1, fast_hi = 0, code_mask = 0;
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
    // ovp_quant written straight into the row's storage: bits-bit codes (4: packed as pack4).
    void (*ovp_row)(const float* x, int64_t n, float s, const OvpSnap& t, bool keep_larger, uint8_t* out);
    // One NVFP4 row (K a multiple of 16) at tensor scale ts: the K/16 block scale codes sc and
    // the packed E2M1 codes (K/2 bytes), as nvfp4_encode in formats_fast.cpp describes.
    void (*nvfp4_row)(const float* x, int64_t K, float ts, bool rna, uint8_t* sc, uint8_t* codes);
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

namespace quellm {
// Scalar body of nvfp4_row for one block of 16 (also the SIMD tails): scale code *sc, 8 packed bytes.
QUELLM_INLINE void nvfp4_block(const float* x, float ts, bool rna, uint8_t* sc, uint8_t* out) {
    uint32_t am = 0;
    for (int i = 0; i < QK_NVFP4; ++i) am = am > (f32_to_bits(x[i]) & 0x7FFFFFFFu) ? am : (f32_to_bits(x[i]) & 0x7FFFFFFFu);
    float d = 0.0f;
    if (!f32_bits_finite(am)) *sc = 0x7F;
    else *sc = uint8_t(nvfp4_block_scale(bits_to_f32(am), ts, &d));
    for (int i = 0; i < QK_NVFP4 / 2; ++i)
        out[i] = uint8_t(nvfp4_encode(x[2 * i], d, rna) | (nvfp4_encode(x[2 * i + 1], d, rna) << 4));
}
}  // namespace quellm
