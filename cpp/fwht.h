// fwht.h — fast Walsh–Hadamard transform for n = m·2^k.
//
// Computes, for every row r of x (rows, n) row-major:
//     out[r, :] = scale · H_n · x[r, :],   H_n = kron(H_m, H_p),  p = 2^k
// where H_p is the Sylvester Hadamard matrix (natural order; H_1 = [1], H_2p = [[H,H],[H,-H]])
// and H_m an m×m ±1 Hadamard matrix supplied by the caller (python/quellm/hadamard.py builds them;
// m = 1 for powers of two). Index convention: i = a·p + b, a indexes H_m, b indexes H_p.
// Algorithm: view the row as (m, p); mix the m sub-rows by H_m (y[a,:] = Σ_c H_m[a,c]·x[c,:],
// vectorised over the p contiguous lanes), then FWHT each sub-row with butterflies, then scale.
// H_m ⊗ I and I ⊗ H_p commute, so the order is free.
//
// Versions: fwht_ref (scalar, the definition), fwht (dispatch: AVX-512 / AVX2 / scalar by
// quellm::active_isa(), OpenMP over rows), CUDA in cuda/fwht.cu. x and out may alias exactly
// (in place); rows are independent.
#pragma once

#include <cstdint>

#include "common.h"

namespace quellm {

// The H_m mixing: for m < kFwhtGroupedMinM every path sums c = 0..m-1 in order (acc += ±x_c,
// register-tiled multiply-adds in the SIMD kernels). From kFwhtGroupedMinM on, the columns are
// summed in groups of four (Hadamard orders above 2 are multiples of 4), which lets the SIMD
// kernels look each group's signed sum up in a table of its 16 sign patterns instead of doing
// m multiply-adds per output (arch/x86/fwht_simd.h). The grouped order, which every path
// follows exactly:
//     for each group c0 = 0, 4, 8, ... (g = min(4, m - c0) columns):
//         t   = x[c0] ± x[c0+1] ± ... ± x[c0+g-1]   left to right, '+' where H[a, c0+i] == H[a, c0]
//         acc = acc + t   if H[a, c0] > 0,   acc - t   otherwise          (acc starts at +0)
constexpr int kFwhtGroup = 4;
constexpr int kFwhtGroupedMinM = 28;  // below (m = 12, 20) the tables cost more than they save
QUELLM_HD QUELLM_INLINE int fwht_groups(int m) { return (m + kFwhtGroup - 1) / kFwhtGroup; }

// Table index of H row `hm_row`'s group at c0 (g columns): bit i-1 set when column c0+i has the
// opposite sign of column c0 (i = 1..g-1), plus 8 when H[a, c0] is negative.
QUELLM_HD QUELLM_INLINE int fwht_group_code(const int8_t* hm_row, int c0, int g) {
    int code = hm_row[c0] < 0 ? 8 : 0;
    for (int i = 1; i < g; ++i)
        if (hm_row[c0 + i] != hm_row[c0]) code |= 1 << (i - 1);
    return code;
}

// One output of the H_m mixing: Σ_c hm_row[c] · col[c · stride] in the order above for m.
// Shared by the CPU reference and the CUDA kernel.
QUELLM_HD QUELLM_INLINE float fwht_mix_dot(const int8_t* hm_row, const float* col, int64_t stride, int m) {
    float acc = 0.0f;
    if (m < kFwhtGroupedMinM) {
        for (int c = 0; c < m; ++c) acc += float(hm_row[c]) * col[c * stride];
        return acc;
    }
    for (int c0 = 0; c0 < m; c0 += kFwhtGroup) {
        const int g = m - c0 < kFwhtGroup ? m - c0 : kFwhtGroup;
        float t = col[c0 * stride];
        for (int i = 1; i < g; ++i) {
            const float v = col[(c0 + i) * stride];
            t = hm_row[c0 + i] == hm_row[c0] ? t + v : t - v;
        }
        acc = hm_row[c0] > 0 ? acc + t : acc - t;
    }
    return acc;
}

// The radix-2 butterfly every path uses: (u, v) -> (u + v, u - v).
QUELLM_HD QUELLM_INLINE void fwht_bfly(float& u, float& v) {
    const float a = u, b = v;
    u = a + b;
    v = a - b;
}

struct FwhtParams {
    const float* x;         // (rows, n) row-major, row stride n
    float* out;             // (rows, n) row-major; may equal x
    int64_t rows;
    int64_t n;              // m · p
    int64_t p;              // 2^k, the Sylvester part
    int m;                  // order of the factor H_m (1 when n is a power of two)
    const int8_t* hm;       // (m, m) entries ±1, row-major; nullptr when m == 1
    float scale;
};

// Throws std::invalid_argument when the parameters are inconsistent.
void fwht_check(const FwhtParams& p);

void fwht_ref(const FwhtParams& p);  // scalar, single thread
void fwht(const FwhtParams& p);      // fastest path for active_isa(), OpenMP over rows

// H_m prepared for the SIMD kernels (of lane width W):
//   m < kFwhtGroupedMinM:  hT[c·m + a] = H[a, c] as floats (register-tiled mixing)
//   otherwise:             offs[k·m + a] = fwht_group_code of row a, group k, times 2·W: where
//                          that row's entry starts in group k's table of 2 lane vectors per
//                          entry (table mixing)
struct FwhtMix {
    const float* hT;
    const int32_t* offs;
};

// The rows the next kernel call will transform: a call prefetches them into L2 while it works
// (`bytes` from src and from dst, which may equal src), spread over its inner loops. The H_m
// mixing reads its rows in strided lane tiles, which the hardware prefetchers follow poorly, so
// without this, out-of-cache batches would stall on every row's first loads.
struct FwhtPrefetch {
    const float* src = nullptr;
    const float* dst = nullptr;
    int64_t bytes = 0;
};

// Kernels of each ISA for nrows consecutive rows: dst = scale · H_n · src per row (src may equal
// dst); tmp is scratch of at least fwht_scratch_floats(m) floats. Require p >= 16.
inline int64_t fwht_scratch_floats(int m) { return int64_t(m) * 64 + 8 * 16 * 32 + 16; }
namespace x86 {
void fwht_rows_avx2(const float* src, float* dst, int64_t nrows, int64_t p, int m, const FwhtMix& mx, float scale,
                    float* tmp, const FwhtPrefetch& next);
void fwht_rows_avx512(const float* src, float* dst, int64_t nrows, int64_t p, int m, const FwhtMix& mx, float scale,
                      float* tmp, const FwhtPrefetch& next);
}  // namespace x86

}  // namespace quellm
