// gemm_mma.cu — tensor-core (mma.sync) and GEMV kernels of the device linear layer; see
// gemm_kernels.cuh for the contract and cuda/gemm.cu for the pipeline around them. Fragment
// layouts and loaders are the host+device helpers of cpp/gemm_hd.h (tile-emulated on the CPU).
//
// Kernels (y = x·Wᵀ per output, same math as the SIMT references in gemm.cu):
//   gemm_int_tc    integer activations × int8 / int4 / MXFP4 / OVP4 weights decoded to int8 while
//                  staging 64 × 64 × 32 tiles in shared memory (double-buffered), mma
//                  m16n8k32.s8; per group an exact int32 tile, folded with fma(acc, sa·sw, y) in
//                  group order → bit-identical to the CPU. Needs G % 32 == 0.
//   gemm_int_mma   W4A4 on sm80/sm89: mma m16n8k64.s4 (int4 both sides), operands straight from
//                  global memory. Needs G % 64 == 0.
//   gemm_h_tc      f16 / bf16 activations × float weights (act dtype) or weight-only int4 / int8
//                  as (code − zero) in f16 / bf16 (exact), staged in shared memory like
//                  gemm_int_tc, mma m16n8k16 with f32 accumulation, y += s·acc per group.
//                  Needs G % 32 == 0 (float: K % 32 == 0) and a 16-byte aligned x.
//   gemm_h_mma     the same from global memory for G % 16 == 0 (float: K % 16 == 0).
//   *_gemv         M ≤ 8 (decode): one warp per weight row streams it once in 16-byte units for up
//                  to 4 activation rows; integer group sums reduced across lanes exactly
//                  (__reduce_add_sync) and folded in group order, so also bit-identical.
// Tiles: the *_tc kernels use 64 × 64 block tiles, 2 × 2 warps of 32 × 32; the direct *_mma
// kernels give each of 4 warps 16 rows × 64 columns, operands straight from (L1/L2-cached) global.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>

#include "gemm_kernels.cuh"

namespace quellm::cuda {

namespace {

constexpr int64_t kGemvRows = 8;   // M up to this: GEMV kernels
constexpr int kGemvMR = 4;         // activation rows per GEMV pass
constexpr int kWarps = 4;          // warps per block (mma: 16 rows each; GEMV: one weight row each)
constexpr int kBN = 64, kNT = kBN / 8;

// ---- mma wrappers ------------------------------------------------------------------------------

__device__ __forceinline__ void mma_s8(int32_t c[4], const uint32_t a[4], const uint32_t b[2]) {
    asm volatile(
        "mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
        : "+r"(c[0]), "+r"(c[1]), "+r"(c[2]), "+r"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}

// int4 tensor cores exist on sm80 / sm86 / sm89 only; Hopper (and later) takes the s8 path.
__device__ __forceinline__ void mma_s4(int32_t c[4], const uint32_t a[4], const uint32_t b[2]) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800 && __CUDA_ARCH__ < 900
    asm volatile(
        "mma.sync.aligned.m16n8k64.row.col.s32.s4.s4.s32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
        : "+r"(c[0]), "+r"(c[1]), "+r"(c[2]), "+r"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
#else
    __trap();  // never launched: the host dispatch takes this path only for compute capability 8.x
#endif
}

template <bool BF16>
__device__ __forceinline__ void mma_h(float c[4], const uint32_t a[4], const uint32_t b[2]) {
    if constexpr (BF16)
        asm volatile(
            "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
            : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
            : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
    else
        asm volatile(
            "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
            : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
            : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}

// 8 consecutive elements i..i+7 (i % 8 == 0, 16-byte aligned) of a f32 / f16 / bf16 buffer as f32.
__device__ __forceinline__ void load_x8(const void* x, DType xt, int64_t i, float v[8]) {
    if (xt == DType::F32) {
        const float4 p = *reinterpret_cast<const float4*>(static_cast<const float*>(x) + i);
        const float4 q = *reinterpret_cast<const float4*>(static_cast<const float*>(x) + i + 4);
        v[0] = p.x; v[1] = p.y; v[2] = p.z; v[3] = p.w;
        v[4] = q.x; v[5] = q.y; v[6] = q.z; v[7] = q.w;
        return;
    }
    const uint4 p = *reinterpret_cast<const uint4*>(static_cast<const uint16_t*>(x) + i);
    const uint32_t w[4] = {p.x, p.y, p.z, p.w};
#pragma unroll
    for (int j = 0; j < 8; ++j) {
        const unsigned short h = static_cast<unsigned short>(w[j / 2] >> (16 * (j % 2)));
        v[j] = xt == DType::F16 ? __half2float(__ushort_as_half(h)) : __bfloat162float(__ushort_as_bfloat16(h));
    }
}

__device__ __forceinline__ float warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

// ---- integer activations: tensor cores -----------------------------------------------------------

template <WCode KIND, bool S4MMA>
__global__ void __launch_bounds__(kWarps * 32) gemm_int_mma_kernel(GemmArgs a) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int64_t row0 = (int64_t(blockIdx.y) * kWarps + warp) * 16;
    if (row0 >= a.M) return;  // whole warp
    const int64_t n0 = int64_t(blockIdx.x) * kBN;
    const uint8_t* w = static_cast<const uint8_t*>(a.w);
    constexpr int KS = S4MMA ? 64 : 32;
    const int64_t r_lo = row0 + (lane >> 2), r_hi = r_lo + 8;
    const bool mxa = a.sa_groups > 1;
    float y[kNT][4] = {};
    for (int64_t g = 0; g < a.NG; ++g) {
        int32_t acc[kNT][4] = {};
        for (int64_t k0 = g * a.G; k0 < (g + 1) * a.G; k0 += KS) {
            uint32_t af[4];
            if constexpr (S4MMA)
                frag_a_s4(a.q, a.ldq, row0, a.M, k0, lane, af);
            else
                frag_a_s8(a.q, a.ldq, row0, a.M, k0, lane, af);
#pragma unroll
            for (int t = 0; t < kNT; ++t) {
                uint32_t bf[2];
                if constexpr (S4MMA) {
                    frag_b_s4(w, a.ldw, n0 + t * 8, a.N, k0, lane, bf);
                    mma_s4(acc[t], af, bf);
                } else {
                    frag_b_s8(KIND, w, a.ldw, n0 + t * 8, a.N, k0, lane, bf);
                    mma_s8(acc[t], af, bf);
                }
            }
        }
        const int64_t sg = mxa ? g : 0;
        const float sa_lo = r_lo < a.M ? a.sa[r_lo * a.sa_groups + sg] : 0.0f;
        const float sa_hi = r_hi < a.M ? a.sa[r_hi * a.sa_groups + sg] : 0.0f;
#pragma unroll
        for (int t = 0; t < kNT; ++t)
#pragma unroll
            for (int i = 0; i < 4; ++i) {
                const int64_t c = n0 + t * 8 + (lane & 3) * 2 + (i & 1);
                const float sw = c < a.N ? a.scales[c * a.NG + g] : 0.0f;
                y[t][i] = gemm_epi_group(acc[t][i], i < 2 ? sa_lo : sa_hi, sw, y[t][i]);
            }
    }
#pragma unroll
    for (int t = 0; t < kNT; ++t)
#pragma unroll
        for (int i = 0; i < 4; ++i) {
            const int64_t r = i < 2 ? r_lo : r_hi, c = n0 + t * 8 + (lane & 3) * 2 + (i & 1);
            if (r < a.M && c < a.N) store_from_f32(a.y, r * a.N + c, gemm_epi_bias(y[t][i], a.bias, c), a.act);
        }
}

// Shared-memory version (large M): a block of 4 warps (2 × 2, 32 × 32 each) computes a 64 × 64
// tile; per k-step of 32 the activation tile and the weight tile decoded to int8 are staged in
// shared memory (tile_*_fetch / tile_*_put of gemm_hd.h), double-buffered: the next step's global
// loads are issued before the current step's mma. Group epilogue as in gemm_int_mma_kernel.
template <WCode KIND>
__global__ void __launch_bounds__(kTileThreads) gemm_int_tc_kernel(GemmArgs a) {
    __shared__ __align__(16) int8_t sA[2][kTileBM * kTileLd];
    __shared__ __align__(16) int8_t sB[2][kTileBN * kTileLd];
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int wm = warp >> 1, wn = warp & 1;
    const int64_t m0 = int64_t(blockIdx.y) * kTileBM, n0 = int64_t(blockIdx.x) * kTileBN;
    const uint8_t* w = static_cast<const uint8_t*>(a.w);
    const int64_t nk = a.K / kTileBK, kpg = a.G / kTileBK;
    const bool mxa = a.sa_groups > 1;
    uint32_t ra[4], rb[4];
    tile_a_fetch(a.q, a.ldq, m0, a.M, 0, tid, ra);
    tile_b_fetch(KIND, w, a.ldw, n0, a.N, 0, tid, rb);
    tile_a_put(sA[0], tid, ra);
    tile_b_put(KIND, sB[0], tid, rb);
    __syncthreads();
    float y[2][4][4] = {};
    int32_t acc[2][4][4] = {};
    for (int64_t kt = 0; kt < nk; ++kt) {
        const int buf = int(kt & 1);
        if (kt + 1 < nk) {
            tile_a_fetch(a.q, a.ldq, m0, a.M, (kt + 1) * kTileBK, tid, ra);
            tile_b_fetch(KIND, w, a.ldw, n0, a.N, (kt + 1) * kTileBK, tid, rb);
        }
        uint32_t af[2][4], bf[4][2];
#pragma unroll
        for (int mt = 0; mt < 2; ++mt) frag_a_s8(sA[buf], kTileLd, wm * 32 + mt * 16, kTileBM, 0, lane, af[mt]);
#pragma unroll
        for (int nt = 0; nt < 4; ++nt)
            frag_b_s8(WCode::S8, reinterpret_cast<const uint8_t*>(sB[buf]), kTileLd, wn * 32 + nt * 8, kTileBN, 0, lane,
                      bf[nt]);
#pragma unroll
        for (int mt = 0; mt < 2; ++mt)
#pragma unroll
            for (int nt = 0; nt < 4; ++nt) mma_s8(acc[mt][nt], af[mt], bf[nt]);
        if ((kt + 1) % kpg == 0) {  // the group ends: fold its exact sums into y, in group order
            const int64_t g = kt / kpg, sg = mxa ? g : 0;
#pragma unroll
            for (int mt = 0; mt < 2; ++mt) {
                const int64_t r_lo = m0 + wm * 32 + mt * 16 + (lane >> 2), r_hi = r_lo + 8;
                const float sa_lo = r_lo < a.M ? a.sa[r_lo * a.sa_groups + sg] : 0.0f;
                const float sa_hi = r_hi < a.M ? a.sa[r_hi * a.sa_groups + sg] : 0.0f;
#pragma unroll
                for (int nt = 0; nt < 4; ++nt)
#pragma unroll
                    for (int i = 0; i < 4; ++i) {
                        const int64_t c = n0 + wn * 32 + nt * 8 + (lane & 3) * 2 + (i & 1);
                        const float sw = c < a.N ? a.scales[c * a.NG + g] : 0.0f;
                        y[mt][nt][i] = gemm_epi_group(acc[mt][nt][i], i < 2 ? sa_lo : sa_hi, sw, y[mt][nt][i]);
                        acc[mt][nt][i] = 0;
                    }
            }
        }
        if (kt + 1 < nk) {
            tile_a_put(sA[buf ^ 1], tid, ra);
            tile_b_put(KIND, sB[buf ^ 1], tid, rb);
        }
        __syncthreads();
    }
#pragma unroll
    for (int mt = 0; mt < 2; ++mt)
#pragma unroll
        for (int nt = 0; nt < 4; ++nt)
#pragma unroll
            for (int i = 0; i < 4; ++i) {
                const int64_t r = m0 + wm * 32 + mt * 16 + (lane >> 2) + (i < 2 ? 0 : 8);
                const int64_t c = n0 + wn * 32 + nt * 8 + (lane & 3) * 2 + (i & 1);
                if (r < a.M && c < a.N) store_from_f32(a.y, r * a.N + c, gemm_epi_bias(y[mt][nt][i], a.bias, c), a.act);
            }
}

// ---- f16 / bf16 activations: tensor cores (WB 16: float weights; 8 / 4: weight-only codes) ------

template <bool BF16, int WB>
__global__ void __launch_bounds__(kWarps * 32) gemm_h_mma_kernel(GemmArgs a) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int64_t row0 = (int64_t(blockIdx.y) * kWarps + warp) * 16;
    if (row0 >= a.M) return;
    const int64_t n0 = int64_t(blockIdx.x) * kBN;
    const uint16_t* x = static_cast<const uint16_t*>(a.x);
    float y[kNT][4] = {};
    for (int64_t g = 0; g < a.NG; ++g) {
        float acc[kNT][4] = {};
        for (int64_t k0 = g * a.G; k0 < (g + 1) * a.G; k0 += 16) {
            uint32_t af[4];
            frag_a_h(x, a.K, row0, a.M, k0, lane, af);
#pragma unroll
            for (int t = 0; t < kNT; ++t) {
                uint32_t bf[2];
                if constexpr (WB == 16) {
                    frag_b_h(static_cast<const uint16_t*>(a.w), a.ldw, n0 + t * 8, a.N, k0, lane, bf);
                    mma_h<BF16>(y[t], af, bf);
                } else {
                    frag_b_wf(WB, BF16, static_cast<const uint8_t*>(a.w), a.ldw, a.zeros, a.NG, g, n0 + t * 8, a.N, k0,
                              lane, bf);
                    mma_h<BF16>(acc[t], af, bf);
                }
            }
        }
        if constexpr (WB != 16) {
#pragma unroll
            for (int t = 0; t < kNT; ++t)
#pragma unroll
                for (int i = 0; i < 4; ++i) {
                    const int64_t c = n0 + t * 8 + (lane & 3) * 2 + (i & 1);
                    const float s = c < a.N ? a.scales[c * a.NG + g] : 0.0f;
                    y[t][i] = fmaf(s, acc[t][i], y[t][i]);
                }
        }
    }
    const int64_t r_lo = row0 + (lane >> 2);
#pragma unroll
    for (int t = 0; t < kNT; ++t)
#pragma unroll
        for (int i = 0; i < 4; ++i) {
            const int64_t r = r_lo + (i < 2 ? 0 : 8), c = n0 + t * 8 + (lane & 3) * 2 + (i & 1);
            if (r < a.M && c < a.N) store_from_f32(a.y, r * a.N + c, gemm_epi_bias(y[t][i], a.bias, c), a.act);
        }
}

// Shared-memory version (large M; G % 32 == 0, K % 32 == 0, x 16-byte aligned): 64 × 64 tiles,
// k-steps of 32, 2 × 2 warps of 32 × 32, double-buffered like gemm_int_tc_kernel. Weight-only
// codes are converted to (code − zero) in f16 / bf16 while staging; per group y += s·acc.
template <bool BF16, int WB>
__global__ void __launch_bounds__(kTileThreads) gemm_h_tc_kernel(GemmArgs a) {
    __shared__ __align__(16) uint16_t sA[2][kTileBM * kTileLdH];
    __shared__ __align__(16) uint16_t sB[2][kTileBN * kTileLdH];
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int wm = warp >> 1, wn = warp & 1;
    const int64_t m0 = int64_t(blockIdx.y) * kTileBM, n0 = int64_t(blockIdx.x) * kTileBN;
    const uint16_t* x = static_cast<const uint16_t*>(a.x);
    const int64_t nk = a.K / kTileBK, kpg = a.G / kTileBK;
    uint32_t ra[2][4], rb[2][4];
    auto fetch = [&](int64_t k0) {
#pragma unroll
        for (int h = 0; h < 2; ++h) {
            const int c = tid + h * kTileThreads;
            tile_h_fetch(x, a.K, m0, a.M, k0, c, ra[h]);
            if constexpr (WB == 16)
                tile_h_fetch(static_cast<const uint16_t*>(a.w), a.ldw, n0, a.N, k0, c, rb[h]);
            else
                tile_wf_fetch(WB, static_cast<const uint8_t*>(a.w), a.ldw, a.zeros, a.NG, a.G, n0, a.N, k0, c, rb[h]);
        }
    };
    auto put = [&](int buf) {
#pragma unroll
        for (int h = 0; h < 2; ++h) {
            const int c = tid + h * kTileThreads;
            tile_h_put(sA[buf], c, ra[h]);
            if constexpr (WB == 16)
                tile_h_put(sB[buf], c, rb[h]);
            else
                tile_wf_put(WB, BF16, sB[buf], c, rb[h]);
        }
    };
    fetch(0);
    put(0);
    __syncthreads();
    float y[2][4][4] = {}, acc[2][4][4] = {};
    for (int64_t kt = 0; kt < nk; ++kt) {
        const int buf = int(kt & 1);
        if (kt + 1 < nk) fetch((kt + 1) * kTileBK);
#pragma unroll
        for (int kk = 0; kk < kTileBK; kk += 16) {
            uint32_t af[2][4], bf[4][2];
#pragma unroll
            for (int mt = 0; mt < 2; ++mt) frag_a_h(sA[buf], kTileLdH, wm * 32 + mt * 16, kTileBM, kk, lane, af[mt]);
#pragma unroll
            for (int nt = 0; nt < 4; ++nt) frag_b_h(sB[buf], kTileLdH, wn * 32 + nt * 8, kTileBN, kk, lane, bf[nt]);
#pragma unroll
            for (int mt = 0; mt < 2; ++mt)
#pragma unroll
                for (int nt = 0; nt < 4; ++nt) mma_h<BF16>(WB == 16 ? y[mt][nt] : acc[mt][nt], af[mt], bf[nt]);
        }
        if (WB != 16 && (kt + 1) % kpg == 0) {
            const int64_t g = kt / kpg;
#pragma unroll
            for (int nt = 0; nt < 4; ++nt)
#pragma unroll
                for (int i = 0; i < 4; ++i) {
                    const int64_t c = n0 + wn * 32 + nt * 8 + (lane & 3) * 2 + (i & 1);
                    const float sc = c < a.N ? a.scales[c * a.NG + g] : 0.0f;
#pragma unroll
                    for (int mt = 0; mt < 2; ++mt) {
                        y[mt][nt][i] = fmaf(sc, acc[mt][nt][i], y[mt][nt][i]);
                        acc[mt][nt][i] = 0.0f;
                    }
                }
        }
        if (kt + 1 < nk) put(buf ^ 1);
        __syncthreads();
    }
#pragma unroll
    for (int mt = 0; mt < 2; ++mt)
#pragma unroll
        for (int nt = 0; nt < 4; ++nt)
#pragma unroll
            for (int i = 0; i < 4; ++i) {
                const int64_t r = m0 + wm * 32 + mt * 16 + (lane >> 2) + (i < 2 ? 0 : 8);
                const int64_t c = n0 + wn * 32 + nt * 8 + (lane & 3) * 2 + (i & 1);
                if (r < a.M && c < a.N) store_from_f32(a.y, r * a.N + c, gemm_epi_bias(y[mt][nt][i], a.bias, c), a.act);
            }
}

// ---- GEMV (M ≤ 8): one warp per weight row, 16-byte units, up to MR activation rows --------------

// Integer: unit u (E elements) of the row goes to lane u % 32; group sums are exact warp
// reductions of the lanes holding that group's units, added to a carry until the group ends,
// then folded into y in group order (G % E == 0, so no unit straddles two groups).
template <WCode KIND, int MR>
__global__ void __launch_bounds__(kWarps * 32) gemm_int_gemv_kernel(GemmArgs a) {
    const int lane = threadIdx.x & 31;
    const int64_t n = int64_t(blockIdx.x) * kWarps + (threadIdx.x >> 5);
    if (n >= a.N) return;
    const int64_t m0 = int64_t(blockIdx.y) * MR;
    const int mr = int(std::min<int64_t>(MR, a.M - m0));
    constexpr int E = KIND == WCode::S8 ? 16 : 32;
    const int64_t units = a.K / E, U = a.G / E;
    const uint8_t* wrow = static_cast<const uint8_t*>(a.w) + n * a.ldw;
    const bool mxa = a.sa_groups > 1;
    float y[MR];
    int32_t carry[MR];
#pragma unroll
    for (int r = 0; r < MR; ++r) y[r] = 0.0f, carry[r] = 0;
    for (int64_t base = 0; base < units; base += 32) {
        const int64_t u = base + lane;
        const bool valid = u < units;
        int32_t p[MR];
#pragma unroll
        for (int r = 0; r < MR; ++r) p[r] = 0;
        if (valid) {
            const uint4 wv = *reinterpret_cast<const uint4*>(wrow + u * 16);
            const uint32_t wu[4] = {wv.x, wv.y, wv.z, wv.w};
#pragma unroll
            for (int r = 0; r < MR; ++r)
                if (r < mr) {
                    const int8_t* qp = a.q + (m0 + r) * a.ldq + u * E;
                    uint32_t qu[8];
                    const uint4 q0 = *reinterpret_cast<const uint4*>(qp);
                    qu[0] = q0.x; qu[1] = q0.y; qu[2] = q0.z; qu[3] = q0.w;
                    if constexpr (E == 32) {
                        const uint4 q1 = *reinterpret_cast<const uint4*>(qp + 16);
                        qu[4] = q1.x; qu[5] = q1.y; qu[6] = q1.z; qu[7] = q1.w;
                    }
                    p[r] = gemm_unit_dot(KIND, wu, qu, 0);
                }
        }
        const int64_t last = std::min<int64_t>(base + 31, units - 1);
        const int64_t gid = valid ? u / U : -1;
        for (int64_t g = base / U; g <= last / U; ++g) {
            const bool ends = (g + 1) * U - 1 <= last;
#pragma unroll
            for (int r = 0; r < MR; ++r)
                if (r < mr) {
                    carry[r] += __reduce_add_sync(0xffffffffu, gid == g ? p[r] : 0);
                    if (ends) {
                        const float sa = a.sa[(m0 + r) * a.sa_groups + (mxa ? g : 0)];
                        y[r] = gemm_epi_group(carry[r], sa, a.scales[n * a.NG + g], y[r]);
                        carry[r] = 0;
                    }
                }
        }
    }
#pragma unroll
    for (int r = 0; r < MR; ++r)
        if (r < mr && lane == r) store_from_f32(a.y, (m0 + r) * a.N + n, gemm_epi_bias(y[r], a.bias, n), a.act);
}

// Weight-only: per unit (one group) a float dot with (code − zero), scaled into y; warp sum at the end.
template <int WB, int MR>
__global__ void __launch_bounds__(kWarps * 32) gemm_wf_gemv_kernel(GemmArgs a) {
    const int lane = threadIdx.x & 31;
    const int64_t n = int64_t(blockIdx.x) * kWarps + (threadIdx.x >> 5);
    if (n >= a.N) return;
    const int64_t m0 = int64_t(blockIdx.y) * MR;
    const int mr = int(std::min<int64_t>(MR, a.M - m0));
    constexpr int E = WB == 8 ? 16 : 32;
    const int64_t units = a.K / E, U = a.G / E;
    const uint8_t* wrow = static_cast<const uint8_t*>(a.w) + n * a.ldw;
    float y[MR];
#pragma unroll
    for (int r = 0; r < MR; ++r) y[r] = 0.0f;
    for (int64_t u = lane; u < units; u += 32) {
        const int64_t g = u / U;
        const float s = a.scales[n * a.NG + g];
        const int z = WB == 4 ? int(a.zeros[n * a.NG + g]) : 0;
        const uint4 wv = *reinterpret_cast<const uint4*>(wrow + u * 16);
        const uint32_t wu[4] = {wv.x, wv.y, wv.z, wv.w};
        float c[E];
#pragma unroll
        for (int e = 0; e < E; ++e) {
            const uint32_t word = wu[e / (E / 4)];
            const int sh = WB == 8 ? 8 * (e % 4) : 4 * (e % 8);
            c[e] = WB == 8 ? float(int8_t(word >> sh)) : float(int((word >> sh) & 15u) - z);
        }
#pragma unroll
        for (int r = 0; r < MR; ++r)
            if (r < mr) {
                float part = 0.0f;
#pragma unroll
                for (int e8 = 0; e8 < E; e8 += 8) {
                    float xv[8];
                    load_x8(a.x, a.xt, (m0 + r) * a.K + u * E + e8, xv);
#pragma unroll
                    for (int j = 0; j < 8; ++j) part = fmaf(xv[j], c[e8 + j], part);
                }
                y[r] = fmaf(s, part, y[r]);
            }
    }
#pragma unroll
    for (int r = 0; r < MR; ++r)
        if (r < mr) {
            const float v = warp_sum(y[r]);
            if (lane == 0) store_from_f32(a.y, (m0 + r) * a.N + n, gemm_epi_bias(v, a.bias, n), a.act);
        }
}

// Float weights (act dtype): K % 8 == 0, 8 elements per lane step.
template <int MR>
__global__ void __launch_bounds__(kWarps * 32) gemm_float_gemv_kernel(GemmArgs a) {
    const int lane = threadIdx.x & 31;
    const int64_t n = int64_t(blockIdx.x) * kWarps + (threadIdx.x >> 5);
    if (n >= a.N) return;
    const int64_t m0 = int64_t(blockIdx.y) * MR;
    const int mr = int(std::min<int64_t>(MR, a.M - m0));
    float y[MR];
#pragma unroll
    for (int r = 0; r < MR; ++r) y[r] = 0.0f;
    for (int64_t k = int64_t(lane) * 8; k < a.K; k += 256) {
        float wv[8];
        load_x8(a.w, a.act, n * a.ldw + k, wv);
#pragma unroll
        for (int r = 0; r < MR; ++r)
            if (r < mr) {
                float xv[8];
                load_x8(a.x, a.xt, (m0 + r) * a.K + k, xv);
#pragma unroll
                for (int j = 0; j < 8; ++j) y[r] = fmaf(xv[j], wv[j], y[r]);
            }
    }
#pragma unroll
    for (int r = 0; r < MR; ++r)
        if (r < mr) {
            const float v = warp_sum(y[r]);
            if (lane == 0) store_from_f32(a.y, (m0 + r) * a.N + n, gemm_epi_bias(v, a.bias, n), a.act);
        }
}

// ---- launchers ----------------------------------------------------------------------------------

bool aligned(const void* p, unsigned bytes) { return reinterpret_cast<uintptr_t>(p) % bytes == 0; }

dim3 gemv_grid(const GemmArgs& a, int mr) {
    return dim3(unsigned(ceil_div(a.N, kWarps)), unsigned(ceil_div(a.M, mr)));
}
dim3 mma_grid(const GemmArgs& a) { return dim3(unsigned(ceil_div(a.N, kBN)), unsigned(ceil_div(a.M, 16 * kWarps))); }

template <WCode KIND>
void launch_int(const GemmArgs& a, bool gemv, cudaStream_t stream) {
    if (gemv) {
        if (a.M == 1)
            gemm_int_gemv_kernel<KIND, 1><<<gemv_grid(a, 1), kWarps * 32, 0, stream>>>(a);
        else
            gemm_int_gemv_kernel<KIND, kGemvMR><<<gemv_grid(a, kGemvMR), kWarps * 32, 0, stream>>>(a);
    } else {
        const dim3 grid(unsigned(ceil_div(a.N, kTileBN)), unsigned(ceil_div(a.M, kTileBM)));
        gemm_int_tc_kernel<KIND><<<grid, kTileThreads, 0, stream>>>(a);
    }
}

template <int WB>
void launch_wf_gemv(const GemmArgs& a, cudaStream_t stream) {
    if (a.M == 1)
        gemm_wf_gemv_kernel<WB, 1><<<gemv_grid(a, 1), kWarps * 32, 0, stream>>>(a);
    else
        gemm_wf_gemv_kernel<WB, kGemvMR><<<gemv_grid(a, kGemvMR), kWarps * 32, 0, stream>>>(a);
}

// Shared-memory tiles when k-steps of 32 fit the groups and x allows 16-byte loads, else the
// direct kernel (k-steps of 16).
template <int WB>
const char* launch_h_mma(const GemmArgs& a, cudaStream_t stream) {
    const bool bf = a.act == DType::BF16;
    if (a.G % kTileBK == 0 && aligned(a.x, 16)) {
        const dim3 grid(unsigned(ceil_div(a.N, kTileBN)), unsigned(ceil_div(a.M, kTileBM)));
        if (bf)
            gemm_h_tc_kernel<true, WB><<<grid, kTileThreads, 0, stream>>>(a);
        else
            gemm_h_tc_kernel<false, WB><<<grid, kTileThreads, 0, stream>>>(a);
        return "mma.f16 (shared-memory tiles)";
    }
    if (bf)
        gemm_h_mma_kernel<true, WB><<<mma_grid(a), kWarps * 32, 0, stream>>>(a);
    else
        gemm_h_mma_kernel<false, WB><<<mma_grid(a), kWarps * 32, 0, stream>>>(a);
    return "mma.f16";
}

bool grid_ok(const GemmArgs& a) { return ceil_div(a.M, 16 * kWarps) <= 65535 && ceil_div(a.N, kWarps) <= 0x7fffffff; }

}  // namespace

bool gemm_int_fast(const GemmArgs& a, int cc_major, cudaStream_t stream, const char** path) {
    if (!grid_ok(a)) return false;
    const int64_t E = a.wcode == WCode::S8 ? 16 : 32;
    const bool gemv = a.M <= kGemvRows && a.G % E == 0;
    if (gemv) {
        *path = "gemv";
    } else if (a.a4 && a.wcode == WCode::S4 && cc_major == 8 && a.G % 64 == 0) {
        gemm_int_mma_kernel<WCode::S4, true><<<mma_grid(a), kWarps * 32, 0, stream>>>(a);
        CUDA_CHECK_LAUNCH();
        *path = "mma.s4";
        return true;
    } else if (a.G % 32 == 0) {
        *path = "mma.s8 (shared-memory tiles)";
    } else {
        return false;
    }
    switch (a.wcode) {
        case WCode::S8: launch_int<WCode::S8>(a, gemv, stream); break;
        case WCode::S4: launch_int<WCode::S4>(a, gemv, stream); break;
        case WCode::E2M1: launch_int<WCode::E2M1>(a, gemv, stream); break;
        case WCode::OVP: launch_int<WCode::OVP>(a, gemv, stream); break;
    }
    CUDA_CHECK_LAUNCH();
    return true;
}

bool gemm_wf_fast(const GemmArgs& a, cudaStream_t stream, const char** path) {
    if (!grid_ok(a)) return false;
    const int64_t E = a.wbits == 8 ? 16 : 32;
    if (a.M <= kGemvRows && a.G % E == 0 && aligned(a.x, 16)) {
        if (a.wbits == 8)
            launch_wf_gemv<8>(a, stream);
        else
            launch_wf_gemv<4>(a, stream);
        *path = "gemv";
    } else if (a.act != DType::F32 && a.G % 16 == 0 && aligned(a.x, 4)) {
        *path = a.wbits == 8 ? launch_h_mma<8>(a, stream) : launch_h_mma<4>(a, stream);
    } else {
        return false;
    }
    CUDA_CHECK_LAUNCH();
    return true;
}

bool gemm_float_fast(const GemmArgs& a, cudaStream_t stream, const char** path) {
    if (!grid_ok(a)) return false;
    if (a.M <= kGemvRows && a.K % 8 == 0 && aligned(a.x, 16)) {
        if (a.M == 1)
            gemm_float_gemv_kernel<1><<<gemv_grid(a, 1), kWarps * 32, 0, stream>>>(a);
        else
            gemm_float_gemv_kernel<kGemvMR><<<gemv_grid(a, kGemvMR), kWarps * 32, 0, stream>>>(a);
        *path = "gemv";
    } else if (a.act != DType::F32 && a.K % 16 == 0 && aligned(a.x, 4)) {
        *path = launch_h_mma<16>(a, stream);
    } else {
        return false;
    }
    CUDA_CHECK_LAUNCH();
    return true;
}

}  // namespace quellm::cuda
