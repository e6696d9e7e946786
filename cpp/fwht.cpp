// fwht.cpp — Walsh–Hadamard transform: scalar reference and the OpenMP/ISA dispatcher.
// See fwht.h for the exact definition. SIMD row kernels live in arch/x86/fwht_*.cpp.
#include "fwht.h"

#include <algorithm>
#include <vector>

#include "common.h"
#include "cpu_features.h"
#include "parallel.h"

namespace quellm {

void fwht_check(const FwhtParams& p) {
    QUELLM_CHECK(p.rows >= 0, "fwht: rows must be >= 0, got ", p.rows);
    QUELLM_CHECK(p.p >= 1 && (p.p & (p.p - 1)) == 0, "fwht: p must be a power of two, got ", p.p);
    QUELLM_CHECK(p.m >= 1, "fwht: m must be >= 1, got ", p.m);
    QUELLM_CHECK(p.n == int64_t(p.m) * p.p, "fwht: n (", p.n, ") != m (", p.m, ") * p (", p.p, ")");
    QUELLM_CHECK(p.m == 1 || p.hm != nullptr, "fwht: a factor matrix H_m is required for m = ", p.m);
    QUELLM_CHECK(p.rows == 0 || (p.x != nullptr && p.out != nullptr), "fwht: null data pointer");
}

// ---- reference ------------------------------------------------------------------------------

namespace {

// One row: y = scale · (H_m ⊗ H_p) · x, written for clarity. `mix` is scratch of m floats.
void fwht_row_ref(const float* x, float* y, int64_t p, int m, const int8_t* hm, float scale, float* mix) {
    const int64_t n = int64_t(m) * p;
    if (y != x)
        for (int64_t i = 0; i < n; ++i) y[i] = x[i];
    // H_m across the m sub-rows, one lane b at a time.
    if (m > 1) {
        for (int64_t b = 0; b < p; ++b) {
            for (int a = 0; a < m; ++a) mix[a] = fwht_mix_dot(hm + a * m, y + b, p, m);
            for (int a = 0; a < m; ++a) y[a * p + b] = mix[a];
        }
    }
    // Sylvester H_p on each sub-row: butterflies with stride h = 1, 2, 4, ...
    for (int a = 0; a < m; ++a) {
        float* r = y + a * p;
        for (int64_t h = 1; h < p; h *= 2)
            for (int64_t i = 0; i < p; i += 2 * h)
                for (int64_t j = i; j < i + h; ++j) fwht_bfly(r[j], r[j + h]);
    }
    for (int64_t i = 0; i < n; ++i) y[i] *= scale;
}

}  // namespace

void fwht_ref(const FwhtParams& p) {
    fwht_check(p);
    std::vector<float> mix(size_t(p.m));
    for (int64_t r = 0; r < p.rows; ++r)
        fwht_row_ref(p.x + r * p.n, p.out + r * p.n, p.p, p.m, p.hm, p.scale, mix.data());
}

// ---- dispatch -------------------------------------------------------------------------------

void fwht(const FwhtParams& p) {
    fwht_check(p);
    if (p.rows == 0) return;
    Isa isa = active_isa();
    if (p.p < 16) isa = Isa::SCALAR;  // sub-rows shorter than a vector: the scalar loop is fine
    std::vector<float> hT;  // see FwhtMix
    std::vector<int32_t> offs;
    if (p.m > 1 && p.m < kFwhtGroupedMinM) {
        hT.resize(size_t(p.m) * p.m);
        for (int a = 0; a < p.m; ++a)
            for (int c = 0; c < p.m; ++c) hT[size_t(c) * p.m + a] = float(p.hm[a * p.m + c]);
    } else if (p.m > 1) {
        const int ng = fwht_groups(p.m), lanes = isa == Isa::AVX512 ? 16 : 8;
        offs.resize(size_t(p.m) * ng);
        for (int k = 0; k < ng; ++k) {
            const int c0 = k * kFwhtGroup;
            for (int a = 0; a < p.m; ++a)
                offs[size_t(k) * p.m + a] = 2 * lanes * fwht_group_code(p.hm + a * p.m, c0, std::min(kFwhtGroup, p.m - c0));
        }
    }
    const FwhtMix mx{hT.data(), offs.data()};
    // With m > 1 and short sub-rows, rows are transformed in groups so the mixing sees 4 lane
    // vectors at once (one vector of 16 lanes per row when p = 16).
    const int64_t group = (p.m > 1 && p.p < 64) ? std::max<int64_t>(1, 64 / p.p) : 1;
    const int64_t n_groups = ceil_div(p.rows, group);
    const int nt = int(std::min<int64_t>(num_threads(), n_groups));
    parallel_region(nt, [&](int, int) {
        std::vector<float> tmp(size_t(fwht_scratch_floats(p.m)));  // also the scalar path's m floats
#pragma omp for schedule(static)  // orphaned: the region's share, or every group on one thread
        for (int64_t gi = 0; gi < n_groups; ++gi) {
            const int64_t r0 = gi * group, nr = std::min(group, p.rows - r0);
            const float* src = p.x + r0 * p.n;
            float* dst = p.out + r0 * p.n;
            // the group after this one (this thread's next, but for the last of its share)
            FwhtPrefetch next;
            if (p.m > 1 && r0 + nr < p.rows)
                next = {src + nr * p.n, dst + nr * p.n, std::min(group, p.rows - r0 - nr) * p.n * int64_t(sizeof(float))};
            switch (isa) {
#if defined(QUELLM_X86_PATHS)
                case Isa::AVX512:
                    x86::fwht_rows_avx512(src, dst, nr, p.p, p.m, mx, p.scale, tmp.data(), next);
                    break;
                case Isa::AVX2:
                    x86::fwht_rows_avx2(src, dst, nr, p.p, p.m, mx, p.scale, tmp.data(), next);
                    break;
#endif
                default:
                    for (int64_t r = 0; r < nr; ++r)
                        fwht_row_ref(src + r * p.n, dst + r * p.n, p.p, p.m, p.hm, p.scale, tmp.data());
            }
        }
    });
}

}  // namespace quellm
