// gemm_hd.h — the arithmetic of the CUDA linear layer (cuda/gemm*.cu) as __host__ __device__
// helpers, so the CPU tests (cpp/tests/test_kernels.cpp) run the very code the kernels run.
//
// * weight codes → integers: int4 two's complement nibbles, MXFP4 E2M1 (2·value), OliVe OVP4 pairs,
//   four at a time into a packed int8x4 word (the operand of dp4a / an s8 mma fragment);
// * activation quantization of one row (per-token int8/int4 with clip) and of one MX block:
//   cpp/gemm.cpp's quantize_rows / quantize_rows_mxfp4 call the same helpers;
// * the integer epilogue y = fma(acc, sa·sw, y), in the order of gemm_int_ref;
// * mma.sync fragment layouts (which lane holds which element) for m16n8k16 (f16/bf16),
//   m16n8k32 (s8) and m16n8k64 (s4), and fragment loaders built on them.
//
// Letters: M activation rows, N output features (weight rows), K input features, G group size.
// Weight rows are byte rows with stride ldw; element k of an int4 row is the low nibble of byte
// k/2 when k is even (canonical layout, gemm.h), int8 rows hold one code per byte.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

#include "common.h"
#include "formats_elem.h"

namespace quellm {

// Weight code kinds of the integer kernels.
enum class WCode : int { S8 = 0, S4 = 1, E2M1 = 2, OVP = 3 };

// ---- loads that work on host and device (device pointers are aligned by construction) ----------
QUELLM_HD QUELLM_INLINE uint32_t gemm_ld_u32(const void* p) {
#if defined(__CUDA_ARCH__)
    return *static_cast<const uint32_t*>(p);
#else
    uint32_t v;
    std::memcpy(&v, p, 4);
    return v;
#endif
}
QUELLM_HD QUELLM_INLINE uint32_t gemm_ld_u16(const void* p) {
#if defined(__CUDA_ARCH__)
    return *static_cast<const uint16_t*>(p);
#else
    uint16_t v;
    std::memcpy(&v, p, 2);
    return v;
#endif
}

// ---- weight code decoding ----------------------------------------------------------------------

// Two's complement int4 nibble → −8..7.
QUELLM_HD QUELLM_INLINE int gemm_s4(uint32_t nib) { return int((nib & 15u) ^ 8u) - 8; }

// 2 × the value of an OCP E2M1 code (S|E|M): 0, 1, 2, 3, 4, 6, 8, 12 and negatives.
QUELLM_HD QUELLM_INLINE int gemm_e2m1x2(uint32_t nib) {
    const int m = int(nib & 7u), e = m >> 1, f = m & 1;
    const int v = e == 0 ? f : (2 + f) << (e - 1);
    return nib & 8u ? -v : v;
}

// OliVe OVP4 pair (int4 normal type, gemm_ovp4_repack): byte = first | second << 4. A nibble equal
// to the identifier 8 decodes to 0; its partner is then an abfloat outlier ±(2 + M)·2^(E + 2) with
// E = mag >> 1, M = mag & 1 (12, 16, 24, 32, 48, 64, 96); otherwise both are int4 normals (−7..7).
QUELLM_HD QUELLM_INLINE int gemm_ovp_outlier(uint32_t nib) {
    const int m = int(nib & 7u);
    const int v = m == 0 ? 0 : (2 + (m & 1)) << ((m >> 1) + 2);
    return nib & 8u ? -v : v;
}
QUELLM_HD QUELLM_INLINE void gemm_ovp_pair(uint32_t byte, int& first, int& second) {
    const uint32_t a = byte & 15u, b = (byte >> 4) & 15u;
    first = a == 8u ? 0 : b == 8u ? gemm_ovp_outlier(a) : gemm_s4(a);
    second = b == 8u ? 0 : a == 8u ? gemm_ovp_outlier(b) : gemm_s4(b);
}

// Integer value of element k of a weight row (any k).
QUELLM_HD QUELLM_INLINE int gemm_wcode_at(WCode kind, const uint8_t* row, int64_t k) {
    if (kind == WCode::S8) return int(int8_t(row[k]));
    const uint32_t byte = row[k / 2];
    if (kind == WCode::OVP) {
        int a, b;
        gemm_ovp_pair(byte, a, b);
        return k % 2 ? b : a;
    }
    const uint32_t nib = k % 2 ? byte >> 4 : byte & 15u;
    return kind == WCode::S4 ? gemm_s4(nib) : gemm_e2m1x2(nib);
}

QUELLM_HD QUELLM_INLINE uint32_t gemm_pack_s8x4(int a, int b, int c, int d) {
    return (uint32_t(a) & 0xFFu) | (uint32_t(b) & 0xFFu) << 8 | (uint32_t(c) & 0xFFu) << 16 | (uint32_t(d) & 0xFFu) << 24;
}

// Four int4 nibbles (16 bits, element j in bits 4j..4j+3) → four sign-extended int8 bytes.
QUELLM_HD QUELLM_INLINE uint32_t gemm_s4x4_to_s8x4(uint32_t v) {
    const uint32_t x = (v & 0xFu) | (v & 0xF0u) << 4 | (v & 0xF00u) << 8 | (v & 0xF000u) << 12;
    return x | (x & 0x08080808u) * 0x1Eu;  // bit 3 set → fill bits 4..7 (no carry between bytes)
}

// Elements k..k+3 (k % 4 == 0) of a weight row as a packed int8x4 word, element k in the low byte.
QUELLM_HD QUELLM_INLINE uint32_t gemm_wcode_s8x4(WCode kind, const uint8_t* row, int64_t k) {
    if (kind == WCode::S8) return gemm_ld_u32(row + k);
    const uint32_t v = gemm_ld_u16(row + k / 2);
    if (kind == WCode::S4) return gemm_s4x4_to_s8x4(v);
    if (kind == WCode::E2M1)
        return gemm_pack_s8x4(gemm_e2m1x2(v), gemm_e2m1x2(v >> 4), gemm_e2m1x2(v >> 8), gemm_e2m1x2(v >> 12));
    int a, b, c, d;
    gemm_ovp_pair(v & 0xFFu, a, b);
    gemm_ovp_pair(v >> 8, c, d);
    return gemm_pack_s8x4(a, b, c, d);
}

// Σ of the products of two packed int8x4 words (what __dp4a computes).
QUELLM_HD QUELLM_INLINE int32_t gemm_dp4a(uint32_t a, uint32_t b, int32_t c) {
#if defined(__CUDA_ARCH__)
    return __dp4a(int(a), int(b), c);
#else
    for (int i = 0; i < 4; ++i) c += int32_t(int8_t(a >> (8 * i))) * int32_t(int8_t(b >> (8 * i)));
    return c;
#endif
}

// Weight-only (W4A16 / W8A16) code minus zero point, an exact small integer: int4 rows hold
// unsigned nibbles u with zero point z (symmetric int4: u = q + 8, z = 8), int8 rows signed codes, z = 0.
QUELLM_HD QUELLM_INLINE int gemm_wf_code(int bits, const uint8_t* row, int64_t k, int z) {
    if (bits == 8) return int(int8_t(row[k]));
    const uint32_t byte = row[k / 2];
    return int(k % 2 ? byte >> 4 : byte & 15u) - z;
}

// ---- activation quantization (shared with cpp/gemm.cpp) ----------------------------------------

// Per-token symmetric: sa = clip·max|x| / qmax, 1 for an all-zero row.
QUELLM_HD QUELLM_INLINE float gemm_act_scale(float amax, float clip, int qmax) {
    const float s = (clip * amax) / float(qmax);
    return s == 0.0f ? 1.0f : s;
}
// q = clamp(RNE(x / sa), −qmax, qmax); x finite.
QUELLM_HD QUELLM_INLINE int8_t gemm_act_quant(float x, float sa, int qmax) {
    const float fq = float(qmax);
    float v = rintf(x / sa);  // RNE in the default rounding mode (host and device)
    v = v < -fq ? -fq : v > fq ? fq : v;
    return int8_t(v);
}

// MXFP4 activations, one block of 32 with absolute maximum amax (finite): shared exponent,
// element q = 2·E2M1 value (RNE, saturating; the MX encoder's arithmetic), scale 2^shared / 2.
QUELLM_HD QUELLM_INLINE int gemm_mx4_shared(float amax) { return mx_shared(f32_to_bits(amax), 2); }  // emax(E2M1) = 2
QUELLM_HD QUELLM_INLINE int8_t gemm_mx4_elem(float x, int shared) {
    return int8_t(gemm_e2m1x2(elem_encode(f32_to_bits(x), spec_e2m1(), shared, false)));
}
QUELLM_HD QUELLM_INLINE float gemm_mx4_scale(int shared) { return pow2f(shared - 1); }

// ---- epilogue ----------------------------------------------------------------------------------

// One weight group of the integer kernels: y = fma(acc, sa·sw, y), groups in order (gemm_int_ref).
QUELLM_HD QUELLM_INLINE float gemm_epi_group(int32_t acc, float sa, float sw, float y) {
    return fmaf(float(acc), sa * sw, y);
}
QUELLM_HD QUELLM_INLINE float gemm_epi_bias(float y, const float* bias, int64_t n) { return bias ? y + bias[n] : y; }

// ---- mma.sync fragment layouts (PTX ISA, "Matrix fragments for mma.m16n8k*") ---------------------
// lane = threadIdx.x % 32; g = lane / 4 (groupID), t = lane % 4 (threadID_in_group). A is 16 × k
// row-major, B is k × 8 (each column n a contiguous weight row), C/D is 16 × 8.

// m16n8k16 .f16/.bf16: A elements a0..a7 (4 registers of 2), B b0..b3 (2 registers of 2).
QUELLM_HD QUELLM_INLINE void mma_k16_a_rc(int lane, int i, int& r, int& c) {
    r = (lane >> 2) + 8 * ((i >> 1) & 1);
    c = (lane & 3) * 2 + (i & 1) + 8 * (i >> 2);
}
QUELLM_HD QUELLM_INLINE void mma_k16_b_kn(int lane, int i, int& k, int& n) {
    k = (lane & 3) * 2 + (i & 1) + 8 * (i >> 1);
    n = lane >> 2;
}
// m16n8k32 .s8: A a0..a15 (4 registers of 4), B b0..b7 (2 registers of 4).
QUELLM_HD QUELLM_INLINE void mma_k32_a_rc(int lane, int i, int& r, int& c) {
    r = (lane >> 2) + 8 * ((i >> 2) & 1);
    c = (lane & 3) * 4 + (i & 3) + 16 * (i >> 3);
}
QUELLM_HD QUELLM_INLINE void mma_k32_b_kn(int lane, int i, int& k, int& n) {
    k = (lane & 3) * 4 + (i & 3) + 16 * (i >> 2);
    n = lane >> 2;
}
// m16n8k64 .s4: A a0..a31 (4 registers of 8), B b0..b15 (2 registers of 8).
QUELLM_HD QUELLM_INLINE void mma_k64_a_rc(int lane, int i, int& r, int& c) {
    r = (lane >> 2) + 8 * ((i >> 3) & 1);
    c = (lane & 3) * 8 + (i & 7) + 32 * (i >> 4);
}
QUELLM_HD QUELLM_INLINE void mma_k64_b_kn(int lane, int i, int& k, int& n) {
    k = (lane & 3) * 8 + (i & 7) + 32 * (i >> 3);
    n = lane >> 2;
}
// C/D (f32 or s32) c0..c3 of every shape.
QUELLM_HD QUELLM_INLINE void mma_c_rc(int lane, int i, int& r, int& c) {
    r = (lane >> 2) + 8 * (i >> 1);
    c = (lane & 3) * 2 + (i & 1);
}

// ---- fragment loaders (one lane's registers; rows past the matrix read as zeros) ---------------

// m16n8k32 A from int8 activations q (rows, ldq), tile rows row0.., columns k0..k0+31.
QUELLM_HD QUELLM_INLINE void frag_a_s8(const int8_t* q, int64_t ldq, int64_t row0, int64_t rows, int64_t k0, int lane,
                                       uint32_t a[4]) {
    for (int j = 0; j < 4; ++j) {
        int r, c;
        mma_k32_a_rc(lane, 4 * j, r, c);
        a[j] = row0 + r < rows ? gemm_ld_u32(q + (row0 + r) * ldq + k0 + c) : 0u;
    }
}
// m16n8k32 B from weight rows n0..n0+7 (byte stride ldw), k0..k0+31, decoded to int8.
QUELLM_HD QUELLM_INLINE void frag_b_s8(WCode kind, const uint8_t* w, int64_t ldw, int64_t n0, int64_t N, int64_t k0,
                                       int lane, uint32_t b[2]) {
    for (int j = 0; j < 2; ++j) {
        int k, n;
        mma_k32_b_kn(lane, 4 * j, k, n);
        b[j] = n0 + n < N ? gemm_wcode_s8x4(kind, w + (n0 + n) * ldw, k0 + k) : 0u;
    }
}
// m16n8k64 A from int8 activations in [−8, 7], packed to int4 (element i in bits 4i..4i+3).
QUELLM_HD QUELLM_INLINE uint32_t gemm_s8x8_to_s4x8(uint32_t lo, uint32_t hi) {
    uint32_t v = 0;
    for (int i = 0; i < 4; ++i) {
        v |= ((lo >> (8 * i)) & 15u) << (4 * i);
        v |= ((hi >> (8 * i)) & 15u) << (4 * i + 16);
    }
    return v;
}
QUELLM_HD QUELLM_INLINE void frag_a_s4(const int8_t* q, int64_t ldq, int64_t row0, int64_t rows, int64_t k0, int lane,
                                       uint32_t a[4]) {
    for (int j = 0; j < 4; ++j) {
        int r, c;
        mma_k64_a_rc(lane, 8 * j, r, c);
        const int8_t* p = q + (row0 + r) * ldq + k0 + c;
        a[j] = row0 + r < rows ? gemm_s8x8_to_s4x8(gemm_ld_u32(p), gemm_ld_u32(p + 4)) : 0u;
    }
}
// m16n8k64 B from int4 weight rows (two's complement nibbles, canonical order = the s4 register order).
QUELLM_HD QUELLM_INLINE void frag_b_s4(const uint8_t* w, int64_t ldw, int64_t n0, int64_t N, int64_t k0, int lane,
                                       uint32_t b[2]) {
    for (int j = 0; j < 2; ++j) {
        int k, n;
        mma_k64_b_kn(lane, 8 * j, k, n);
        b[j] = n0 + n < N ? gemm_ld_u32(w + (n0 + n) * ldw + (k0 + k) / 2) : 0u;
    }
}

// Exact f16 / bf16 bit pattern of a small integer (|v| <= 256).
QUELLM_HD QUELLM_INLINE uint32_t gemm_int_to_half_bits(int v, bool bf16) {
    return bf16 ? f32_to_bf16(float(v)) : f32_to_f16(float(v));
}

// m16n8k16 A from 16-bit activations x (rows, ldx elements), columns k0..k0+15 (ldx, k0 even).
QUELLM_HD QUELLM_INLINE void frag_a_h(const uint16_t* x, int64_t ldx, int64_t row0, int64_t rows, int64_t k0, int lane,
                                      uint32_t a[4]) {
    for (int j = 0; j < 4; ++j) {
        int r, c;
        mma_k16_a_rc(lane, 2 * j, r, c);
        a[j] = row0 + r < rows ? gemm_ld_u32(x + (row0 + r) * ldx + k0 + c) : 0u;
    }
}
// m16n8k16 B from 16-bit float weight rows (N, ldw elements).
QUELLM_HD QUELLM_INLINE void frag_b_h(const uint16_t* w, int64_t ldw, int64_t n0, int64_t N, int64_t k0, int lane,
                                      uint32_t b[2]) {
    for (int j = 0; j < 2; ++j) {
        int k, n;
        mma_k16_b_kn(lane, 2 * j, k, n);
        b[j] = n0 + n < N ? gemm_ld_u32(w + (n0 + n) * ldw + k0 + k) : 0u;
    }
}
// m16n8k16 B from weight-only int4 / int8 rows as (code − zero) in f16 / bf16; zeros (N, NG) per
// group (int4), the tile lying in group gi.
QUELLM_HD QUELLM_INLINE void frag_b_wf(int bits, bool bf16, const uint8_t* w, int64_t ldw, const uint8_t* zeros,
                                       int64_t NG, int64_t gi, int64_t n0, int64_t N, int64_t k0, int lane,
                                       uint32_t b[2]) {
    for (int j = 0; j < 2; ++j) {
        int k, n;
        mma_k16_b_kn(lane, 2 * j, k, n);
        b[j] = 0u;
        if (n0 + n < N) {
            const uint8_t* row = w + (n0 + n) * ldw;
            const int z = bits == 4 ? int(zeros[(n0 + n) * NG + gi]) : 0;
            b[j] = gemm_int_to_half_bits(gemm_wf_code(bits, row, k0 + k, z), bf16) |
                   gemm_int_to_half_bits(gemm_wf_code(bits, row, k0 + k + 1, z), bf16) << 16;
        }
    }
}

}  // namespace quellm
