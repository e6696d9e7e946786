// gemm_avx512.cpp — integer (VNNI vpdpbusd) and weight-only (dequantize + FMA) kernels, see gemm.h.
//
// Integer tile: rows m0..m0+mr-1 (mr <= 8) of the int8 activations against one 16-row weight
// tile; one 64-byte operand per 4 k-steps (16 lanes × 4 weights) and one vpdpbusd per activation
// row, its 4 activations broadcast to every lane.
//   int4: one 64-byte load per k-oct (gemm.h) gives the operands of 8 k-steps: v & 0x0F and
//   (v >> 4) & 0x0F, u8 weights (0..15); activations are the s8 operand. A group's odd last quad
//   (G/4 odd) widens its 32 bytes with vpmovzxbw.
//   int8: the 64 weight bytes are the s8 operand; activations shifted to u8 (qa ^ 0x80 = qa + 128).
//   E2M1 (MXFP4): nibbles split as for int4, then vpshufb maps each code to 2·value (s8); as int8.
//   OVP4: nibbles split as for int4, decoded in pairs of adjacent bytes (see int_tile).
// At each group end: y += float(acc − correction) · (sa · sw), the same fma as the reference, with
// correction 8·Σqa (int4) or 128·Σqw (int8, E2M1).
#include <immintrin.h>

#include <cstring>

#include "gemm.h"
#include "gemm_hd.h"
#include "gemm_wf_simd.h"

namespace {

// Weight modes: int4 (offset nibbles, the u8 operand), int8 (s8 operand), E2M1 (nibbles mapped
// by vpshufb to 2·value in [-12, 12], the s8 operand).
enum Mode { kInt4, kInt8, kE2M1, kOvp4 };

// SPLIT (int4, few rows): the high nibbles of an oct enter vpdpbusd unshifted (v & 0xF0, 16·u)
// into their own partial sums, divided by 16 (exact) at the group end: one op per operand instead
// of shift + and. Needs 16·15·128·G/2 < 2^31 (G <= 2^17); the dispatcher checks.
template <int MODE, int MR, bool SPLIT = false>
void int_tile(const quellm::GemmIntParams& p, int64_t t, int64_t m0, const int32_t* asum) {
    const quellm::IntPacked& w = *p.w;
    const int64_t K = w.K, KQ = K / 4, G = w.G, NG = K / G, GQ = G / 4, GO = GQ / 2;
    const uint8_t* wt = w.codes.data() + t * KQ * (MODE == kInt8 ? 64 : 32);
    const __m512i nib = _mm512_set1_epi16(0x0f0f), nib_hi = _mm512_set1_epi16(int16_t(0xf0f0));
    const __m512i lut = _mm512_broadcast_i32x4(_mm_setr_epi8(0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12));
    const __m512i ovp_n = _mm512_broadcast_i32x4(_mm_setr_epi8(0, 1, 2, 3, 4, 5, 6, 7, 0, -7, -6, -5, -4, -3, -2, -1));
    const __m512i ovp_o = _mm512_broadcast_i32x4(_mm_setr_epi8(0, 12, 16, 24, 32, 48, 64, 96, 0, -12, -16, -24, -32, -48, -64, -96));
    const __m512i ident = _mm512_set1_epi8(8);
    __m512 y[MR];
    for (int r = 0; r < MR; ++r) y[r] = _mm512_setzero_ps();
    // vpdpbusd has a 5-cycle latency: with few activation rows, U partial sums per row (octs
    // taken in turn) keep enough chains in flight. Integer sums: the same total in any order.
    constexpr int U = MR == 1 ? 4 : MR == 2 ? 2 : 1;
    constexpr int H = MR <= 2 ? 2 : 1;  // chains per oct: low / high halves apart for few rows
    // Nibble codes (0..15 per byte) -> the kernel's weight operand.
    auto map = [&](__m512i c) -> __m512i {
        if constexpr (MODE == kE2M1) return _mm512_shuffle_epi8(lut, c);
        if constexpr (MODE == kOvp4) {
            // Pairs are adjacent bytes (k0,k1), (k2,k3) (or k4..k7 from the high nibbles): a
            // byte's partner bit is its neighbour's in the identifier mask.
            const uint64_t id = _mm512_cmpeq_epi8_mask(c, ident);
            const uint64_t partner = ((id >> 1) & 0x5555555555555555ull) | ((id << 1) & 0xAAAAAAAAAAAAAAAAull);
            const __m512i v = _mm512_mask_blend_epi8(partner, _mm512_shuffle_epi8(ovp_n, c), _mm512_shuffle_epi8(ovp_o, c));
            return _mm512_maskz_mov_epi8(~id, v);
        }
        return c;
    };
    auto dot = [&](__m512i acc, __m512i wv, int r, int64_t k) -> __m512i {
        int32_t a4;
        __builtin_memcpy(&a4, p.qa + (m0 + r) * K + k, 4);
        if constexpr (MODE == kInt4) return _mm512_dpbusd_epi32(acc, wv, _mm512_set1_epi32(a4));
        else return _mm512_dpbusd_epi32(acc, _mm512_set1_epi32(a4 ^ int32_t(0x80808080)), wv);
    };
    // One oct (quads kq, kq + 1) or int8 quad pair into partial sums accu[.][u].
    auto oct = [&](__m512i (*accu)[U * H], int u, int64_t kq) {
        __m512i lo, hi;
        if constexpr (MODE == kInt8) {
            lo = _mm512_loadu_si512(wt + kq * 64);
            hi = _mm512_loadu_si512(wt + kq * 64 + 64);
        } else {
            const __m512i v = _mm512_loadu_si512(wt + kq * 32);
            lo = map(_mm512_and_si512(v, nib));
            if constexpr (SPLIT) hi = _mm512_and_si512(v, nib_hi);
            else hi = map(_mm512_and_si512(_mm512_srli_epi16(v, 4), nib));
        }
        for (int r = 0; r < MR; ++r) {
            accu[r][u * H] = dot(accu[r][u * H], lo, r, kq * 4);
            accu[r][u * H + H - 1] = dot(accu[r][u * H + H - 1], hi, r, kq * 4 + 4);
        }
    };
    for (int64_t g = 0; g < NG; ++g) {
        __m512i accu[MR][U * H];
        for (int r = 0; r < MR; ++r)
            for (int u = 0; u < U * H; ++u) accu[r][u] = _mm512_setzero_si512();
        const int64_t kq0 = g * GQ, kq1 = kq0 + 2 * GO;
        int64_t kq = kq0;
        for (; kq + 2 * U <= kq1; kq += 2 * U)
            for (int u = 0; u < U; ++u) oct(accu, u, kq + 2 * u);
        for (; kq < kq1; kq += 2) oct(accu, 0, kq);  // G/8 not a multiple of U
        if (GQ & 1) {  // the group's last quad, in the quad form (int8: every quad is one)
            __m512i wv;
            if constexpr (MODE == kInt8) {
                wv = _mm512_loadu_si512(wt + kq * 64);
            } else {
                // 16 rows × 2 bytes -> 16 rows × 4 bytes: each byte 0xba (zero-extended to u16)
                // becomes bytes (a, b), low nibble first: (x | x << 4) & 0x0f0f, one vpternlogd.
                const __m512i b16 = _mm512_cvtepu8_epi16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(wt + kq * 32)));
                wv = map(_mm512_ternarylogic_epi32(b16, _mm512_slli_epi16(b16, 4), nib, 0xA8));  // (A | B) & C
            }
            for (int r = 0; r < MR; ++r) accu[r][0] = dot(accu[r][0], wv, r, kq * 4);
        }
        __m512i acc[MR];
        for (int r = 0; r < MR; ++r) {
            __m512i a = accu[r][0], b = accu[r][H - 1];
            for (int u = 1; u < U; ++u) {
                a = _mm512_add_epi32(a, accu[r][u * H]);
                if (H == 2) b = _mm512_add_epi32(b, accu[r][u * H + 1]);
            }
            if (H == 2) acc[r] = _mm512_add_epi32(a, SPLIT ? _mm512_srai_epi32(b, 4) : b);
            else acc[r] = a;
        }
        const __m512 sw = _mm512_loadu_ps(w.scales.data() + (t * NG + g) * 16);
        __m512i wcorr = _mm512_setzero_si512();
        if constexpr (MODE != kInt4) wcorr = _mm512_slli_epi32(_mm512_loadu_si512(w.wsum.data() + (t * NG + g) * 16), 7);
        for (int r = 0; r < MR; ++r) {
            const __m512i corr = MODE == kInt4 ? _mm512_set1_epi32(8 * asum[(m0 + r) * NG + g]) : wcorr;
            const __m512 a = _mm512_cvtepi32_ps(_mm512_sub_epi32(acc[r], corr));
            const __m512 s = _mm512_mul_ps(_mm512_set1_ps(p.act_scale(m0 + r, g)), sw);
            y[r] = _mm512_fmadd_ps(a, s, y[r]);
        }
    }
    const int64_t n0 = t * 16;
    const int valid = int(w.N - n0 < 16 ? w.N - n0 : 16);
    const __mmask16 mask = __mmask16((1u << valid) - 1);
    const __m512 b = p.bias ? _mm512_maskz_loadu_ps(mask, p.bias + n0) : _mm512_setzero_ps();
    for (int r = 0; r < MR; ++r) {
        const __m512 out = p.bias ? _mm512_add_ps(y[r], b) : y[r];
        _mm512_mask_storeu_ps(p.y + (m0 + r) * w.N + n0, mask, out);
    }
}

template <int MODE>
void int_tile_any(const quellm::GemmIntParams& p, int64_t t, int64_t m0, int mr, const int32_t* asum) {
    if (MODE == kInt4 && mr <= 2 && p.w->G <= (int64_t(1) << 17)) {
        if (mr == 2) int_tile<MODE, 2, true>(p, t, m0, asum);
        else int_tile<MODE, 1, true>(p, t, m0, asum);
        return;
    }
    switch (mr) {
        case 8: int_tile<MODE, 8>(p, t, m0, asum); break;
        case 7: int_tile<MODE, 7>(p, t, m0, asum); break;
        case 6: int_tile<MODE, 6>(p, t, m0, asum); break;
        case 5: int_tile<MODE, 5>(p, t, m0, asum); break;
        case 4: int_tile<MODE, 4>(p, t, m0, asum); break;
        case 3: int_tile<MODE, 3>(p, t, m0, asum); break;
        case 2: int_tile<MODE, 2>(p, t, m0, asum); break;
        default: int_tile<MODE, 1>(p, t, m0, asum); break;
    }
}

// MXFP8 activations (gemm.h, gemm_mx8): the 16 rows' weights of one oct (int8: two quads) widen
// to eight vectors of int32 (one per k), and each activation row accumulates Σ qw·qa with vpmulld against its
// broadcast int32 activation (E4M3 values · 2^9 need 18 bits: beyond the int8 dot products).
template <int MODE, int MR>
void mx8_tile(const quellm::GemmMx8Params& p, int64_t t, int64_t m0) {
    const quellm::IntPacked& w = *p.w;
    const int64_t K = w.K, KQ = K / 4, NB = K / 32;
    const uint8_t* wt = w.codes.data() + t * KQ * (MODE == kInt8 ? 64 : 32);
    // nibble -> weight value: int4 codes are offset (q + 8), E2M1 codes map to 2·value.
    const __m512i lut = MODE == kE2M1 ? _mm512_setr_epi32(0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12)
                                      : _mm512_setr_epi32(-8, -7, -6, -5, -4, -3, -2, -1, 0, 1, 2, 3, 4, 5, 6, 7);
    __m512 y[MR];
    for (int r = 0; r < MR; ++r) y[r] = _mm512_setzero_ps();
    for (int64_t b = 0; b < NB; ++b) {
        __m512i acc[MR];
        for (int r = 0; r < MR; ++r) acc[r] = _mm512_setzero_si512();
        for (int64_t kq = b * 8; kq < b * 8 + 8; kq += 2) {  // G = 32: whole octs
            __m512i wk[8];
            if constexpr (MODE == kInt8) {
                for (int h = 0; h < 2; ++h) {
                    const __m512i v = _mm512_loadu_si512(wt + (kq + h) * 64);  // lane j: the 4 bytes of row j
                    wk[4 * h + 0] = _mm512_srai_epi32(_mm512_slli_epi32(v, 24), 24);
                    wk[4 * h + 1] = _mm512_srai_epi32(_mm512_slli_epi32(v, 16), 24);
                    wk[4 * h + 2] = _mm512_srai_epi32(_mm512_slli_epi32(v, 8), 24);
                    wk[4 * h + 3] = _mm512_srai_epi32(v, 24);
                }
            } else {  // lane j: byte i = k_i | k_{i+4} << 4 of row j; vpermd reads index bits 0..3
                const __m512i v = _mm512_loadu_si512(wt + kq * 32);
                for (int i = 0; i < 8; ++i) wk[i] = _mm512_permutexvar_epi32(_mm512_srli_epi32(v, 8 * (i % 4) + 4 * (i / 4)), lut);
            }
            for (int r = 0; r < MR; ++r) {
                const int32_t* a = p.qa + (m0 + r) * K + kq * 4;
                for (int i = 0; i < 8; ++i) acc[r] = _mm512_add_epi32(acc[r], _mm512_mullo_epi32(wk[i], _mm512_set1_epi32(a[i])));
            }
        }
        const __m512 sw = _mm512_loadu_ps(w.scales.data() + (t * NB + b) * 16);
        for (int r = 0; r < MR; ++r) {
            const __m512 s = _mm512_mul_ps(_mm512_set1_ps(p.sa[(m0 + r) * NB + b]), sw);
            y[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(acc[r]), s, y[r]);
        }
    }
    const int64_t n0 = t * 16;
    const int valid = int(w.N - n0 < 16 ? w.N - n0 : 16);
    const __mmask16 mask = __mmask16((1u << valid) - 1);
    const __m512 bias = p.bias ? _mm512_maskz_loadu_ps(mask, p.bias + n0) : _mm512_setzero_ps();
    for (int r = 0; r < MR; ++r)
        _mm512_mask_storeu_ps(p.y + (m0 + r) * w.N + n0, mask, p.bias ? _mm512_add_ps(y[r], bias) : y[r]);
}

template <int MODE>
void mx8_tile_any(const quellm::GemmMx8Params& p, int64_t t, int64_t m0, int mr) {
    switch (mr) {
        case 8: mx8_tile<MODE, 8>(p, t, m0); break;
        case 7: mx8_tile<MODE, 7>(p, t, m0); break;
        case 6: mx8_tile<MODE, 6>(p, t, m0); break;
        case 5: mx8_tile<MODE, 5>(p, t, m0); break;
        case 4: mx8_tile<MODE, 4>(p, t, m0); break;
        case 3: mx8_tile<MODE, 3>(p, t, m0); break;
        case 2: mx8_tile<MODE, 2>(p, t, m0); break;
        default: mx8_tile<MODE, 1>(p, t, m0); break;
    }
}

struct V512 {
    using reg = __m512;
    static constexpr int W = 16;
    static reg zero() { return _mm512_setzero_ps(); }
    static reg set1(float v) { return _mm512_set1_ps(v); }
    static reg load(const float* p) { return _mm512_loadu_ps(p); }
    static void store(float* p, reg v) { _mm512_storeu_ps(p, v); }
    static reg mul(reg a, reg b) { return _mm512_mul_ps(a, b); }
    static reg fmadd(reg a, reg b, reg c) { return _mm512_fmadd_ps(a, b, c); }
    static float reduce(reg a) { return _mm512_reduce_add_ps(a); }
    // 32 nibbles (split32 layout) from 16 bytes as floats u − z, elements 0..15 then 16..31.
    static void u4_chunk(const uint8_t* p, uint8_t z, reg out[2]) {
        const __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
        const __m128i m = _mm_set1_epi8(0x0f), zv = _mm_set1_epi8(char(z));
        out[0] = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_sub_epi8(_mm_and_si128(b, m), zv)));
        out[1] = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_sub_epi8(_mm_and_si128(_mm_srli_epi16(b, 4), m), zv)));
    }
    static void s8_chunk(const uint8_t* p, reg out[2]) {
        for (int c = 0; c < 2; ++c)
            out[c] = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 16 * c))));
    }
};

}  // namespace

namespace quellm::x86 {
void gemm_int_tile_avx512(const GemmIntParams& p, int64_t t, int64_t m0, int mr, const int32_t* asum) {
    if (p.w->bits == 8)
        int_tile_any<kInt8>(p, t, m0, mr, asum);
    else if (p.w->ovp)
        int_tile_any<kOvp4>(p, t, m0, mr, asum);
    else if (p.w->e2m1)
        int_tile_any<kE2M1>(p, t, m0, mr, asum);
    else
        int_tile_any<kInt4>(p, t, m0, mr, asum);
}
void gemm_mx8_tile_avx512(const GemmMx8Params& p, int64_t t, int64_t m0, int mr) {
    if (p.w->bits == 8)
        mx8_tile_any<kInt8>(p, t, m0, mr);
    else if (p.w->e2m1)
        mx8_tile_any<kE2M1>(p, t, m0, mr);
    else
        mx8_tile_any<kInt4>(p, t, m0, mr);
}
void gemm_wf_rows_avx512(const GemmWfParams& p, int64_t n0, int64_t n1, int64_t m0, int mr) {
    wf_rows<V512>(p, n0, n1, m0, mr);
}
void wf_dequant_segment_avx512(const WfWeights& w, int64_t n, int64_t k0, int64_t k1, float* out) {
    wf_dequant_segment<V512>(w, n, k0, k1, out);
}
bool quantize_row_avx512(const float* x, int64_t K, int qmax, float clip, int8_t* q, float* sa) {
    // max |x| as the largest sign-cleared bit pattern: NaN and Inf sort above every finite value
    const __m512i absm = _mm512_set1_epi32(0x7fffffff);
    __m512i mx = _mm512_setzero_si512();
    for (int64_t k = 0; k < K; k += 16) {
        const __mmask16 m = K - k >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << (K - k)) - 1);
        mx = _mm512_max_epu32(mx, _mm512_and_si512(_mm512_maskz_loadu_epi32(m, x + k), absm));
    }
    const uint32_t amb = uint32_t(_mm512_reduce_max_epu32(mx));
    if (amb >= 0x7f800000u) return false;
    float amax;
    std::memcpy(&amax, &amb, 4);
    const float s = gemm_act_scale(amax, clip, qmax);
    *sa = s;
    // gemm_act_quant: the same division, RNE and clamp, 16 at a time
    const __m512 vs = _mm512_set1_ps(s), hi = _mm512_set1_ps(float(qmax)), lo = _mm512_set1_ps(-float(qmax));
    for (int64_t k = 0; k < K; k += 16) {
        const __mmask16 m = K - k >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << (K - k)) - 1);
        __m512 v = _mm512_div_ps(_mm512_maskz_loadu_ps(m, x + k), vs);
        v = _mm512_roundscale_ps(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        v = _mm512_min_ps(_mm512_max_ps(v, lo), hi);
        _mm512_mask_cvtsepi32_storeu_epi8(q + k, m, _mm512_cvtps_epi32(v));
    }
    return true;
}
}  // namespace quellm::x86
