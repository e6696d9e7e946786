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

// One output of the H_m mixing: Σ_c hm_row[c] · col[c · stride], summed c = 0..m-1 in order.
// Shared by the CPU reference and the CUDA kernel.
QUELLM_HD QUELLM_INLINE float fwht_mix_dot(const int8_t* hm_row, const float* col, int64_t stride, int m) {
    float acc = 0.0f;
    for (int c = 0; c < m; ++c) acc += float(hm_row[c]) * col[c * stride];
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

// Kernels of each ISA for nrows consecutive rows: dst = scale · H_n · src per row (src may equal
// dst). hT is H_mᵀ as floats (m, m); tmp is scratch of at least m·64 floats. Require p >= 16.
namespace x86 {
void fwht_rows_avx2(const float* src, float* dst, int64_t nrows, int64_t p, int m, const float* hT, float scale,
                    float* tmp);
void fwht_rows_avx512(const float* src, float* dst, int64_t nrows, int64_t p, int m, const float* hT, float scale,
                      float* tmp);
}  // namespace x86

}  // namespace quellm
