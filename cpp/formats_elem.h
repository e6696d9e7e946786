// formats_elem.h — element-level arithmetic of every quellm number format, host and device.
//
// One definition of each rounding rule, used by the scalar references (cpp/formats_*.cpp), the
// CUDA kernels (cuda/formats.cu) and the MXFP4 activation quantizer of the GEMM (cpp/gemm.cpp);
// the AVX2/AVX-512 paths re-express the same integer steps on vectors and are tested
// bit-for-bit against these. Everything mirrors python/quellm/formats.py (the numpy twin):
// float32 inputs are read as bits, element codes are computed with integer arithmetic on the
// 24-bit significand (no float division), and values are rebuilt exactly.
//
// Names: f32_* split/build float32, round_shift (RNE or ties-away on a right shift),
// elem_encode/elem_value (small float elements S|E|M), e8m0_* (MX scales), mx_*, bfp_*,
// nvfp4_*, int_*, ovp_* (OliVe tables and the pair rule).
#pragma once

#include <cmath>
#include <cstdint>

#include "common.h"

namespace quellm {

constexpr uint32_t kF32NaNBits = 0x7FC00000u;  // numpy's np.nan as float32: the NaN every decoder writes

// ---- float32 bit helpers --------------------------------------------------------------------

QUELLM_HD QUELLM_INLINE int bit_length32(uint32_t v) {
#if defined(__CUDA_ARCH__)
    return 32 - __clz(int(v));
#else
    return v ? 32 - __builtin_clz(v) : 0;
#endif
}

// |x| = sig · 2^e2 with sig the 24-bit significand (implicit bit added for normals; Inf reads as
// 2^128), e2 = max(biased_exp, 1) − 150, ex = floor(log2 |x|) (e2 − 1 for zero).
struct F32Parts {
    uint32_t sign, sig;
    int e2, ex;
};
QUELLM_HD QUELLM_INLINE F32Parts f32_parts(uint32_t u) {
    F32Parts p;
    p.sign = u >> 31;
    const int be = int((u >> 23) & 0xFF);
    const uint32_t man = u & 0x7FFFFFu;
    p.sig = be ? (man | 0x800000u) : man;
    p.e2 = (be > 1 ? be : 1) - 150;
    p.ex = p.e2 + bit_length32(p.sig) - 1;
    return p;
}

// round(sig / 2^shift) for sig < 2^24; ties to even, or away from zero (rna). The shift is
// clamped to [1, 31] (the encoders never ask for less than 1; 25 or more gives 0).
QUELLM_HD QUELLM_INLINE uint32_t round_shift(uint32_t sig, int shift, bool rna) {
    shift = shift < 1 ? 1 : (shift > 31 ? 31 : shift);
    const uint32_t q = sig >> shift, rem = sig - (q << shift), half = 1u << (shift - 1);
    const bool up = rna ? rem >= half : (rem > half || (rem == half && (q & 1u)));
    return q + (up ? 1u : 0u);
}

// Exact float32 2^k for k in [-149, 127] (subnormals built from bits).
QUELLM_HD QUELLM_INLINE float pow2f(int k) {
    if (k >= -126) return bits_to_f32(uint32_t(k + 127) << 23);
    const int s = k + 149 < 0 ? 0 : (k + 149 > 22 ? 22 : k + 149);
    return bits_to_f32(1u << s);
}

QUELLM_HD QUELLM_INLINE bool f32_bits_finite(uint32_t u) { return (u & 0x7F800000u) != 0x7F800000u; }

// ---- small float elements S | E | M ----------------------------------------------------------

struct ElemSpec {
    int bits, ebits, mbits, bias, max_code, nan_code, inf_code;  // codes are magnitudes (E|M); -1: none
};
// Functions rather than constexpr globals: device code cannot take a namespace-scope variable's address.
QUELLM_HD QUELLM_INLINE constexpr ElemSpec spec_e2m1() { return ElemSpec{4, 2, 1, 1, 0x07, -1, -1}; }
QUELLM_HD QUELLM_INLINE constexpr ElemSpec spec_e2m3() { return ElemSpec{6, 2, 3, 1, 0x1F, -1, -1}; }
QUELLM_HD QUELLM_INLINE constexpr ElemSpec spec_e3m2() { return ElemSpec{6, 3, 2, 3, 0x1F, -1, -1}; }
QUELLM_HD QUELLM_INLINE constexpr ElemSpec spec_e4m3() { return ElemSpec{8, 4, 3, 7, 0x7E, 0x7F, -1}; }
QUELLM_HD QUELLM_INLINE constexpr ElemSpec spec_e5m2() { return ElemSpec{8, 5, 2, 15, 0x7B, 0x7F, 0x7C}; }

// Element code of |x| / 2^offset (x finite or ±Inf, as float32 bits u), saturating to max_code,
// sign kept (so a negative value rounding to 0 gives −0). formats._float_codes: target
// exponent et = max(ex − offset, 1 − bias), quantum 2^(et − m), magnitude code
// ((et + bias − 1) << m) + round(|x| / 2^offset / quantum).
QUELLM_HD QUELLM_INLINE uint32_t elem_encode(uint32_t u, const ElemSpec& s, int offset, bool rna) {
    const F32Parts p = f32_parts(u);
    int et = p.ex - offset;
    if (et < 1 - s.bias) et = 1 - s.bias;
    const uint32_t q = round_shift(p.sig, et - s.mbits - (p.e2 - offset), rna);
    int mag = ((et + s.bias - 1) << s.mbits) + int(q);
    if (mag > s.max_code) mag = s.max_code;
    return (p.sign << (s.bits - 1)) | uint32_t(mag);
}

// formats.encode_float for one value: NaN gives nan_code (callers reject NaN for formats without one).
QUELLM_HD QUELLM_INLINE uint32_t elem_encode_f32(float x, const ElemSpec& s, bool rna) {
    const uint32_t u = f32_to_bits(x);
    if ((u & 0x7FFFFFFFu) > 0x7F800000u) return uint32_t(s.nan_code < 0 ? 0 : s.nan_code);
    return elem_encode(u, s, 0, rna);
}

// float32 value of an element code (NaN codes give kF32NaNBits, Inf codes ±Inf).
QUELLM_HD QUELLM_INLINE float elem_value(uint32_t c, const ElemSpec& s) {
    const uint32_t sign = (c >> (s.bits - 1)) & 1u, mc = c & ((1u << (s.bits - 1)) - 1u);
    if (s.inf_code >= 0 && mc >= uint32_t(s.inf_code)) {
        if (mc > uint32_t(s.inf_code)) return bits_to_f32(kF32NaNBits);
        return bits_to_f32((sign << 31) | 0x7F800000u);
    }
    if (s.nan_code >= 0 && mc == uint32_t(s.nan_code)) return bits_to_f32(kF32NaNBits);
    const uint32_t e = mc >> s.mbits, m = mc & ((1u << s.mbits) - 1u);
    uint32_t bits;
    if (e > 0) {
        bits = (uint32_t(int(e) - s.bias + 127) << 23) | (m << (23 - s.mbits));
    } else {
        bits = f32_to_bits(float(m) * pow2f(1 - s.bias - s.mbits));  // exact
    }
    return bits_to_f32(bits | (sign << 31));
}

// ---- E8M0 (MX and BFP shared exponents) ------------------------------------------------------

QUELLM_HD QUELLM_INLINE float e8m0_value(uint32_t c) {
    return c == 255 ? bits_to_f32(kF32NaNBits) : pow2f(int(c) - 127);
}

// floor(log2 amax) from the exponent field of the (non-negative, finite) block maximum:
// -127 for zero or a float32 subnormal (formats._block_exponent).
QUELLM_HD QUELLM_INLINE int block_exponent(uint32_t amax_bits) {
    const int be = int((amax_bits >> 23) & 0xFF);
    return be > 0 ? be - 127 : -127;
}

// MX shared exponent: clamp(e − emax_elem, −127, 127); the scale code is shared + 127.
QUELLM_HD QUELLM_INLINE int mx_shared(uint32_t amax_bits, int emax) {
    int sh = block_exponent(amax_bits) - emax;
    return sh < -127 ? -127 : (sh > 127 ? 127 : sh);
}

// MXINT8 element: k = min(round(|x| / 2^(shared − 6)), 127), two's-complement byte.
QUELLM_HD QUELLM_INLINE uint32_t mxint8_encode(uint32_t u, int shared, bool rna) {
    const F32Parts p = f32_parts(u);
    uint32_t k = round_shift(p.sig, (shared - 6) - p.e2, rna);
    if (k > 127) k = 127;
    return (p.sign ? (0u - k) : k) & 0xFFu;
}

// ---- BFP (§2.7): sign-magnitude m-bit codes, quantum 2^(e + 2 − m) -----------------------------

QUELLM_HD QUELLM_INLINE uint32_t bfp_encode(uint32_t u, int e, int m, bool rna) {
    const F32Parts p = f32_parts(u);
    uint32_t q = round_shift(p.sig, (e + 2 - m) - p.e2, rna);
    const uint32_t qmax = (1u << (m - 1)) - 1u;
    if (q > qmax) q = qmax;
    return q ? ((p.sign << (m - 1)) | q) : 0u;
}

QUELLM_HD QUELLM_INLINE float bfp_value(uint32_t c, uint32_t scale_code, int m) {
    if (scale_code == 255) return bits_to_f32(kF32NaNBits);
    const float mag = float(c & ((1u << (m - 1)) - 1u));
    const float v = (c >> (m - 1)) & 1u ? -mag : mag;
    return v * pow2f(int(scale_code) - 127 + 2 - m);
}

// ---- NVFP4: E2M1 elements, E4M3 block scale, f32 tensor scale ---------------------------------

// Tensor scale from the maximum |x| over the finite blocks: amax / (6 · 448), 1 if that is 0.
QUELLM_HD QUELLM_INLINE float nvfp4_tensor_scale(float amax) {
    const float ts = amax / 2688.0f;
    return ts == 0.0f ? 1.0f : ts;
}

// Block scale code sb = e4m3((amax_b / 6) / ts) (RNE, saturating) and the divisor d = value(sb)·ts.
QUELLM_HD QUELLM_INLINE uint32_t nvfp4_block_scale(float amax_b, float ts, float* d) {
    const float r = (amax_b / 6.0f) / ts;
    const uint32_t sb = elem_encode_f32(r, spec_e4m3(), false);
    *d = elem_value(sb, spec_e4m3()) * ts;
    return sb;
}

QUELLM_HD QUELLM_INLINE uint32_t nvfp4_encode(float x, float d, bool rna) {
    return d > 0.0f ? elem_encode(f32_to_bits(x / d), spec_e2m1(), 0, rna) : 0u;
}

// ---- int4 / int8 -----------------------------------------------------------------------------

// Symmetric scale: (clip · amax) / qmax, 1 if that is 0.
QUELLM_HD QUELLM_INLINE float int_scale_sym(float amax, float clip, int qmax) {
    const float s = (clip * amax) / float(qmax);
    return s == 0.0f ? 1.0f : s;
}

// Asymmetric scale and zero point from the block min / max; false when the range overflows float32.
// The zero point is +0 for zero (the twin adds +0 after rint: np.min's sign of zero is unordered).
QUELLM_HD QUELLM_INLINE bool int_scale_asym(float mn, float mx, float clip, int qmax, float* s, float* z) {
    float lo = clip * (mn < 0.0f ? mn : 0.0f), hi = clip * (mx > 0.0f ? mx : 0.0f);
    if (lo == 0.0f && hi == 0.0f) {
        lo = -1.0f;
        hi = 1.0f;
    }
    float sc = (hi - lo) / float(qmax);
    if (!f32_bits_finite(f32_to_bits(sc))) return false;
    if (sc == 0.0f) sc = 1.0f;
    *s = sc;
    *z = rintf(-lo / sc) + 0.0f;
    return true;
}

// Code of x: clamp(rint(x / s) + z, qmin, qmax) (z = 0 when symmetric) as a (bits)-bit pattern.
QUELLM_HD QUELLM_INLINE uint32_t int_encode(float x, float s, float z, float qmin, float qmax, uint32_t mask) {
    float v = rintf(x / s) + z;
    v = v < qmin ? qmin : (v > qmax ? qmax : v);
    return uint32_t(int(v)) & mask;
}

// Value of a code before scaling: two's complement (sym) or unsigned minus the zero point.
QUELLM_HD QUELLM_INLINE float int_value(uint32_t c, int bits, bool sym, float z) {
    if (sym) return float(int(c) - (c >> (bits - 1) ? (1 << bits) : 0));
    return float(c) - z;
}

// ---- OliVe OVP (§1) -------------------------------------------------------------------------

// The grid of one normal type (int4, flint4 or int8) united with its abfloat outliers, sorted,
// with the midpoints and tie directions of formats._OvpType; built on the host (formats_int.cpp),
// copied by value to the device. Values are in units of the scale.
struct OvpTables {
    static constexpr int kMaxGrid = 512;
    int bits, ident, n;                 // n grid points
    float normal_max;
    int uniform_lo;                     // grid index of −normal_max when the normals are the integers
                                        // −normal_max..normal_max (int4, int8), else −1 (flint4)
    float grid[kMaxGrid];               // ascending
    float mids[kMaxGrid];               // (grid[i] + grid[i+1]) / 2, n − 1 of them
    uint8_t codes[kMaxGrid];            // code of each grid point
    uint8_t tie_up[kMaxGrid];           // a value equal to mids[i] goes to grid[i+1]
    float normal_value[256], outlier_value[256];  // decode tables (reserved codes: 0)
};

// Index of the grid point nearest to v (formats._OvpType.snap_reference): the number of
// midpoints below v, plus one on a tie that goes up.
QUELLM_HD QUELLM_INLINE int ovp_snap(const OvpTables& t, float v) {
    if (t.uniform_lo >= 0 && fabsf(v) < t.normal_max + 0.5f) {
        // Among consecutive integer normals the nearest is floor(v), or the one above from a
        // fraction of 1/2 up (ties go up); v − floor(v) is exact or rounds on the correct side of 1/2.
        int k = int(v);  // floor(v), without a libm call: |v| < 128
        k -= float(k) > v;
        return t.uniform_lo + int(t.normal_max) + k + (v - float(k) >= 0.5f ? 1 : 0);
    }
    int lo = 0, hi = t.n - 1;  // lower bound of v in mids[0 .. n-2]
    while (lo < hi) {
        const int mid = (lo + hi) / 2;
        if (t.mids[mid] < v) lo = mid + 1;
        else hi = mid;
    }
    return lo + ((lo < t.n - 1 && t.mids[lo] == v && t.tie_up[lo]) ? 1 : 0);
}

// The pair rule on snapped values: v0, v1 = x/s, grid values q0, q1 with codes k0, k1. An
// element beyond normal_max is an outlier; the first outlier of a pair is kept (keep_larger:
// the larger |v|, ties the first) and its partner becomes the victim (identifier code).
QUELLM_HD QUELLM_INLINE void ovp_pair_rule(float v0, float v1, float q0, float q1, uint32_t k0, uint32_t k1,
                                          float normal_max, uint32_t ident, bool keep_larger, uint32_t* c0,
                                          uint32_t* c1) {
    const bool o0 = fabsf(q0) > normal_max, o1 = fabsf(q1) > normal_max;
    const bool keep0 = o0 && (!keep_larger || !o1 || fabsf(v0) >= fabsf(v1));
    const bool victim1 = keep0, victim0 = o1 && !keep0;
    *c0 = victim0 ? ident : k0;
    *c1 = victim1 ? ident : k1;
}

// One pair (x0, x1) at scale s: codes c0, c1 after the outlier-victim rule.
QUELLM_HD QUELLM_INLINE void ovp_encode_pair(const OvpTables& t, float x0, float x1, float s, bool keep_larger,
                                            uint32_t* c0, uint32_t* c1) {
    const float v0 = x0 / s, v1 = x1 / s;
    const int i0 = ovp_snap(t, v0), i1 = ovp_snap(t, v1);
    ovp_pair_rule(v0, v1, t.grid[i0], t.grid[i1], t.codes[i0], t.codes[i1], t.normal_max, uint32_t(t.ident),
                  keep_larger, c0, c1);
}

QUELLM_HD QUELLM_INLINE void ovp_decode_pair(const OvpTables& t, uint32_t c0, uint32_t c1, float s, float* y0,
                                            float* y1) {
    const bool id0 = c0 == uint32_t(t.ident), id1 = c1 == uint32_t(t.ident);
    const float v0 = id0 ? 0.0f : (id1 ? t.outlier_value[c0] : t.normal_value[c0]);
    const float v1 = id1 ? 0.0f : (id0 ? t.outlier_value[c1] : t.normal_value[c1]);
    *y0 = v0 * s;
    *y1 = v1 * s;
}

// ---- code packing (4 bits: element 2j low nibble; 6 bits: 4 elements in 3 bytes LE) ----------

QUELLM_HD QUELLM_INLINE void pack6(const uint32_t c[4], uint8_t* out) {
    const uint32_t w = c[0] | (c[1] << 6) | (c[2] << 12) | (c[3] << 18);
    out[0] = uint8_t(w);
    out[1] = uint8_t(w >> 8);
    out[2] = uint8_t(w >> 16);
}
QUELLM_HD QUELLM_INLINE void unpack6(const uint8_t* in, uint32_t c[4]) {
    const uint32_t w = uint32_t(in[0]) | (uint32_t(in[1]) << 8) | (uint32_t(in[2]) << 16);
    for (int t = 0; t < 4; ++t) c[t] = (w >> (6 * t)) & 0x3Fu;
}

// Code i of a packed row of `bits`-bit codes, and its setter (byte-granular for 8 and 4 bits).
QUELLM_HD QUELLM_INLINE uint32_t code_at(const uint8_t* row, int64_t i, int bits) {
    if (bits == 8) return row[i];
    if (bits == 4) return (row[i / 2] >> (4 * (i & 1))) & 0xFu;
    uint32_t c[4];
    unpack6(row + (i / 4) * 3, c);
    return c[i % 4];
}

}  // namespace quellm
