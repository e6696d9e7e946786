// gemm.cpp — low-bit GEMM/GEMV: repacking, activation quantization, scalar references, dispatch.
// See gemm.h for the math and layouts; SIMD kernels live in arch/x86/gemm_*.cpp.
#include "gemm.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>

#include "common.h"
#include "cpu_features.h"
#include "formats.h"
#include "formats_elem.h"
#include "gemm_hd.h"
#include "matmul.h"
#include "parallel.h"

namespace quellm {

namespace {
IntPacked packed_shell(int bits, int64_t N, int64_t K, int64_t G) {
    QUELLM_CHECK(N >= 1 && K >= 1, "gemm repack: empty weight");
    QUELLM_CHECK(K % (bits == 4 ? 8 : 4) == 0, "gemm repack: K = ", K, " must be a multiple of ", bits == 4 ? 8 : 4);
    QUELLM_CHECK(G >= 4 && G % 4 == 0 && K % G == 0, "gemm repack: group size ", G, " must divide K = ", K,
                 " and be a multiple of 4");
    IntPacked w;
    w.bits = bits;
    w.N = N;
    w.K = K;
    w.G = G;
    w.tiles = ceil_div(N, 16);
    w.scales.assign(size_t(w.tiles * (K / G) * 16), 0.0f);
    return w;
}

// Index of the first byte of k-quad kq's 16 rows in tile t: quads keep their place in every
// layout (bits / 2 bytes per row and quad); bits 8: row j's 4 codes at quad_at + 4j.
inline size_t quad_at(const IntPacked& w, int64_t t, int64_t kq) {
    return size_t((t * (w.K / 4) + kq) * 16 * (w.bits / 2));
}

// bits 4 (gemm.h): byte index and nibble shift (0 or 4) of weight (n, k). Within each group the
// k-quads pair into octs (64 bytes: row j's byte i at 4j + i = k_i | k_{i+4} << 4); a group's last
// quad when G/4 is odd stays in the quad form (row j's bytes at 2j, 2j + 1: k0|k1<<4, k2|k3<<4).
inline size_t nib_at(const IntPacked& w, int64_t n, int64_t k, int* shift) {
    const int64_t t = n / 16, j = n % 16, GQ = w.G / 4, kq = k / 4, g = k / w.G, l = kq - g * GQ;
    if (l < (GQ & ~int64_t(1))) {
        *shift = int(l & 1) * 4;
        return quad_at(w, t, g * GQ + (l & ~int64_t(1))) + size_t(4 * j + k % 4);
    }
    *shift = int(k % 2) * 4;
    return quad_at(w, t, kq) + size_t(2 * j + (k % 4) / 2);
}
inline int nib_get(const IntPacked& w, int64_t n, int64_t k) {
    int sh;
    const size_t i = nib_at(w, n, k, &sh);
    return (w.codes[i] >> sh) & 15;
}
// Canonical int4 codes (N, K/2) <-> packed nibbles, a quad (2 canonical bytes) at a time; x: 0x88
// for offset int4 (q + 8), 0 for E2M1 / OVP codes. for_each_quad calls f(c, o, sh) for every quad:
// c is its first canonical byte; in the oct form (sh = 0 or 4) its 4 nibbles are packed byte o + i
// >> sh, in the quad form (sh < 0) its 2 bytes are packed bytes o, o + 1 as they are.
template <class F>
void for_each_quad(const IntPacked& w, F&& f) {
    const int64_t GQ = w.G / 4, NG = w.K / w.G;
    for (int64_t n = 0; n < w.N; ++n) {
        const int64_t t = n / 16, j = n % 16;
        for (int64_t g = 0; g < NG; ++g)
            for (int64_t l = 0; l < GQ; ++l) {
                const int64_t kq = g * GQ + l;
                const size_t c = size_t(n * (w.K / 2) + 2 * kq);
                if (l < (GQ & ~int64_t(1)))
                    f(c, quad_at(w, t, kq - (l & 1)) + size_t(4 * j), int(l & 1) * 4);
                else
                    f(c, quad_at(w, t, kq) + size_t(2 * j), -1);
            }
    }
}
// Packing fills every nibble of the real rows.
void pack_nibbles(IntPacked& w, const uint8_t* codes, uint8_t x) {
    uint8_t* wc = w.codes.data();
    for_each_quad(w, [&](size_t c, size_t o, int sh) {
        const uint8_t b0 = codes[c] ^ x, b1 = codes[c + 1] ^ x;
        if (sh < 0) {
            wc[o] = b0, wc[o + 1] = b1;
            return;
        }
        const uint8_t nb[4] = {uint8_t(b0 & 15), uint8_t(b0 >> 4), uint8_t(b1 & 15), uint8_t(b1 >> 4)};
        for (int i = 0; i < 4; ++i) wc[o + i] = uint8_t((wc[o + i] & (0xF0 >> sh)) | nb[i] << sh);
    });
}
void unpack_nibbles(const IntPacked& w, uint8_t* codes, uint8_t x) {
    const uint8_t* wc = w.codes.data();
    for_each_quad(w, [&](size_t c, size_t o, int sh) {
        if (sh < 0) {
            codes[c] = wc[o] ^ x, codes[c + 1] = wc[o + 1] ^ x;
            return;
        }
        uint8_t nb[4];
        for (int i = 0; i < 4; ++i) nb[i] = (wc[o + i] >> sh) & 15;
        codes[c] = uint8_t((nb[0] | nb[1] << 4) ^ x);
        codes[c + 1] = uint8_t((nb[2] | nb[3] << 4) ^ x);
    });
}

// 2 × the value of each E2M1 code (sign-magnitude: 0, .5, 1, 1.5, 2, 3, 4, 6).
constexpr int8_t kE2M1x2[16] = {0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12};

// OVP4 (int4 normal type) tables: int4 two's complement normals, abfloat4 outliers (1+M/2)·2^(E+3).
constexpr int8_t kOvpNormal[16] = {0, 1, 2, 3, 4, 5, 6, 7, 0, -7, -6, -5, -4, -3, -2, -1};
constexpr int8_t kOvpOutlier[16] = {0, 12, 16, 24, 32, 48, 64, 96, 0, -12, -16, -24, -32, -48, -64, -96};

inline int qw_at(const IntPacked& w, int64_t n, int64_t k) {
    if (w.bits == 8) return int(int8_t(w.codes[quad_at(w, n / 16, k / 4) + size_t(4 * (n % 16) + k % 4)]));
    const int nib = nib_get(w, n, k);
    if (w.ovp) {  // pairs (k0, k1), (k2, k3)
        const int partner = nib_get(w, n, k ^ 1);
        return nib == 8 ? 0 : partner == 8 ? kOvpOutlier[nib] : kOvpNormal[nib];
    }
    return w.e2m1 ? kE2M1x2[nib] : nib - 8;
}

}  // namespace

IntPacked gemm_w4_repack(const uint8_t* codes, const float* scales, int64_t N, int64_t K, int64_t G) {
    IntPacked w = packed_shell(4, N, K, G);
    const int64_t KQ = K / 4, NG = K / G;
    w.codes.assign(size_t(w.tiles * KQ * 32), 0x88);  // padding rows: q = 0
    pack_nibbles(w, codes, 0x88);
    for (int64_t n = 0; n < N; ++n) {
        const int64_t t = n / 16, j = n % 16;
        for (int64_t g = 0; g < NG; ++g) w.scales[size_t((t * NG + g) * 16 + j)] = scales[n * NG + g];
    }
    return w;
}

IntPacked gemm_w8_repack(const int8_t* codes, const float* scales, int64_t N, int64_t K, int64_t G) {
    IntPacked w = packed_shell(8, N, K, G);
    const int64_t KQ = K / 4, NG = K / G;
    w.codes.assign(size_t(w.tiles * KQ * 64), 0);
    w.wsum.assign(w.scales.size(), 0);
    for (int64_t n = 0; n < N; ++n) {
        const int64_t t = n / 16, j = n % 16;
        for (int64_t k = 0; k < K; ++k) {
            w.codes[quad_at(w, t, k / 4) + size_t(4 * j + k % 4)] = uint8_t(codes[n * K + k]);
            w.wsum[size_t((t * NG + k / G) * 16 + j)] += codes[n * K + k];
        }
        for (int64_t g = 0; g < NG; ++g) w.scales[size_t((t * NG + g) * 16 + j)] = scales[n * NG + g];
    }
    return w;
}

IntPacked gemm_mx4_repack(const uint8_t* codes, const uint8_t* scale_codes, int64_t N, int64_t K) {
    QUELLM_CHECK(K % 32 == 0, "gemm_mx4_repack: K = ", K, " is not a multiple of the MX block (32)");
    std::vector<float> scales(size_t(N * (K / 32)));
    for (size_t i = 0; i < scales.size(); ++i) {
        QUELLM_CHECK(scale_codes[i] != 0xFF, "gemm_mx4_repack: NaN block (scale code 0xFF) in row ", int64_t(i) / (K / 32));
        scales[i] = std::ldexp(1.0f, int(scale_codes[i]) - 128);  // 2^(code - 127) / 2, exact
    }
    IntPacked w = packed_shell(4, N, K, 32);
    w.e2m1 = true;
    const int64_t KQ = K / 4, NG = K / 32;
    w.codes.assign(size_t(w.tiles * KQ * 32), 0);  // padding rows: code 0 = +0
    w.wsum.assign(w.scales.size(), 0);
    pack_nibbles(w, codes, 0);
    for (int64_t n = 0; n < N; ++n) {
        const int64_t t = n / 16, j = n % 16;
        for (int64_t g = 0; g < NG; ++g) {
            w.scales[size_t((t * NG + g) * 16 + j)] = scales[size_t(n * NG + g)];
            for (int64_t k = g * 32; k < (g + 1) * 32; ++k) w.wsum[size_t((t * NG + g) * 16 + j)] += qw_at(w, n, k);
        }
    }
    return w;
}

IntPacked gemm_ovp4_repack(const uint8_t* codes, const float* scales, int64_t N, int64_t K) {
    QUELLM_CHECK(K % 8 == 0, "gemm_ovp4_repack: K = ", K, " must be a multiple of 8");
    IntPacked w = packed_shell(4, N, K, K);
    w.ovp = true;
    const int64_t KQ = K / 4;
    w.codes.assign(size_t(w.tiles * KQ * 32), 0);  // padding rows: 0
    w.wsum.assign(w.scales.size(), 0);
    pack_nibbles(w, codes, 0);
    for (int64_t n = 0; n < N; ++n) {
        QUELLM_CHECK(std::isfinite(scales[n]), "gemm_ovp4_repack: non-finite scale in row ", n);
        const int64_t t = n / 16, j = n % 16;
        w.scales[size_t(t * 16 + j)] = scales[n];
        for (int64_t k = 0; k < K; ++k) w.wsum[size_t(t * 16 + j)] += qw_at(w, n, k);
    }
    return w;
}

namespace {
// max |x| of one MX block of 32 activations (row m, first column col0); a NaN/Inf throws, naming it.
float mx_block_absmax(const float* xb, const char* what, int64_t m, int64_t col0) {
    float amax = 0.0f;
    for (int i = 0; i < 32; ++i) {
        QUELLM_CHECK(std::isfinite(xb[i]), what, ": non-finite activation ", xb[i], " in row ", m, ", column ", col0 + i);
        amax = std::max(amax, std::fabs(xb[i]));
    }
    return amax;
}
}  // namespace

void quantize_rows_mxfp4(const float* x, int64_t M, int64_t K, int8_t* q, float* sa) {
    QUELLM_CHECK(K % 32 == 0, "quantize_rows_mxfp4: K = ", K, " is not a multiple of the MX block (32)");
    for (int64_t m = 0; m < M; ++m)
        for (int64_t b = 0; b < K / 32; ++b) {
            const float* xb = x + m * K + b * 32;
            const float amax = mx_block_absmax(xb, "quantize_rows_mxfp4", m, b * 32);
            // The MX encoder's element arithmetic (formats_elem.h): shared exponent, E2M1 codes (RNE).
            // (gemm_hd.h, shared with the CUDA quantizer).
            const int shared = gemm_mx4_shared(amax);
            sa[m * (K / 32) + b] = gemm_mx4_scale(shared);
            for (int i = 0; i < 32; ++i) q[m * K + b * 32 + i] = gemm_mx4_elem(xb[i], shared);
        }
}

void quantize_rows_mxfp8(const float* x, int64_t M, int64_t K, int32_t* q, float* sa) {
    QUELLM_CHECK(K % 32 == 0, "quantize_rows_mxfp8: K = ", K, " is not a multiple of the MX block (32)");
    for (int64_t m = 0; m < M; ++m)
        for (int64_t b = 0; b < K / 32; ++b) {
            const float* xb = x + m * K + b * 32;
            const float amax = mx_block_absmax(xb, "quantize_rows_mxfp8", m, b * 32);
            const int shared = mx_shared(f32_to_bits(amax), 8);  // emax(E4M3) = 8
            sa[m * (K / 32) + b] = std::ldexp(1.0f, shared - 9);
            for (int i = 0; i < 32; ++i) {
                const uint32_t c = elem_encode(f32_to_bits(xb[i]), spec_e4m3(), shared, false);
                q[m * K + b * 32 + i] = int32_t(elem_value(c, spec_e4m3()) * 512.0f);  // exact
            }
        }
}

void quantize_rows_ovp4(const float* x, int64_t M, int64_t K, int8_t* q, float* sa) {
    QUELLM_CHECK(K >= 2 && K % 2 == 0, "quantize_rows_ovp4: K = ", K, " must be even (pairs)");
    const OvpTables& t = ovp_tables(QUELLM_TYPE_OVP4);
    std::atomic<int64_t> bad{-1};
    const int nt = M * K >= (int64_t(1) << 14) ? int(std::min<int64_t>(num_threads(), M)) : 1;
    parallel_for(M, nt, [&](int64_t m) {
        const float* r = x + m * K;
        bool finite = true;
        for (int64_t k = 0; k < K; ++k) finite &= std::isfinite(r[k]);
        if (!finite) {
            int64_t none = -1;
            bad.compare_exchange_strong(none, m);
            return;
        }
        const float s = ovp_search_scale(QUELLM_TYPE_OVP4, r, K, kOvpActSearchK, 8, false, nullptr);
        sa[m] = s;
        for (int64_t j = 0; j < K / 2; ++j) {
            uint32_t c0, c1;
            float v0, v1;
            ovp_encode_pair(t, r[2 * j], r[2 * j + 1], s, false, &c0, &c1);
            ovp_decode_pair(t, c0, c1, 1.0f, &v0, &v1);  // integer values in units of s
            q[m * K + 2 * j] = int8_t(v0);
            q[m * K + 2 * j + 1] = int8_t(v1);
        }
    });
    if (bad >= 0) {
        const float* r = x + bad * K;
        int64_t k = 0;
        while (std::isfinite(r[k])) ++k;
        QUELLM_CHECK(false, "quantize_rows_ovp4: non-finite activation ", r[k], " in row ", int64_t(bad), ", column ", k);
    }
}

void gemm_mx8_ref(const GemmMx8Params& p) {
    QUELLM_CHECK(p.w != nullptr && p.M >= 0, "gemm_mx8: bad parameters");
    const IntPacked& w = *p.w;
    QUELLM_CHECK(w.G == 32 && !w.ovp, "gemm_mx8: weights must be int4/int8/E2M1 in groups of 32");
    const int64_t NB = w.K / 32;
    for (int64_t m = 0; m < p.M; ++m)
        for (int64_t n = 0; n < w.N; ++n) {
            float y = 0.0f;
            for (int64_t b = 0; b < NB; ++b) {
                int32_t acc = 0;
                for (int64_t k = b * 32; k < (b + 1) * 32; ++k) acc += p.qa[m * w.K + k] * qw_at(w, n, k);
                const float s = p.sa[m * NB + b] * w.scales[size_t(((n / 16) * NB + b) * 16 + n % 16)];
                y = std::fmaf(float(acc), s, y);
            }
            p.y[m * w.N + n] = p.bias ? y + p.bias[n] : y;
        }
}

void gemm_mx8(const GemmMx8Params& p) {
    QUELLM_CHECK(p.w != nullptr && p.M >= 0, "gemm_mx8: bad parameters");
    QUELLM_CHECK(p.w->G == 32 && !p.w->ovp, "gemm_mx8: weights must be int4/int8/E2M1 in groups of 32");
    if (p.M == 0) return;
#if defined(QUELLM_X86_PATHS)
    using Tile = void (*)(const GemmMx8Params&, int64_t, int64_t, int);
    Tile tile = nullptr;
    int MR = 4;
    if (active_isa() == Isa::AVX512) {
        tile = x86::gemm_mx8_tile_avx512;
        MR = 8;
    } else if (active_isa() >= Isa::AVX2) {
        tile = x86::gemm_mx8_tile_avx2;
    }
    if (tile) {
        const IntPacked& w = *p.w;
        const int nt = int(std::min<int64_t>(num_threads(), w.tiles));
        parallel_for(w.tiles, nt, [&](int64_t t) {
            for (int64_t m0 = 0; m0 < p.M; m0 += MR) tile(p, t, m0, int(std::min<int64_t>(MR, p.M - m0)));
        });
        return;
    }
#endif
    gemm_mx8_ref(p);
}

void gemm_int_unpack(const IntPacked& w, uint8_t* codes, float* scales) {
    const int64_t NG = w.K / w.G;
    if (w.bits == 4) unpack_nibbles(w, codes, w.e2m1 || w.ovp ? 0 : 0x88);
    for (int64_t n = 0; n < w.N; ++n) {
        const int64_t t = n / 16, j = n % 16;
        if (w.bits == 8)
            for (int64_t k = 0; k < w.K; ++k) codes[n * w.K + k] = uint8_t(qw_at(w, n, k));
        for (int64_t g = 0; g < NG; ++g) scales[n * NG + g] = w.scales[size_t((t * NG + g) * 16 + j)];
    }
}

uint8_t* thread_scratch(ScratchSlot slot) {
    thread_local std::vector<uint8_t, CacheAligned<uint8_t>> blocks[3];
    auto& b = blocks[int(slot)];
    if (b.empty()) b.resize(kCallScratchBytes);
    return b.data();
}

void quantize_rows(const float* x, int64_t M, int64_t K, int qmax, float clip, int8_t* q, float* sa) {
    QUELLM_CHECK(qmax >= 1 && qmax <= 127, "quantize_rows: qmax must lie in [1, 127]");
    QUELLM_CHECK(clip > 0.0f && clip <= 1.0f, "quantize_rows: clip ratio must lie in (0, 1]");
    std::atomic<int64_t> bad{-1};
    const int nt = M * K >= (int64_t(1) << 15) ? int(std::min<int64_t>(num_threads(), M)) : 1;
    using Row = bool (*)(const float*, int64_t, int, float, int8_t*, float*);
    Row row = nullptr;
#if defined(QUELLM_X86_PATHS)
    if (active_isa() == Isa::AVX512) row = x86::quantize_row_avx512;
    else if (active_isa() == Isa::AVX2) row = x86::quantize_row_avx2;
#endif
    parallel_for(M, nt, [&](int64_t m) {
        const float* r = x + m * K;
        if (row) {
            if (!row(r, K, qmax, clip, q + m * K, sa + m)) {
                int64_t expected = -1;
                bad.compare_exchange_strong(expected, m);
            }
            return;
        }
        float amax = 0.0f;
        bool finite = true;
        for (int64_t k = 0; k < K; ++k) {
            finite &= std::isfinite(r[k]);
            amax = std::max(amax, std::fabs(r[k]));
        }
        if (!finite) {
            int64_t expected = -1;
            bad.compare_exchange_strong(expected, m);
            return;
        }
        const float s = gemm_act_scale(amax, clip, qmax);  // gemm_hd.h, shared with the CUDA quantizer
        sa[m] = s;
        for (int64_t k = 0; k < K; ++k) q[m * K + k] = gemm_act_quant(r[k], s, qmax);
    });
    if (bad.load() >= 0) {  // name the first bad row, whichever thread saw one first
        int64_t m = 0, k = 0;
        while (std::isfinite(x[m * K + k]))
            if (++k == K) k = 0, ++m;
        QUELLM_CHECK(false, "quantize_rows: non-finite activation ", x[m * K + k], " in row ", m, ", column ", k);
    }
}

void gemm_int_ref(const GemmIntParams& p) {
    QUELLM_CHECK(p.w != nullptr && p.M >= 0, "gemm_int: bad parameters");
    const IntPacked& w = *p.w;
    const int64_t NG = w.K / w.G;
    QUELLM_CHECK(p.sa_groups == 1 || p.sa_groups == NG, "gemm_int: activation scales per row or per weight group");
    for (int64_t m = 0; m < p.M; ++m)
        for (int64_t n = 0; n < w.N; ++n) {
            float y = 0.0f;
            for (int64_t g = 0; g < NG; ++g) {
                int32_t acc = 0;
                for (int64_t k = g * w.G; k < (g + 1) * w.G; ++k) acc += int32_t(p.qa[m * w.K + k]) * qw_at(w, n, k);
                const float s = p.act_scale(m, g) * w.scales[size_t(((n / 16) * NG + g) * 16 + n % 16)];
                y = std::fmaf(float(acc), s, y);
            }
            p.y[m * w.N + n] = p.bias ? y + p.bias[n] : y;
        }
}

void gemm_int(const GemmIntParams& p) {
    QUELLM_CHECK(p.w != nullptr && p.M >= 0, "gemm_int: bad parameters");
    const IntPacked& w = *p.w;
    QUELLM_CHECK(p.sa_groups == 1 || p.sa_groups == w.K / w.G, "gemm_int: activation scales per row or per weight group");
    if (p.M == 0) return;
#if defined(QUELLM_X86_PATHS)
    using Tile = void (*)(const GemmIntParams&, int64_t, int64_t, int, const int32_t*);
    Tile tile = nullptr;
    int MR = 4;  // activation rows per tile call
    if (active_isa() == Isa::AVX512 && cpu_features().avx512vnni) {
        tile = x86::gemm_int_tile_avx512;
        MR = 8;  // 8 accumulators + 8 partial sums of 32 zmm: each widened weight vector feeds 8 vpdpbusd
    } else if (active_isa() >= Isa::AVX2) {
        tile = x86::gemm_int_tile_avx2;
    }
    if (tile) {
        // int4: Σ qa per (row, group) removes the +8 offset of the unsigned weight nibbles.
        const int64_t NG = w.K / w.G;
        const CallBuffer<int32_t> asum_buf(ScratchSlot::ActSums, size_t(p.M * NG));
        int32_t* asum = asum_buf.data();
        for (int64_t m = 0; m < p.M; ++m)
            for (int64_t g = 0; g < NG; ++g) {
                int32_t s = 0;
                for (int64_t k = g * w.G; k < (g + 1) * w.G; ++k) s += p.qa[m * w.K + k];
                asum[m * NG + g] = s;
            }
        const int nt = int(std::min<int64_t>(num_threads(), w.tiles));
        parallel_for(w.tiles, nt, [&](int64_t t) {
            for (int64_t m0 = 0; m0 < p.M; m0 += MR) tile(p, t, m0, int(std::min<int64_t>(MR, p.M - m0)), asum);
        });
        return;
    }
#endif
    gemm_int_ref(p);
}

// ---- weight-only ---------------------------------------------------------------------------

namespace {
inline float wf_code(const WfWeights& w, int64_t n, int64_t k) {
    if (w.bits == 8) return float(int8_t(w.codes[size_t(n * w.K + k)]));
    const uint8_t* row = w.codes.data() + n * (w.K / 2);
    if (w.split32) {
        const uint8_t byte = row[(k / 32) * 16 + k % 16];
        return float(k % 32 < 16 ? byte & 15 : byte >> 4);
    }
    const uint8_t byte = row[k / 2];
    return float(k % 2 ? byte >> 4 : byte & 15);
}
inline float wf_zero(const WfWeights& w, int64_t i) { return w.zeros.empty() ? 0.0f : float(w.zeros[size_t(i)]); }
}  // namespace

void wf_split32(uint8_t* row, int64_t K, bool to_split) {
    QUELLM_CHECK(K % 32 == 0, "wf_split32: K = ", K, " is not a multiple of 32");
    uint8_t e[32];
    for (int64_t c = 0; c < K / 32; ++c) {
        uint8_t* b = row + c * 16;
        for (int j = 0; j < 16; ++j) {
            const int lo = b[j] & 15, hi = b[j] >> 4;
            if (to_split) {  // canonical byte j holds elements 2j, 2j+1
                e[2 * j] = uint8_t(lo);
                e[2 * j + 1] = uint8_t(hi);
            } else {         // split byte j holds elements j, j+16
                e[j] = uint8_t(lo);
                e[j + 16] = uint8_t(hi);
            }
        }
        for (int j = 0; j < 16; ++j)
            b[j] = to_split ? uint8_t(e[j] | (e[j + 16] << 4)) : uint8_t(e[2 * j] | (e[2 * j + 1] << 4));
    }
}

void wf_dequant_rows(const WfWeights& w, int64_t n0, int64_t n1, float* out) {
    const int64_t NG = w.K / w.G;
    for (int64_t n = n0; n < n1; ++n)
        for (int64_t g = 0; g < NG; ++g) {
            const float s = w.scales[size_t(n * NG + g)], z = wf_zero(w, n * NG + g);
            for (int64_t k = g * w.G; k < (g + 1) * w.G; ++k) out[(n - n0) * w.K + k] = (wf_code(w, n, k) - z) * s;
        }
}

void gemm_wf_ref(const GemmWfParams& p) {
    QUELLM_CHECK(p.w != nullptr && p.M >= 0, "gemm_wf: bad parameters");
    const WfWeights& w = *p.w;
    const int64_t NG = w.K / w.G;
    for (int64_t m = 0; m < p.M; ++m)
        for (int64_t n = 0; n < w.N; ++n) {
            float y = 0.0f;
            for (int64_t g = 0; g < NG; ++g) {
                const float s = w.scales[size_t(n * NG + g)], z = wf_zero(w, n * NG + g);
                for (int64_t k = g * w.G; k < (g + 1) * w.G; ++k) y += p.x[m * w.K + k] * ((wf_code(w, n, k) - z) * s);
            }
            p.y[m * w.N + n] = p.bias ? y + p.bias[n] : y;
        }
}

void gemm_wf(const GemmWfParams& p) {
    QUELLM_CHECK(p.w != nullptr && p.M >= 0, "gemm_wf: bad parameters");
    const WfWeights& w = *p.w;
    if (p.M == 0) return;
    const bool layout_ok = w.G % 32 == 0 && (w.bits == 8 || w.split32);
#if defined(QUELLM_X86_PATHS)
    if (p.M > kWfGemvRows && layout_ok && active_isa() >= Isa::AVX2) {
        // Compute-bound: the packed f32 GEMM, each thread dequantizing its own W strips into
        // packed form once per K block.
        const auto packed = active_isa() == Isa::AVX512 ? x86::gemm_wf_packed_avx512 : x86::gemm_wf_packed_avx2;
        parallel_column_strips(w.N, [&](int64_t n0, int64_t n1) { packed(p, n0, n1); });
        return;
    }
#endif
    if (p.M > kWfGemvRows) {
        // Compute-bound: dequantize panels of W once and reuse them for every row of x.
        constexpr int64_t NB = 256;
        std::vector<float> panel(size_t(std::min(NB, w.N) * w.K));
        for (int64_t n0 = 0; n0 < w.N; n0 += NB) {
            const int64_t n1 = std::min(w.N, n0 + NB);
            parallel_for(n1 - n0, num_threads(),
                         [&](int64_t i) { wf_dequant_rows(w, n0 + i, n0 + i + 1, panel.data() + i * w.K); });
            matmul_f32(MatmulParams{p.x, panel.data(), p.bias ? p.bias + n0 : nullptr, p.y + n0, p.M, n1 - n0, w.K,
                                    w.K, w.N});
        }
        return;
    }
#if defined(QUELLM_X86_PATHS)
    using Rows = void (*)(const GemmWfParams&, int64_t, int64_t, int64_t, int);
    Rows rows = nullptr;
    if (active_isa() == Isa::AVX512 && layout_ok)
        rows = x86::gemm_wf_rows_avx512;
    else if (active_isa() >= Isa::AVX2 && layout_ok)
        rows = x86::gemm_wf_rows_avx2;
    if (rows) {
        // Memory-bound: each thread streams its own contiguous block of W rows once per 4 x rows.
        const int nt = w.N * w.K < (int64_t(1) << 16) ? 1 : int(std::min<int64_t>(num_threads(), ceil_div(w.N, 2)));
        parallel_region(nt, [&](int tid, int nth) {
            const int64_t n0 = w.N * tid / nth, n1 = w.N * (tid + 1) / nth;
            for (int64_t m0 = 0; m0 < p.M; m0 += 4) rows(p, n0, n1, m0, int(std::min<int64_t>(4, p.M - m0)));
        });
        return;
    }
#endif
    gemm_wf_ref(p);
}

}  // namespace quellm
