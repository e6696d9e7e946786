// gemm.cpp — W4A8 GEMM/GEMV: repacking, activation quantization, scalar reference, dispatch.
// See gemm.h for the math and layouts.
#include "gemm.h"

#include <omp.h>

#include <algorithm>
#include <cmath>

#include "common.h"
#include "cpu_features.h"

namespace quellm {

W4Packed gemm_w4_repack(const uint8_t* codes, const float* scales, int64_t N, int64_t K, int64_t G) {
    QUELLM_CHECK(N >= 1 && K >= 1, "gemm_w4_repack: empty weight");
    QUELLM_CHECK(K % 8 == 0, "gemm_w4_repack: K = ", K, " must be a multiple of 8");
    QUELLM_CHECK(G >= 4 && G % 4 == 0 && K % G == 0, "gemm_w4_repack: group size ", G, " must divide K = ", K,
                 " and be a multiple of 4");
    W4Packed w;
    w.N = N;
    w.K = K;
    w.G = G;
    w.tiles = ceil_div(N, 16);
    const int64_t KQ = K / 4, NG = K / G;
    w.codes.assign(size_t(w.tiles * KQ * 32), 0x88);  // padding rows: q = 0
    w.scales.assign(size_t(w.tiles * NG * 16), 0.0f);
    for (int64_t n = 0; n < N; ++n) {
        const int64_t t = n / 16, j = n % 16;
        for (int64_t kq = 0; kq < KQ; ++kq)
            for (int b = 0; b < 2; ++b)
                w.codes[size_t(((t * KQ + kq) * 16 + j) * 2 + b)] = codes[n * (K / 2) + kq * 2 + b] ^ 0x88;
        for (int64_t g = 0; g < NG; ++g) w.scales[size_t((t * NG + g) * 16 + j)] = scales[n * NG + g];
    }
    return w;
}

void gemm_w4_unpack(const W4Packed& w, uint8_t* codes, float* scales) {
    const int64_t KQ = w.K / 4, NG = w.K / w.G;
    for (int64_t n = 0; n < w.N; ++n) {
        const int64_t t = n / 16, j = n % 16;
        for (int64_t kq = 0; kq < KQ; ++kq)
            for (int b = 0; b < 2; ++b)
                codes[n * (w.K / 2) + kq * 2 + b] = w.codes[size_t(((t * KQ + kq) * 16 + j) * 2 + b)] ^ 0x88;
        for (int64_t g = 0; g < NG; ++g) scales[n * NG + g] = w.scales[size_t((t * NG + g) * 16 + j)];
    }
}

void quantize_rows_int8(const float* x, int64_t M, int64_t K, int8_t* q, float* sa) {
    for (int64_t m = 0; m < M; ++m) {
        const float* r = x + m * K;
        float amax = 0.0f;
        for (int64_t k = 0; k < K; ++k) {
            QUELLM_CHECK(std::isfinite(r[k]), "quantize_rows_int8: non-finite activation in row ", m, ", column ", k);
            amax = std::max(amax, std::fabs(r[k]));
        }
        const float s = amax > 0.0f ? amax / 127.0f : 1.0f;
        sa[m] = s;
        for (int64_t k = 0; k < K; ++k) {
            const float v = std::nearbyint(r[k] / s);  // RNE in the default rounding mode
            q[m * K + k] = int8_t(std::min(127.0f, std::max(-127.0f, v)));
        }
    }
}

namespace {
inline int qw_at(const W4Packed& w, int64_t n, int64_t k) {
    const int64_t t = n / 16, j = n % 16, kq = k / 4, r = k % 4;
    const uint8_t byte = w.codes[size_t(((t * (w.K / 4) + kq) * 16 + j) * 2 + r / 2)];
    return int((r % 2 ? byte >> 4 : byte & 15)) - 8;
}

void check(const GemmW4A8Params& p) {
    QUELLM_CHECK(p.w != nullptr && p.M >= 0, "gemm_w4a8: bad parameters");
}
}  // namespace

void gemm_w4a8_ref(const GemmW4A8Params& p) {
    check(p);
    const W4Packed& w = *p.w;
    const int64_t NG = w.K / w.G;
    for (int64_t m = 0; m < p.M; ++m)
        for (int64_t n = 0; n < w.N; ++n) {
            float y = 0.0f;
            for (int64_t g = 0; g < NG; ++g) {
                int32_t acc = 0;
                for (int64_t k = g * w.G; k < (g + 1) * w.G; ++k) acc += int32_t(p.qa[m * w.K + k]) * qw_at(w, n, k);
                const float s = p.sa[m] * w.scales[size_t(((n / 16) * NG + g) * 16 + n % 16)];
                y = std::fmaf(float(acc), s, y);
            }
            p.y[m * w.N + n] = p.bias ? y + p.bias[n] : y;
        }
}

void gemm_w4a8(const GemmW4A8Params& p) {
    check(p);
    const W4Packed& w = *p.w;
    if (p.M == 0) return;
#if defined(QUELLM_X86_PATHS)
    using Tile = void (*)(const GemmW4A8Params&, int64_t, int64_t, int, const int32_t*);
    Tile tile = nullptr;
    if (active_isa() == Isa::AVX512 && cpu_features().avx512vnni)
        tile = x86::gemm_w4a8_tile_avx512;
    else if (active_isa() >= Isa::AVX2)
        tile = x86::gemm_w4a8_tile_avx2;
    if (tile) {
        // Σ qa per (row, group): removes the +8 offset of the unsigned weight nibbles.
        const int64_t NG = w.K / w.G;
        std::vector<int32_t> asum(size_t(p.M * NG));
        for (int64_t m = 0; m < p.M; ++m)
            for (int64_t g = 0; g < NG; ++g) {
                int32_t s = 0;
                for (int64_t k = g * w.G; k < (g + 1) * w.G; ++k) s += p.qa[m * w.K + k];
                asum[size_t(m * NG + g)] = s;
            }
        const int nt = int(std::min<int64_t>(num_threads(), w.tiles));
#pragma omp parallel for num_threads(nt) schedule(static)
        for (int64_t t = 0; t < w.tiles; ++t)
            for (int64_t m0 = 0; m0 < p.M; m0 += 4) tile(p, t, m0, int(std::min<int64_t>(4, p.M - m0)), asum.data());
        return;
    }
#endif
    gemm_w4a8_ref(p);
}

}  // namespace quellm
