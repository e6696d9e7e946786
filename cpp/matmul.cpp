// matmul.cpp — f32 y = x · Wᵀ (+ b): scalar reference and the blocked OpenMP dispatcher.
// Register-tile kernels live in arch/x86/matmul_*.cpp (see matmul.h for shapes).
#include "matmul.h"


#include <algorithm>

#include "common.h"
#include "cpu_features.h"
#include "parallel.h"

namespace quellm {

namespace {
void check(const MatmulParams& p) {
    QUELLM_CHECK(p.M >= 0 && p.N >= 0 && p.K >= 0, "matmul: negative size");
    QUELLM_CHECK(p.ldx >= p.K && p.ldy >= p.N, "matmul: row strides smaller than the rows");
}

void tile_ref(const MatmulParams& p, const MatmulTile& t) {
    for (int i = 0; i < t.mr; ++i)
        for (int j = 0; j < t.nr; ++j) {
            const float* xr = p.x + (t.i0 + i) * p.ldx;
            const float* wr = p.w + (t.j0 + j) * p.K;
            float acc = 0.0f;
            for (int64_t k = t.k0; k < t.k1; ++k) acc += xr[k] * wr[k];
            float& out = p.y[(t.i0 + i) * p.ldy + t.j0 + j];
            out = t.first ? acc + (p.b ? p.b[t.j0 + j] : 0.0f) : out + acc;
        }
}
}  // namespace

void parallel_column_strips(int64_t N, const std::function<void(int64_t, int64_t)>& f) {
    constexpr int64_t S = 32;
    const int64_t strips = ceil_div(N, S);
    const int nt = int(std::min<int64_t>(num_threads(), strips));
    parallel_region(nt, [&](int tid, int nth) {
        const int64_t n0 = std::min(N, strips * tid / nth * S), n1 = std::min(N, strips * (tid + 1) / nth * S);
        if (n0 < n1) f(n0, n1);
    });
}

void matmul_f32_ref(const MatmulParams& p) {
    check(p);
    for (int64_t i = 0; i < p.M; ++i)
        for (int64_t j = 0; j < p.N; ++j) tile_ref(p, MatmulTile{i, j, 0, p.K, 1, 1, true});
}

void matmul_f32(const MatmulParams& p) {
    check(p);
    if (p.M == 0 || p.N == 0) return;
    using Tile = void (*)(const MatmulParams&, const MatmulTile&);
    Tile tile = tile_ref;
#if defined(QUELLM_X86_PATHS)
    using Packed = void (*)(const MatmulParams&, int64_t, int64_t);
    Packed packed = nullptr;
    switch (active_isa()) {
        case Isa::AVX512: tile = x86::matmul_tile_avx512, packed = x86::matmul_packed_avx512; break;
        case Isa::AVX2: tile = x86::matmul_tile_avx2, packed = x86::matmul_packed_avx2; break;
        default: break;
    }
    if (packed && p.M >= kMatmulPackedMinM) {
        parallel_column_strips(p.N, [&](int64_t n0, int64_t n1) { packed(p, n0, n1); });
        return;
    }
#endif
    constexpr int MR = 6, NR = 4;
    constexpr int64_t MB = 96;   // rows of x per block: MB x KC floats stay in L2
    // K per block: a W tile (NR x KC) stays in L1. Short K is not split (a tiny last block
    // would cost a full reduction epilogue).
    const int64_t KC = p.K <= 1024 ? std::max<int64_t>(p.K, 1) : 512;
    const int64_t n_tiles = ceil_div(p.N, NR);
    // Small products (x_proj, dt_proj at decode) are not worth a parallel region.
    const int nt = p.M * p.N * p.K < (int64_t(1) << 17) ? 1 : int(std::min<int64_t>(num_threads(), n_tiles));
    // Each thread owns a contiguous range of W tiles (every W row is read by one thread) and
    // sweeps it once per (K block, x row block), so x blocks are reused from cache.
    parallel_region(nt, [&](int tid, int nth) {
        const int64_t tb = n_tiles * tid / nth, te = n_tiles * (tid + 1) / nth;
        for (int64_t k0 = 0; k0 < std::max<int64_t>(p.K, 1); k0 += KC) {
            const int64_t k1 = std::min(p.K, k0 + KC);
            for (int64_t ib = 0; ib < p.M; ib += MB)
                for (int64_t t = tb; t < te; ++t) {
                    const int64_t j0 = t * NR;
                    const int nr = int(std::min<int64_t>(NR, p.N - j0));
                    for (int64_t i0 = ib; i0 < std::min(p.M, ib + MB); i0 += MR)
                        tile(p, MatmulTile{i0, j0, k0, k1, int(std::min<int64_t>(MR, p.M - i0)), nr, k0 == 0});
                }
        }
    });
}

}  // namespace quellm
