// matmul.h — f32 linear layer: y = x · Wᵀ (+ b), the float GEMM/GEMV of the runtime.
//
// Shapes: x (M, K) row stride ldx, W (N, K) row-major (HF [out, in] layout), b (N) or null,
// y (M, N) row stride ldy. Both operands are contiguous along K, so every output is a dot
// product. Below kMatmulPackedMinM rows the kernels compute register tiles of MR × NR dot
// products and reduce them at the end of K (W streams once, the GEMV case); from it on, K
// blocks of x and W are packed k-major and multiplied as outer products (arch/x86/
// matmul_simd.h), the compute-bound GEMM case. Versions: matmul_f32_ref (scalar, the
// definition), matmul_f32 (dispatch by active_isa(), OpenMP over ranges of N).
#pragma once

#include <cstdint>
#include <functional>

namespace quellm {

struct MatmulParams {
    const float* x;   // (M, K), row stride ldx
    const float* w;   // (N, K), row stride K
    const float* b;   // (N) or nullptr
    float* y;         // (M, N), row stride ldy
    int64_t M, N, K, ldx, ldy;
};

void matmul_f32_ref(const MatmulParams& p);
void matmul_f32(const MatmulParams& p);

// One register tile: the dot products over k in [k0, k1) for rows i0..i0+mr-1 of x and rows
// j0..j0+nr-1 of W (mr <= 6, nr <= 4). The first K block writes y = acc (+ b); later blocks add.
struct MatmulTile {
    int64_t i0, j0, k0, k1;
    int mr, nr;
    bool first;
};

constexpr int64_t kMatmulPackedMinM = 16;

// Runs f(n0, n1) on up to num_threads() threads, each on its own contiguous range of N's
// 32-column strips (so every W row is packed by one thread).
void parallel_column_strips(int64_t N, const std::function<void(int64_t n0, int64_t n1)>& f);

namespace x86 {
void matmul_tile_avx512(const MatmulParams& p, const MatmulTile& t);
void matmul_tile_avx2(const MatmulParams& p, const MatmulTile& t);
// y[:, n0 : n1) of the whole product with the packed kernel, on the calling thread.
void matmul_packed_avx512(const MatmulParams& p, int64_t n0, int64_t n1);
void matmul_packed_avx2(const MatmulParams& p, int64_t n0, int64_t n1);
}  // namespace x86

}  // namespace quellm
