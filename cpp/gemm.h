// gemm.h — low-bit GEMM/GEMV: W4A8 (int4 weights × int8 activations) to start with.
//
//   y[m, n] = Σ_g  acc[m, n, g] · (sa[m] · sw[n, g])  (+ b[n])
//   acc[m, n, g] = Σ_{k in group g} qa[m, k] · qw[n, k]            (exact, int32)
//
// Canonical weight storage (the on-disk format, shared/SPEC.md §3.7): codes (N, K/2) uint8, two's
// complement int4, element 2i of a row in the low nibble of byte i; scales sw (N, K/G) f32 with G
// the group size along K (G = K: per output channel). Activations: per-row symmetric int8
// (qa in [-127, 127], sa = absmax / 127; an all-zero row has sa = 1).
//
// The kernels use a repacked copy (gemm_w4_repack): rows in tiles of 16, and for each group of 4
// k-steps the 16 rows' 4 nibbles side by side, stored offset-binary (q + 8, 0..15) so an unpacked
// byte is the u8 operand of VNNI's vpdpbusd; the +8 is removed with 8·Σ qa per group.
// Versions: gemm_w4a8_ref (scalar, the definition), gemm_w4a8 (AVX-512 VNNI vpdpbusd, or AVX2
// vpmaddubsw + vpmaddwd), OpenMP over 16-row tiles. Integer sums are exact, and the float epilogue
// does the same operations in the same order in every version, so all agree bit for bit.
#pragma once

#include <cstdint>
#include <vector>

namespace quellm {

struct W4Packed {
    int64_t N = 0, K = 0, G = 0;       // K % G == 0, G % 4 == 0
    int64_t tiles = 0;                 // ceil(N / 16)
    std::vector<uint8_t> codes;        // (tiles, K/4, 16, 2): nibbles q+8, k0|k1<<4, k2|k3<<4
    std::vector<float> scales;         // (tiles, K/G, 16)
};

// codes (N, K/2), scales (N, K/G) -> packed. Rows past N in the last tile are zero weights.
W4Packed gemm_w4_repack(const uint8_t* codes, const float* scales, int64_t N, int64_t K, int64_t G);
// packed -> canonical codes (N, K/2) and scales (N, K/G): the inverse, for round-trip tests.
void gemm_w4_unpack(const W4Packed& w, uint8_t* codes, float* scales);

// Per-row symmetric int8 quantization: q (M, K), sa (M). NaN/Inf rows are rejected (throws).
void quantize_rows_int8(const float* x, int64_t M, int64_t K, int8_t* q, float* sa);

struct GemmW4A8Params {
    const int8_t* qa;   // (M, K)
    const float* sa;    // (M)
    const W4Packed* w;
    const float* bias;  // (N) or nullptr
    float* y;           // (M, N)
    int64_t M;
};
void gemm_w4a8_ref(const GemmW4A8Params& p);
void gemm_w4a8(const GemmW4A8Params& p);

namespace x86 {
// Rows [m0, m0+mr) of x (mr <= 4) against 16-row tile t: writes y for the tile's valid rows.
void gemm_w4a8_tile_avx512(const GemmW4A8Params& p, int64_t t, int64_t m0, int mr, const int32_t* asum);
void gemm_w4a8_tile_avx2(const GemmW4A8Params& p, int64_t t, int64_t m0, int mr, const int32_t* asum);
}  // namespace x86

}  // namespace quellm
