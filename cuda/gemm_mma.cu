// gemm_mma.cu — tensor-core (mma.sync) kernels of the device linear layer and the fast-path dispatch; see
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
//   GEMV (M ≤ 8)   in cuda/gemm_gemv.cu.
// Tiles: the *_tc kernels use 64 × 64 block tiles, 2 × 2 warps of 32 × 32; the direct *_mma
// kernels give each of 4 warps 16 rows × 64 columns, operands straight from (L1/L2-cached) global.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>

#include "gemm_kernels.cuh"

namespace quellm::cuda {

namespace {

constexpr int kWarps = 4;          // warps per block of the direct mma kernels (16 rows each)
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
        if ((kt + 1) % kpg == 0)  // the group ends: fold its exact sums into y, in group order
            tc_int_fold(acc, y, a.sa, a.sa_groups, a.scales, a.NG, kt / kpg, a.M, a.N, m0 + wm * 32, n0 + wn * 32, lane);
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
                int64_t r, c;
                tc_tile_rc(m0 + wm * 32, n0 + wn * 32, lane, mt, nt, i, r, c);
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
        if (WB != 16 && (kt + 1) % kpg == 0)
            tc_wf_fold(acc, y, a.scales, a.NG, kt / kpg, a.N, n0 + wn * 32, lane);
        if (kt + 1 < nk) put(buf ^ 1);
        __syncthreads();
    }
#pragma unroll
    for (int mt = 0; mt < 2; ++mt)
#pragma unroll
        for (int nt = 0; nt < 4; ++nt)
#pragma unroll
            for (int i = 0; i < 4; ++i) {
                int64_t r, c;
                tc_tile_rc(m0 + wm * 32, n0 + wn * 32, lane, mt, nt, i, r, c);
                if (r < a.M && c < a.N) store_from_f32(a.y, r * a.N + c, gemm_epi_bias(y[mt][nt][i], a.bias, c), a.act);
            }
}

// ---- launchers ----------------------------------------------------------------------------------

dim3 mma_grid(const GemmArgs& a) { return dim3(unsigned(ceil_div(a.N, kBN)), unsigned(ceil_div(a.M, 16 * kWarps))); }

template <WCode KIND>
void launch_int(const GemmArgs& a, cudaStream_t stream) {
    const dim3 grid(unsigned(ceil_div(a.N, kTileBN)), unsigned(ceil_div(a.M, kTileBM)));
    gemm_int_tc_kernel<KIND><<<grid, kTileThreads, 0, stream>>>(a);
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

bool grid_ok(const GemmArgs& a) { return ceil_div(a.M, 16 * kWarps) <= 65535 && ceil_div(a.N, 4) <= 0x7fffffff; }

}  // namespace

bool gemm_int_fast(const GemmArgs& a, int cc_major, cudaStream_t stream, const char** path) {
    if (!grid_ok(a)) return false;
    const int64_t E = a.wcode == WCode::S8 ? 16 : 32;
    if (a.M <= kGemvRows && a.G % E == 0) {
        gemm_int_gemv(a, stream);
        *path = "gemv";
    } else if (a.a4 && a.wcode == WCode::S4 && cc_major == 8 && a.G % 64 == 0) {
        gemm_int_mma_kernel<WCode::S4, true><<<mma_grid(a), kWarps * 32, 0, stream>>>(a);
        *path = "mma.s4";
    } else if (a.G % 32 == 0) {
        switch (a.wcode) {
            case WCode::S8: launch_int<WCode::S8>(a, stream); break;
            case WCode::S4: launch_int<WCode::S4>(a, stream); break;
            case WCode::E2M1: launch_int<WCode::E2M1>(a, stream); break;
            case WCode::OVP: launch_int<WCode::OVP>(a, stream); break;
        }
        *path = "mma.s8 (shared-memory tiles)";
    } else {
        return false;
    }
    CUDA_CHECK_LAUNCH();
    return true;
}

bool gemm_wf_fast(const GemmArgs& a, cudaStream_t stream, const char** path) {
    if (!grid_ok(a)) return false;
    const int64_t E = a.wbits == 8 ? 16 : 32;
    if (a.M <= kGemvRows && a.G % E == 0 && aligned(a.x, 16)) {
        gemm_wf_gemv(a, stream);
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
        gemm_float_gemv(a, stream);
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
