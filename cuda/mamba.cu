// mamba.cu — CUDA kernels of the Mamba-1 mixer: causal depthwise conv and selective scan.
//
// Version 1: one thread per (sequence, channel), tokens walked in order — the structure of the
// CPU runtime, with the same per-token helpers (cpp/runtime/ops.h), so prefill (T tokens) and
// decode (T = 1) share one kernel. The scan keeps the channel's N-state in registers (N <= 256;
// mamba checkpoints use 16). A chunked block-scan for long prefill is future work.
#include <algorithm>

#include "common.cuh"
#include "cuda_api.h"
#include "runtime/ops.h"

namespace quellm::cuda {

namespace {

constexpr int kMaxK = 64;
constexpr int kMaxN = 256;

__global__ void mamba_conv_kernel(MambaConvCudaParams p) {
    const long long idx = blockIdx.x * (long long)blockDim.x + threadIdx.x;
    if (idx >= p.B * p.Di) return;
    const long long b = idx / p.Di, c = idx % p.Di, K = p.K;
    float win[kMaxK];
    float* cs = p.conv_state + (b * p.Di + c) * (K - 1);
    for (long long k = 0; k < K - 1; ++k) win[k] = cs[k];
    const float bias = p.conv_b ? p.conv_b[c] : 0.0f;
    for (long long t = 0; t < p.T; ++t) {
        const long long r = b * p.T + t;
        const float v = mamba_conv_token(win, p.conv_w + c * K, bias, K, load_as_f32(p.xs, r * p.ld_xs + c, p.act));
        store_from_f32(p.u, r * p.Di + c, silu(v), p.act);
    }
    for (long long k = 0; k < K - 1; ++k) cs[k] = win[k];
}

template <int NMAX>
__global__ void mamba_scan_kernel(MambaScanCudaParams p) {
    const long long idx = blockIdx.x * (long long)blockDim.x + threadIdx.x;
    if (idx >= p.B * p.Di) return;
    const long long b = idx / p.Di, c = idx % p.Di, N = p.N;
    float hs[NMAX], A[NMAX], Bv[NMAX], Cv[NMAX];
    float* st = p.ssm_state + (b * p.Di + c) * N;
    for (long long n = 0; n < N; ++n) {
        hs[n] = st[n];
        A[n] = p.A[c * N + n];
    }
    const float Dc = p.Dskip[c];
    for (long long t = 0; t < p.T; ++t) {
        const long long r = b * p.T + t;
        float dt = load_as_f32(p.dt, r * p.Di + c, p.act);
        if (p.dt_softplus) dt = softplus(dt);
        const float u = load_as_f32(p.u, r * p.Di + c, p.act);
        for (long long n = 0; n < N; ++n) {
            Bv[n] = load_as_f32(p.bc, r * p.ld_bc + n, p.act);
            Cv[n] = load_as_f32(p.bc, r * p.ld_bc + N + n, p.act);
        }
        float y = mamba_scan_token(hs, A, N, dt, u, Bv, Cv, Dc);
        if (p.z) y *= silu(load_as_f32(p.z, r * p.ld_z + c, p.act));
        store_from_f32(p.y, r * p.Di + c, y, p.act);
    }
    for (long long n = 0; n < N; ++n) st[n] = hs[n];
}

}  // namespace

void mamba_conv_cuda(const MambaConvCudaParams& p, void* stream) {
    QUELLM_CHECK(p.B >= 0 && p.T >= 0 && p.Di >= 1 && p.K >= 1 && p.K <= kMaxK, "mamba_conv_cuda: bad sizes (K <= ", kMaxK, ")");
    QUELLM_CHECK(p.ld_xs >= p.Di, "mamba_conv_cuda: ld_xs < Di");
    if (p.B == 0 || p.T == 0) return;
    const int threads = 128;
    const long long blocks = ceil_div(p.B * p.Di, threads);
    mamba_conv_kernel<<<unsigned(blocks), threads, 0, static_cast<cudaStream_t>(stream)>>>(p);
    CUDA_CHECK_LAUNCH();
}

void mamba_scan_cuda(const MambaScanCudaParams& p, void* stream) {
    QUELLM_CHECK(p.B >= 0 && p.T >= 0 && p.Di >= 1 && p.N >= 1 && p.N <= kMaxN, "mamba_scan_cuda: bad sizes (N <= ", kMaxN, ")");
    QUELLM_CHECK(p.ld_bc >= 2 * p.N && (p.z == nullptr || p.ld_z >= p.Di), "mamba_scan_cuda: bad row strides");
    if (p.B == 0 || p.T == 0) return;
    const int threads = 128;
    const unsigned blocks = unsigned(ceil_div(p.B * p.Di, threads));
    cudaStream_t s = static_cast<cudaStream_t>(stream);
    if (p.N <= 16)
        mamba_scan_kernel<16><<<blocks, threads, 0, s>>>(p);
    else if (p.N <= 64)
        mamba_scan_kernel<64><<<blocks, threads, 0, s>>>(p);
    else
        mamba_scan_kernel<kMaxN><<<blocks, threads, 0, s>>>(p);
    CUDA_CHECK_LAUNCH();
}

}  // namespace quellm::cuda
