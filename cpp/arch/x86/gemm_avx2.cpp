// gemm_avx2.cpp — integer and weight-only kernels for AVX2 (no VNNI), see gemm.h.
//
// Integer tile: same layout and epilogue as the AVX-512 kernel, in two halves of 8 rows.
//   int4: per k-oct (gemm.h) 32 bytes of a half-tile's nibbles split (v & 0x0F, (v >> 4) & 0x0F)
//   into the 32 u8 weights of each of two quads; vpmaddubsw multiplies them by the broadcast int8
//   activations (u8 × s8 → pairs summed to s16: at most 2·15·128 = 3840, never saturating); the
//   pair sums of up to 4 octs add in s16, and one vpmaddwd with ones widens them to 8 int32 lane
//   sums. One activation row runs both halves in one pass (whole 64-byte lines, front to back).
//   A group's odd last quad (G/4 odd) widens its 16 bytes with vpmovzxbw.
//   int8: the 32 weight bytes of a half-tile widen to two s16 vectors (rows 0-3, rows 4-7) and
//   vpmaddwd with the broadcast activations (s16 × s16, exact) gives per-row pair sums; the pairs
//   are folded with one vphaddd + permute at each group end. No shift, so no correction.
//   E2M1 (MXFP4): nibbles split as for int4, vpshufb maps codes to 2·value (s8), and vpmaddubsw
//   takes the activations shifted to u8 (+128), 2 octs summed in s16; the shift is removed with
//   128·Σqw. OVP4 widens every product (an outlier's pair sum reaches 255·96).
#include <immintrin.h>

#include <cstring>

#include "gemm.h"
#include "gemm_hd.h"
#include "gemm_wf_simd.h"

namespace {

enum Mode { kInt4, kInt8, kE2M1, kOvp4 };

template <int MODE, int MR>
void int_tile(const quellm::GemmIntParams& p, int64_t t, int64_t m0, const int32_t* asum) {
    constexpr int BITS = MODE == kInt8 ? 8 : 4;
    // 8-row halves of the tile per pass: both for one activation row, so each 64-byte weight line
    // is read once, front to back (a pass over every other 32 bytes runs ~1.5x slower from L2).
    constexpr int H = MR == 1 ? 2 : 1;
    // k-octs summed in s16 before one vpmaddwd widens them: an oct adds two pair sums per lane,
    // at most 2·2·15·128 = 7680 (int4) or 2·2·255·12 = 12240 (E2M1), so 4 resp. 2 octs stay
    // below 2^15. OVP4 (a pair sum up to 255·96) widens every product.
    constexpr int S = MODE == kInt4 ? 4 : MODE == kE2M1 ? 2 : 1;
    const quellm::IntPacked& w = *p.w;
    const int64_t K = w.K, KQ = K / 4, G = w.G, NG = K / G, GQ = G / 4;
    const uint8_t* wt = w.codes.data() + t * KQ * 8 * BITS;
    const __m256i nib = _mm256_set1_epi8(0x0f);
    const __m256i lo4 = _mm256_set1_epi16(0x000f), hi4 = _mm256_set1_epi16(0x0f00), ones = _mm256_set1_epi16(1);
    const __m256i lut = _mm256_setr_epi8(0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12,
                                         0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12);
    const __m256i ovp_n = _mm256_setr_epi8(0, 1, 2, 3, 4, 5, 6, 7, 0, -7, -6, -5, -4, -3, -2, -1,
                                           0, 1, 2, 3, 4, 5, 6, 7, 0, -7, -6, -5, -4, -3, -2, -1);
    const __m256i ovp_o = _mm256_setr_epi8(0, 12, 16, 24, 32, 48, 64, 96, 0, -12, -16, -24, -32, -48, -64, -96,
                                           0, 12, 16, 24, 32, 48, 64, 96, 0, -12, -16, -24, -32, -48, -64, -96);
    const __m256i swap = _mm256_setr_epi8(1, 0, 3, 2, 5, 4, 7, 6, 9, 8, 11, 10, 13, 12, 15, 14,
                                          1, 0, 3, 2, 5, 4, 7, 6, 9, 8, 11, 10, 13, 12, 15, 14);
    // s8 weight values of 32 nibble codes (E2M1, OVP4); int4 keeps the u8 codes.
    auto values = [&](__m256i c) -> __m256i {
        if constexpr (MODE == kE2M1) return _mm256_shuffle_epi8(lut, c);
        if constexpr (MODE == kOvp4) {  // 0 for the identifier, outlier if the partner is one
            const __m256i id = _mm256_cmpeq_epi8(c, _mm256_set1_epi8(8));
            const __m256i v = _mm256_blendv_epi8(_mm256_shuffle_epi8(ovp_n, c), _mm256_shuffle_epi8(ovp_o, c),
                                                 _mm256_shuffle_epi8(id, swap));
            return _mm256_andnot_si256(id, v);
        }
        return c;
    };
    // Broadcast activations k..k+3 of row r: int4 takes them as s8; E2M1 / OVP4 as u8 (+128).
    auto act = [&](int r, int64_t k) -> __m256i {
        int32_t a4;
        __builtin_memcpy(&a4, p.qa + (m0 + r) * K + k, 4);
        return _mm256_set1_epi32(MODE == kInt4 ? a4 : a4 ^ int32_t(0x80808080));
    };
    // int4: u8 weights × s8 activations; E2M1 / OVP4: u8 activations × s8 values (pairs to s16).
    auto prod = [&](__m256i wv, __m256i a) -> __m256i {
        return MODE == kInt4 ? _mm256_maddubs_epi16(wv, a) : _mm256_maddubs_epi16(a, wv);
    };
    const int64_t n0 = t * 16;
    for (int h0 = 0; h0 < 2; h0 += H) {
        __m256 y[MR][H];
        for (int r = 0; r < MR; ++r)
            for (int h = 0; h < H; ++h) y[r][h] = _mm256_setzero_ps();
        for (int64_t g = 0; g < NG; ++g) {
            __m256i acc[MR][H], acc2[MR][H];
            for (int r = 0; r < MR; ++r)
                for (int h = 0; h < H; ++h) acc[r][h] = acc2[r][h] = _mm256_setzero_si256();
            const int64_t kq0 = g * GQ, kqo = kq0 + (GQ & ~int64_t(1));
            if constexpr (BITS == 4) {
                // Octs: a half's 8 rows × 4 bytes k_i | k_{i+4} << 4, split into low and high nibbles.
                for (int64_t kc = kq0; kc < kqo; kc += 2 * S) {
                    const int64_t kce = kc + 2 * S < kqo ? kc + 2 * S : kqo;
                    __m256i s16[MR][H];
                    for (int r = 0; r < MR; ++r)
                        for (int h = 0; h < H; ++h) s16[r][h] = _mm256_setzero_si256();
                    for (int64_t kq = kc; kq < kce; kq += 2) {
                        for (int h = 0; h < H; ++h) {
                            const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(wt + kq * 32 + (h0 + h) * 32));
                            const __m256i lo = values(_mm256_and_si256(v, nib));
                            const __m256i hi = values(_mm256_and_si256(_mm256_srli_epi16(v, 4), nib));
                            for (int r = 0; r < MR; ++r) {
                                // broadcast at the point of use (a memory operand); the halves share them
                                const __m256i plo = prod(lo, act(r, kq * 4)), phi = prod(hi, act(r, kq * 4 + 4));
                                if constexpr (MODE == kOvp4) {
                                    acc[r][h] = _mm256_add_epi32(acc[r][h], _mm256_madd_epi16(plo, ones));
                                    acc[r][h] = _mm256_add_epi32(acc[r][h], _mm256_madd_epi16(phi, ones));
                                } else {
                                    s16[r][h] = _mm256_add_epi16(s16[r][h], _mm256_add_epi16(plo, phi));
                                }
                            }
                        }
                    }
                    if constexpr (MODE != kOvp4)
                        for (int r = 0; r < MR; ++r)
                            for (int h = 0; h < H; ++h) acc[r][h] = _mm256_add_epi32(acc[r][h], _mm256_madd_epi16(s16[r][h], ones));
                }
                if (GQ & 1) {  // the group's last quad in the quad form: 16 bytes widen to the half's 32 codes
                    const int64_t kq = kqo;
                    for (int h = 0; h < H; ++h) {
                        const __m256i b16 = _mm256_cvtepu8_epi16(
                            _mm_loadu_si128(reinterpret_cast<const __m128i*>(wt + kq * 32 + (h0 + h) * 16)));
                        const __m256i wv = values(_mm256_or_si256(_mm256_and_si256(b16, lo4), _mm256_and_si256(_mm256_slli_epi16(b16, 4), hi4)));
                        for (int r = 0; r < MR; ++r)
                            acc[r][h] = _mm256_add_epi32(acc[r][h], _mm256_madd_epi16(prod(wv, act(r, kq * 4)), ones));
                    }
                }
            } else {
                for (int64_t kq = kq0; kq < kq0 + GQ; ++kq) {
                    __m256i a[MR];
                    for (int r = 0; r < MR; ++r) {
                        int32_t a4;
                        __builtin_memcpy(&a4, p.qa + (m0 + r) * K + kq * 4, 4);
                        a[r] = _mm256_cvtepi8_epi16(_mm_set1_epi32(a4));
                    }
                    for (int h = 0; h < H; ++h) {
                        const uint8_t* src = wt + kq * 64 + (h0 + h) * 32;
                        const __m256i w0 = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src)));
                        const __m256i w1 = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src + 16)));
                        for (int r = 0; r < MR; ++r) {
                            acc[r][h] = _mm256_add_epi32(acc[r][h], _mm256_madd_epi16(w0, a[r]));
                            acc2[r][h] = _mm256_add_epi32(acc2[r][h], _mm256_madd_epi16(w1, a[r]));
                        }
                    }
                }
            }
            for (int h = 0; h < H; ++h) {
                const int64_t sidx = (t * NG + g) * 16 + (h0 + h) * 8;
                const __m256 sw = _mm256_loadu_ps(w.scales.data() + sidx);
                for (int r = 0; r < MR; ++r) {
                    __m256i sum;
                    if constexpr (MODE == kInt4) {
                        sum = _mm256_sub_epi32(acc[r][h], _mm256_set1_epi32(8 * asum[(m0 + r) * NG + g]));
                    } else if constexpr (MODE == kE2M1 || MODE == kOvp4) {
                        const __m256i ws = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w.wsum.data() + sidx));
                        sum = _mm256_sub_epi32(acc[r][h], _mm256_slli_epi32(ws, 7));
                    } else {
                        // acc: pair sums of rows 0-3 (2 per row), acc2: rows 4-7. hadd gives per 128-bit
                        // lane [r0 r1 r4 r5 | r2 r3 r6 r7]; the permute restores row order.
                        sum = _mm256_permute4x64_epi64(_mm256_hadd_epi32(acc[r][h], acc2[r][h]), 0xd8);
                    }
                    const __m256 a = _mm256_cvtepi32_ps(sum);
                    const __m256 s = _mm256_mul_ps(_mm256_set1_ps(p.act_scale(m0 + r, g)), sw);
                    y[r][h] = _mm256_fmadd_ps(a, s, y[r][h]);
                }
            }
        }
        for (int h = 0; h < H; ++h) {
            const int64_t nb = n0 + (h0 + h) * 8;
            const int valid = int(w.N - nb < 8 ? (w.N - nb > 0 ? w.N - nb : 0) : 8);
            if (valid == 0) return;
            alignas(32) float buf[8];
            for (int r = 0; r < MR; ++r) {
                _mm256_store_ps(buf, y[r][h]);
                float* out = p.y + (m0 + r) * w.N + nb;
                for (int j = 0; j < valid; ++j) out[j] = p.bias ? buf[j] + p.bias[nb + j] : buf[j];
            }
        }
    }
}

template <int MODE>
void int_tile_any(const quellm::GemmIntParams& p, int64_t t, int64_t m0, int mr, const int32_t* asum) {
    switch (mr) {
        case 4: int_tile<MODE, 4>(p, t, m0, asum); break;
        case 3: int_tile<MODE, 3>(p, t, m0, asum); break;
        case 2: int_tile<MODE, 2>(p, t, m0, asum); break;
        default: int_tile<MODE, 1>(p, t, m0, asum); break;
    }
}

// MXFP8 activations (gemm.h, gemm_mx8): as the AVX-512 tile, one 8-row half of the tile at a
// time; the 16-entry nibble table is two vpermd lookups blended on the nibble's bit 3.
template <int MODE, int MR>
void mx8_tile(const quellm::GemmMx8Params& p, int64_t t, int64_t m0) {
    const quellm::IntPacked& w = *p.w;
    const int64_t K = w.K, KQ = K / 4, NB = K / 32;
    const uint8_t* wt = w.codes.data() + t * KQ * (MODE == kInt8 ? 64 : 32);
    const __m256i lut_lo = MODE == kE2M1 ? _mm256_setr_epi32(0, 1, 2, 3, 4, 6, 8, 12) : _mm256_setr_epi32(-8, -7, -6, -5, -4, -3, -2, -1);
    const __m256i lut_hi = MODE == kE2M1 ? _mm256_setr_epi32(0, -1, -2, -3, -4, -6, -8, -12) : _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    auto lookup = [&](__m256i nib) {
        const __m256 lo = _mm256_castsi256_ps(_mm256_permutevar8x32_epi32(lut_lo, nib));
        const __m256 hi = _mm256_castsi256_ps(_mm256_permutevar8x32_epi32(lut_hi, nib));
        return _mm256_castps_si256(_mm256_blendv_ps(lo, hi, _mm256_castsi256_ps(_mm256_slli_epi32(nib, 28))));
    };
    for (int half = 0; half < 2; ++half) {
        const int64_t nb = t * 16 + half * 8;
        if (nb >= w.N) break;
        __m256 y[MR];
        for (int r = 0; r < MR; ++r) y[r] = _mm256_setzero_ps();
        for (int64_t b = 0; b < NB; ++b) {
            __m256i acc[MR];
            for (int r = 0; r < MR; ++r) acc[r] = _mm256_setzero_si256();
            for (int64_t kq = b * 8; kq < b * 8 + 8; kq += 2) {  // G = 32: whole octs
                __m256i wk[8];
                if constexpr (MODE == kInt8) {
                    for (int h = 0; h < 2; ++h) {
                        const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(wt + (kq + h) * 64 + half * 32));
                        wk[4 * h + 0] = _mm256_srai_epi32(_mm256_slli_epi32(v, 24), 24);
                        wk[4 * h + 1] = _mm256_srai_epi32(_mm256_slli_epi32(v, 16), 24);
                        wk[4 * h + 2] = _mm256_srai_epi32(_mm256_slli_epi32(v, 8), 24);
                        wk[4 * h + 3] = _mm256_srai_epi32(v, 24);
                    }
                } else {  // lane j: byte i = k_i | k_{i+4} << 4; lookup reads index bits 0..3 only
                    const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(wt + kq * 32 + half * 32));
                    for (int i = 0; i < 8; ++i) wk[i] = lookup(_mm256_srli_epi32(v, 8 * (i % 4) + 4 * (i / 4)));
                }
                for (int r = 0; r < MR; ++r) {
                    const int32_t* a = p.qa + (m0 + r) * K + kq * 4;
                    for (int i = 0; i < 8; ++i)
                        acc[r] = _mm256_add_epi32(acc[r], _mm256_mullo_epi32(wk[i], _mm256_set1_epi32(a[i])));
                }
            }
            const __m256 sw = _mm256_loadu_ps(w.scales.data() + (t * NB + b) * 16 + half * 8);
            for (int r = 0; r < MR; ++r) {
                const __m256 s = _mm256_mul_ps(_mm256_set1_ps(p.sa[(m0 + r) * NB + b]), sw);
                y[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(acc[r]), s, y[r]);
            }
        }
        const int valid = int(w.N - nb < 8 ? w.N - nb : 8);
        alignas(32) float buf[8];
        for (int r = 0; r < MR; ++r) {
            _mm256_store_ps(buf, y[r]);
            float* out = p.y + (m0 + r) * w.N + nb;
            for (int j = 0; j < valid; ++j) out[j] = p.bias ? buf[j] + p.bias[nb + j] : buf[j];
        }
    }
}

template <int MODE>
void mx8_tile_any(const quellm::GemmMx8Params& p, int64_t t, int64_t m0, int mr) {
    switch (mr) {
        case 4: mx8_tile<MODE, 4>(p, t, m0); break;
        case 3: mx8_tile<MODE, 3>(p, t, m0); break;
        case 2: mx8_tile<MODE, 2>(p, t, m0); break;
        default: mx8_tile<MODE, 1>(p, t, m0); break;
    }
}

struct V256 {
    using reg = __m256;
    static constexpr int W = 8;
    static reg zero() { return _mm256_setzero_ps(); }
    static reg set1(float v) { return _mm256_set1_ps(v); }
    static reg load(const float* p) { return _mm256_loadu_ps(p); }
    static void store(float* p, reg v) { _mm256_storeu_ps(p, v); }
    static reg mul(reg a, reg b) { return _mm256_mul_ps(a, b); }
    static reg fmadd(reg a, reg b, reg c) { return _mm256_fmadd_ps(a, b, c); }
    static float reduce(reg a) {
        __m128 s = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
        s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        s = _mm_add_ss(s, _mm_movehdup_ps(s));
        return _mm_cvtss_f32(s);
    }
    // 32 nibbles (split32 layout) from 16 bytes as floats u − z, in element order.
    static void u4_chunk(const uint8_t* p, uint8_t z, reg out[4]) {
        const __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
        const __m128i m = _mm_set1_epi8(0x0f), zv = _mm_set1_epi8(char(z));
        const __m128i lo = _mm_sub_epi8(_mm_and_si128(b, m), zv), hi = _mm_sub_epi8(_mm_and_si128(_mm_srli_epi16(b, 4), m), zv);
        out[0] = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(lo));
        out[1] = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(lo, 8)));
        out[2] = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(hi));
        out[3] = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(hi, 8)));
    }
    static void s8_chunk(const uint8_t* p, reg out[4]) {
        for (int c = 0; c < 4; ++c)
            out[c] = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p + 8 * c))));
    }
};

}  // namespace

namespace quellm::x86 {
void gemm_int_tile_avx2(const GemmIntParams& p, int64_t t, int64_t m0, int mr, const int32_t* asum) {
    if (p.w->bits == 8)
        int_tile_any<kInt8>(p, t, m0, mr, asum);
    else if (p.w->ovp)
        int_tile_any<kOvp4>(p, t, m0, mr, asum);
    else if (p.w->e2m1)
        int_tile_any<kE2M1>(p, t, m0, mr, asum);
    else
        int_tile_any<kInt4>(p, t, m0, mr, asum);
}
void gemm_mx8_tile_avx2(const GemmMx8Params& p, int64_t t, int64_t m0, int mr) {
    if (p.w->bits == 8)
        mx8_tile_any<kInt8>(p, t, m0, mr);
    else if (p.w->e2m1)
        mx8_tile_any<kE2M1>(p, t, m0, mr);
    else
        mx8_tile_any<kInt4>(p, t, m0, mr);
}
bool quantize_row_avx2(const float* x, int64_t K, int qmax, float clip, int8_t* q, float* sa) {
    // max |x| as the largest sign-cleared bit pattern: NaN and Inf sort above every finite value
    const __m256i absm = _mm256_set1_epi32(0x7fffffff);
    __m256i mx = _mm256_setzero_si256();
    int64_t k = 0;
    for (; k + 8 <= K; k += 8)
        mx = _mm256_max_epu32(mx, _mm256_and_si256(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(x + k)), absm));
    uint32_t lanes[8];
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(lanes), mx);
    uint32_t amb = 0;
    for (uint32_t l : lanes) amb = l > amb ? l : amb;
    for (int64_t j = k; j < K; ++j) {
        uint32_t b;
        std::memcpy(&b, x + j, 4);
        b &= 0x7fffffffu;
        amb = b > amb ? b : amb;
    }
    if (amb >= 0x7f800000u) return false;
    float amax;
    std::memcpy(&amax, &amb, 4);
    const float s = quellm::gemm_act_scale(amax, clip, qmax);
    *sa = s;
    // gemm_act_quant: the same division, RNE and clamp, 8 at a time
    const __m256 vs = _mm256_set1_ps(s), hi = _mm256_set1_ps(float(qmax)), lo = _mm256_set1_ps(-float(qmax));
    for (k = 0; k + 8 <= K; k += 8) {
        __m256 v = _mm256_div_ps(_mm256_loadu_ps(x + k), vs);
        v = _mm256_round_ps(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        const __m256i i = _mm256_cvtps_epi32(_mm256_min_ps(_mm256_max_ps(v, lo), hi));
        const __m128i w = _mm_packs_epi32(_mm256_castsi256_si128(i), _mm256_extracti128_si256(i, 1));
        _mm_storel_epi64(reinterpret_cast<__m128i*>(q + k), _mm_packs_epi16(w, w));
    }
    for (; k < K; ++k) q[k] = quellm::gemm_act_quant(x[k], s, qmax);
    return true;
}
void gemm_wf_rows_avx2(const GemmWfParams& p, int64_t n0, int64_t n1, int64_t m0, int mr) {
    wf_rows<V256>(p, n0, n1, m0, mr);
}
void wf_dequant_segment_avx2(const WfWeights& w, int64_t n, int64_t k0, int64_t k1, float* out) {
    wf_dequant_segment<V256>(w, n, k0, k1, out);
}
}  // namespace quellm::x86
