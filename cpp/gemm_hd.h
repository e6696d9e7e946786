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
#if defined(__CUDACC__)
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#endif

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

// Four 4-bit weight codes (16 bits, element j in bits 4j..4j+3; kind S4, E2M1 or OVP) → packed int8x4.
QUELLM_HD QUELLM_INLINE uint32_t gemm_w4_s8x4(WCode kind, uint32_t v) {
    v &= 0xFFFFu;
    if (kind == WCode::S4) return gemm_s4x4_to_s8x4(v);
    if (kind == WCode::E2M1)
        return gemm_pack_s8x4(gemm_e2m1x2(v), gemm_e2m1x2(v >> 4), gemm_e2m1x2(v >> 8), gemm_e2m1x2(v >> 12));
    int a, b, c, d;
    gemm_ovp_pair(v & 0xFFu, a, b);
    gemm_ovp_pair(v >> 8, c, d);
    return gemm_pack_s8x4(a, b, c, d);
}

// Elements k..k+3 (k % 4 == 0) of a weight row as a packed int8x4 word, element k in the low byte.
QUELLM_HD QUELLM_INLINE uint32_t gemm_wcode_s8x4(WCode kind, const uint8_t* row, int64_t k) {
    if (kind == WCode::S8) return gemm_ld_u32(row + k);
    return gemm_w4_s8x4(kind, gemm_ld_u16(row + k / 2));
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

// Exact int32 dot of one 16-byte weight unit with its activations (int8): S8 units hold 16
// elements (q: 4 words), 4-bit units 32 (q: 8 words). Word j of a 4-bit unit holds elements
// 8j..8j+7: its low half pairs with q[2j], its high half with q[2j + 1].
QUELLM_HD QUELLM_INLINE int32_t gemm_unit_dot(WCode kind, const uint32_t w[4], const uint32_t* q, int32_t acc) {
    if (kind == WCode::S8) {
        for (int j = 0; j < 4; ++j) acc = gemm_dp4a(w[j], q[j], acc);
        return acc;
    }
    for (int j = 0; j < 4; ++j) {
        acc = gemm_dp4a(gemm_w4_s8x4(kind, w[j]), q[2 * j], acc);
        acc = gemm_dp4a(gemm_w4_s8x4(kind, w[j] >> 16), q[2 * j + 1], acc);
    }
    return acc;
}

// Weight-only (W4A16 / W8A16) code minus zero point, an exact small integer: int4 rows hold
// unsigned nibbles u with zero point z (symmetric int4: u = q + 8, z = 8), int8 rows signed codes, z = 0.
QUELLM_HD QUELLM_INLINE int gemm_wf_code(int bits, const uint8_t* row, int64_t k, int z) {
    if (bits == 8) return int(int8_t(row[k]));
    const uint32_t byte = row[k / 2];
    return int(k % 2 ? byte >> 4 : byte & 15u) - z;
}

// (code − zero) of the elements of one 16-byte weight-only unit as floats: int8 16 elements,
// int4 32 (element e of word j = e / 8 at bits 4·(e % 8)); the weight-only GEMV's decode.
template <int WB>
QUELLM_HD QUELLM_INLINE void gemm_wf_unit(const uint32_t w[4], int z, float c[WB == 8 ? 16 : 32]) {
    constexpr int E = WB == 8 ? 16 : 32;
    for (int e = 0; e < E; ++e) {
        const uint32_t word = w[e / (E / 4)];
        c[e] = WB == 8 ? float(int8_t(word >> (8 * (e % 4)))) : float(int((word >> (4 * (e % 8))) & 15u) - z);
    }
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

// ---- integer GEMV group walk ------------------------------------------------------------------
// The GEMV kernel (cuda/gemm_gemv.cu) gives 16-byte unit u of a weight row to lane u % 32, 32 units
// per iteration starting at unit `base`; groups are U = G / E units long. After each iteration it
// calls f(g, ends) for every group g with a unit in the iteration, in order: f adds the lanes'
// partial sums of group g to a carry and, when the group ends in this iteration, folds the carry
// into y (gemm_epi_group). Shared with the CPU emulation in test_kernels.cpp.
template <class F>
QUELLM_HD QUELLM_INLINE void gemv_group_walk(int64_t base, int64_t units, int64_t U, F f) {
    const int64_t last = base + 31 < units - 1 ? base + 31 : units - 1;
    for (int64_t g = base / U; g <= last / U; ++g) f(g, (g + 1) * U - 1 <= last);
}

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

// ---- shared-memory tiles of the integer mma kernel (gemm_int_tc in cuda/gemm_mma.cu) -----------
// A block computes a kTileBM × kTileBN output tile; per k-step of kTileBK = 32 it stages the
// activation tile (BM rows × 32 int8) and the weight tile decoded to int8 (BN rows × 32) in shared
// memory, rows kTileLd bytes apart (32 + 16 padding: the fragment loads of a warp hit 32 distinct
// banks). Each of the 128 threads moves one 16-byte chunk of each: chunk c is row c / 2, bytes
// (c % 2)·16 .. +15. fetch (global → registers, raw codes) and put (decode → shared) are split so the
// next tile's loads are in flight during the current tile's mma. Rows past M / N stage as zeros.
constexpr int kTileBM = 64, kTileBN = 64, kTileBK = 32, kTileLd = 48, kTileThreads = 128;

QUELLM_HD QUELLM_INLINE void gemm_ld_u32x4(const void* p, uint32_t r[4]) {
#if defined(__CUDA_ARCH__)
    const uint4 v = *static_cast<const uint4*>(p);
    r[0] = v.x, r[1] = v.y, r[2] = v.z, r[3] = v.w;
#else
    std::memcpy(r, p, 16);
#endif
}
QUELLM_HD QUELLM_INLINE void gemm_st_u32x4(void* p, const uint32_t r[4]) {
#if defined(__CUDA_ARCH__)
    *static_cast<uint4*>(p) = make_uint4(r[0], r[1], r[2], r[3]);
#else
    std::memcpy(p, r, 16);
#endif
}

QUELLM_HD QUELLM_INLINE void tile_a_fetch(const int8_t* q, int64_t ldq, int64_t m0, int64_t M, int64_t k0, int c,
                                          uint32_t r[4]) {
    const int64_t row = m0 + c / 2;
    if (row < M)
        gemm_ld_u32x4(q + row * ldq + k0 + (c % 2) * 16, r);
    else
        r[0] = r[1] = r[2] = r[3] = 0u;
}
QUELLM_HD QUELLM_INLINE void tile_a_put(int8_t* s, int c, const uint32_t r[4]) {
    gemm_st_u32x4(s + (c / 2) * kTileLd + (c % 2) * 16, r);
}
// Raw codes of chunk c: S8 16 bytes (r[0..3]); 4-bit kinds 8 bytes (r[0..1]) = 16 elements.
QUELLM_HD QUELLM_INLINE void tile_b_fetch(WCode kind, const uint8_t* w, int64_t ldw, int64_t n0, int64_t N, int64_t k0,
                                          int c, uint32_t r[4]) {
    const int64_t n = n0 + c / 2;
    r[0] = r[1] = r[2] = r[3] = 0u;
    if (n >= N) return;
    const uint8_t* row = w + n * ldw;
    if (kind == WCode::S8) {
        gemm_ld_u32x4(row + k0 + (c % 2) * 16, r);
    } else {
        const uint8_t* p = row + (k0 + (c % 2) * 16) / 2;
        r[0] = gemm_ld_u32(p);
        r[1] = gemm_ld_u32(p + 4);
    }
}
QUELLM_HD QUELLM_INLINE void tile_b_put(WCode kind, int8_t* s, int c, const uint32_t r[4]) {
    uint32_t d[4] = {r[0], r[1], r[2], r[3]};
    if (kind != WCode::S8) {
        d[0] = gemm_w4_s8x4(kind, r[0]);
        d[1] = gemm_w4_s8x4(kind, r[0] >> 16);
        d[2] = gemm_w4_s8x4(kind, r[1]);
        d[3] = gemm_w4_s8x4(kind, r[1] >> 16);
    }
    gemm_st_u32x4(s + (c / 2) * kTileLd + (c % 2) * 16, d);
}

// Exact f16 / bf16 bit pattern of a small integer (|v| <= 256).
QUELLM_HD QUELLM_INLINE uint32_t gemm_int_to_half_bits(int v, bool bf16) {
#if defined(__CUDA_ARCH__)
    return bf16 ? uint32_t(__bfloat16_as_ushort(__int2bfloat16_rn(v))) : uint32_t(__half_as_ushort(__int2half_rn(v)));
#else
    return bf16 ? f32_to_bf16(float(v)) : f32_to_f16(float(v));
#endif
}

// Warp tiles of the *_tc kernels: 2 m-tiles × 4 n-tiles of 16 × 8, the warp's first row row0 and
// column col0; element i of accumulator (mt, nt) of a lane is output (r, c).
QUELLM_HD QUELLM_INLINE void tc_tile_rc(int64_t row0, int64_t col0, int lane, int mt, int nt, int i, int64_t& r,
                                        int64_t& c) {
    int rr, cc;
    mma_c_rc(lane, i, rr, cc);
    r = row0 + mt * 16 + rr;
    c = col0 + nt * 8 + cc;
}
// Integer tc kernel, end of group g: y = fma(acc, sa·sw, y) (gemm_epi_group) for the lane's 32
// outputs, then acc = 0. sa (M, sa_groups), scales (N, NG); rows / columns past M / N get 0.
QUELLM_HD QUELLM_INLINE void tc_int_fold(int32_t acc[2][4][4], float y[2][4][4], const float* sa, int64_t sa_groups,
                                         const float* scales, int64_t NG, int64_t g, int64_t M, int64_t N, int64_t row0,
                                         int64_t col0, int lane) {
    const int64_t sg = sa_groups > 1 ? g : 0;
    for (int mt = 0; mt < 2; ++mt)
        for (int nt = 0; nt < 4; ++nt)
            for (int i = 0; i < 4; ++i) {
                int64_t r, c;
                tc_tile_rc(row0, col0, lane, mt, nt, i, r, c);
                const float sav = r < M ? sa[r * sa_groups + sg] : 0.0f;
                const float sw = c < N ? scales[c * NG + g] : 0.0f;
                y[mt][nt][i] = gemm_epi_group(acc[mt][nt][i], sav, sw, y[mt][nt][i]);
                acc[mt][nt][i] = 0;
            }
}

// f16 / bf16 tc kernel, weight-only, end of group g: y += s·acc (fma), then acc = 0.
QUELLM_HD QUELLM_INLINE void tc_wf_fold(float acc[2][4][4], float y[2][4][4], const float* scales, int64_t NG, int64_t g,
                                        int64_t N, int64_t col0, int lane) {
    for (int mt = 0; mt < 2; ++mt)
        for (int nt = 0; nt < 4; ++nt)
            for (int i = 0; i < 4; ++i) {
                int64_t r, c;
                tc_tile_rc(0, col0, lane, mt, nt, i, r, c);
                const float s = c < N ? scales[c * NG + g] : 0.0f;
                y[mt][nt][i] = fmaf(s, acc[mt][nt][i], y[mt][nt][i]);
                acc[mt][nt][i] = 0.0f;
            }
}

// The f16 / bf16 kernel (gemm_h_tc) stages 64 × 32-element tiles of 16-bit values, rows
// kTileLdH elements apart (32 + 8 padding: conflict-free fragment loads); 256 chunks of 8 elements,
// two per thread: chunk c is row c / 4, elements (c % 4)·8 .. +7.
constexpr int kTileLdH = 40;

QUELLM_HD QUELLM_INLINE void tile_h_fetch(const uint16_t* x, int64_t ldx, int64_t row0, int64_t rows, int64_t k0, int c,
                                          uint32_t r[4]) {
    const int64_t row = row0 + c / 4;
    if (row < rows)
        gemm_ld_u32x4(x + row * ldx + k0 + (c % 4) * 8, r);
    else
        r[0] = r[1] = r[2] = r[3] = 0u;
}
QUELLM_HD QUELLM_INLINE void tile_h_put(uint16_t* s, int c, const uint32_t r[4]) {
    gemm_st_u32x4(s + (c / 4) * kTileLdH + (c % 4) * 8, r);
}
// Weight-only codes of chunk c (int8: 8 bytes in r[0..1]; int4: 4 bytes in r[0]) and the zero
// point of its group in r[2] (G % 32 == 0, so a k-step lies in one group).
QUELLM_HD QUELLM_INLINE void tile_wf_fetch(int bits, const uint8_t* w, int64_t ldw, const uint8_t* zeros, int64_t NG,
                                           int64_t G, int64_t n0, int64_t N, int64_t k0, int c, uint32_t r[4]) {
    const int64_t n = n0 + c / 4, k = k0 + (c % 4) * 8;
    r[0] = r[1] = r[2] = r[3] = 0u;
    if (n >= N) return;
    const uint8_t* row = w + n * ldw;
    if (bits == 8) {
        r[0] = gemm_ld_u32(row + k);
        r[1] = gemm_ld_u32(row + k + 4);
    } else {
        r[0] = gemm_ld_u32(row + k / 2);
        r[2] = zeros[n * NG + k0 / G];
    }
}
// (code − zero) as f16 / bf16, exact.
QUELLM_HD QUELLM_INLINE void tile_wf_put(int bits, bool bf16, uint16_t* s, int c, const uint32_t r[4]) {
    uint32_t d[4];
    for (int j = 0; j < 4; ++j) {
        int v0, v1;
        if (bits == 8) {
            v0 = int(int8_t(r[j / 2] >> (16 * (j % 2))));
            v1 = int(int8_t(r[j / 2] >> (16 * (j % 2) + 8)));
        } else {
            v0 = int((r[0] >> (8 * j)) & 15u) - int(r[2]);
            v1 = int((r[0] >> (8 * j + 4)) & 15u) - int(r[2]);
        }
        d[j] = gemm_int_to_half_bits(v0, bf16) | gemm_int_to_half_bits(v1, bf16) << 16;
    }
    gemm_st_u32x4(s + (c / 4) * kTileLdH + (c % 4) * 8, d);
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
