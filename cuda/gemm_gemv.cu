// gemm_gemv.cu — GEMV kernels of the device linear layer for M ≤ kGemvRows (decode): memory-bound,
// so one warp per weight row streams it once in 16-byte units (no tensor cores), for up to
// kGemvMR activation rows per pass. Integer group sums are reduced across lanes exactly
// (__reduce_add_sync) and folded in group order, so the integer GEMV is bit-identical to the CPU
// too. Contract and dispatch: gemm_kernels.cuh, gemm_mma.cu.
#include <algorithm>

#include "gemm_kernels.cuh"

namespace quellm::cuda {

namespace {

constexpr int kWarps = 4;  // weight rows per block

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
        const int64_t gid = valid ? u / U : -1;
        gemv_group_walk(base, units, U, [&](int64_t g, bool ends) {
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
        });
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
        gemm_wf_unit<WB>(wu, z, c);
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

dim3 gemv_grid(const GemmArgs& a, int mr) { return dim3(unsigned(ceil_div(a.N, kWarps)), unsigned(ceil_div(a.M, mr))); }

template <WCode KIND>
void launch_int_gemv(const GemmArgs& a, cudaStream_t stream) {
    if (a.M == 1)
        gemm_int_gemv_kernel<KIND, 1><<<gemv_grid(a, 1), kWarps * 32, 0, stream>>>(a);
    else
        gemm_int_gemv_kernel<KIND, kGemvMR><<<gemv_grid(a, kGemvMR), kWarps * 32, 0, stream>>>(a);
}

template <int WB>
void launch_wf_gemv(const GemmArgs& a, cudaStream_t stream) {
    if (a.M == 1)
        gemm_wf_gemv_kernel<WB, 1><<<gemv_grid(a, 1), kWarps * 32, 0, stream>>>(a);
    else
        gemm_wf_gemv_kernel<WB, kGemvMR><<<gemv_grid(a, kGemvMR), kWarps * 32, 0, stream>>>(a);
}

}  // namespace

void gemm_int_gemv(const GemmArgs& a, cudaStream_t stream) {
    switch (a.wcode) {
        case WCode::S8: launch_int_gemv<WCode::S8>(a, stream); break;
        case WCode::S4: launch_int_gemv<WCode::S4>(a, stream); break;
        case WCode::E2M1: launch_int_gemv<WCode::E2M1>(a, stream); break;
        case WCode::OVP: launch_int_gemv<WCode::OVP>(a, stream); break;
    }
}

void gemm_wf_gemv(const GemmArgs& a, cudaStream_t stream) {
    if (a.wbits == 8)
        launch_wf_gemv<8>(a, stream);
    else
        launch_wf_gemv<4>(a, stream);
}

void gemm_float_gemv(const GemmArgs& a, cudaStream_t stream) {
    if (a.M == 1)
        gemm_float_gemv_kernel<1><<<gemv_grid(a, 1), kWarps * 32, 0, stream>>>(a);
    else
        gemm_float_gemv_kernel<kGemvMR><<<gemv_grid(a, kGemvMR), kWarps * 32, 0, stream>>>(a);
}

}  // namespace quellm::cuda
