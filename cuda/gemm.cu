// gemm.cu — the device linear layer: y (M, N) = x (M, K) · Wᵀ (+ b) of an uploaded QuantLinear,
// with the same pipeline as QuantLinear::forward (cpp/quant_linear.cpp):
//
//   x (act dtype) → [Hadamard: fwht_cuda into the workspace] → [activation quantizer into the
//   workspace: per-token int8/int4 with clip | MXFP4 blocks of 32] → GEMM → epilogue (scales, bias)
//
// Weights stay in their format on the device (rows padded to 16 bytes): float weights in the
// activation dtype (f32 / f16 / bf16); weight-only int4 as unsigned nibbles + zero points (8 when
// symmetric) and int8 as signed codes, per-group f32 scales; integer-activation weights as their
// canonical codes (int8, int4 two's complement, MXFP4 E2M1, OVP4 pairs) + f32 scales
// (MXFP4: 2^(code − 127) / 2, as gemm.h holds them).
//
// Arithmetic lives in cpp/gemm_hd.h (host+device, tested on the CPU). Integer kernels compute
// each group's int32 sum exactly and fold groups in order with y = fma(acc, sa·sw, y), like
// gemm_int_ref, so with f32 activations and no transform they match the CPU bit for bit.
//
// Versions: SIMT references in this file (one thread per output, any shape; cuda_linear_force_simt
// runs only these), a tiled f32 SIMT GEMM for float / weight-only shapes the others do not take,
// tensor-core kernels in gemm_mma.cu and GEMV kernels in gemm_gemv.cu (see gemm_kernels.cuh).
// Non-finite activations: the CPU quantizer throws; the device one cannot (no sync), so a row with
// NaN/Inf gets a NaN scale and its outputs are NaN. Weight-only and float layers propagate them.
#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "common.cuh"
#include "cuda_api.h"
#include "gemm_kernels.cuh"
#include "gemm_layout.h"
#include "quant_linear.h"

namespace quellm::cuda {

struct CudaLinear {
    LinearKind kind = LinearKind::Float;
    DType act = DType::F32;
    int64_t N = 0, K = 0, G = 0, NG = 1;
    int wbits = 32;
    WCode wcode = WCode::S8;
    AQuant aq = AQuant::None;
    float a_clip = 1.0f;
    std::string name;
    int cc_major = 0;
    // one device allocation holding everything below
    void* mem = nullptr;
    size_t nbytes = 0;
    void* w = nullptr;          // (N, ldw)
    int64_t ldw = 0;            // float: elements, else bytes
    float* scales = nullptr;    // (N, NG)
    uint8_t* zeros = nullptr;   // weight-only int4: (N, NG)
    float* bias = nullptr;      // (N) or null
    // Hadamard transform
    int had_m = 0;              // 0: none
    int64_t had_p = 0;
    int8_t* had_hm = nullptr;   // device (m, m), m > 1
    ~CudaLinear() {
        if (mem) cudaFree(mem);
    }
};

void CudaLinearDeleter::operator()(CudaLinear* p) const noexcept { delete p; }

namespace {

bool g_force_simt = false;

constexpr size_t kAlign = 256;
size_t align_up(size_t v, size_t a) { return (v + a - 1) / a * a; }

// ---- activation quantizers --------------------------------------------------------------------

// One block per row: per-token symmetric quantization (gemm_act_scale / gemm_act_quant); columns
// K..ldq are zeroed for the vector loads of the kernels.
__global__ void act_quant_rows_kernel(const void* x, DType xt, int64_t M, int64_t K, int qmax, float clip, int8_t* q,
                                      int64_t ldq, float* sa) {
    __shared__ float red[32];
    for (int64_t m = blockIdx.x; m < M; m += gridDim.x) {
        float amax = 0.0f;
        int finite = 1;
        for (int64_t k = threadIdx.x; k < K; k += blockDim.x) {
            const float v = load_as_f32(x, m * K + k, xt);
            finite &= isfinite(v) ? 1 : 0;
            amax = fmaxf(amax, fabsf(v));
        }
        finite = __syncthreads_and(finite);
        for (int o = 16; o > 0; o >>= 1) amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, o));
        if ((threadIdx.x & 31) == 0) red[threadIdx.x >> 5] = amax;
        __syncthreads();
        amax = 0.0f;
        for (int i = 0; i < int(blockDim.x >> 5); ++i) amax = fmaxf(amax, red[i]);
        const float s = finite ? gemm_act_scale(amax, clip, qmax) : __int_as_float(0x7fc00000);
        for (int64_t k = threadIdx.x; k < ldq; k += blockDim.x)
            q[m * ldq + k] = k < K && finite ? gemm_act_quant(load_as_f32(x, m * K + k, xt), s, qmax) : int8_t(0);
        if (threadIdx.x == 0) sa[m] = s;
        __syncthreads();  // red[] is reused by the next row
    }
}

// One warp per MX block of 32 (K % 32 == 0): q = 2·E2M1, sa (M, K/32) = 2^shared / 2.
__global__ void act_quant_mx4_kernel(const void* x, DType xt, int64_t M, int64_t K, int8_t* q, int64_t ldq, float* sa) {
    const int lane = threadIdx.x & 31;
    const int64_t nb = K / 32, total = M * nb;
    for (int64_t b = (int64_t(blockIdx.x) * blockDim.x + threadIdx.x) / 32; b < total;
         b += int64_t(gridDim.x) * blockDim.x / 32) {
        const int64_t m = b / nb, j = b % nb;
        const float v = load_as_f32(x, m * K + j * 32 + lane, xt);
        const bool finite = __all_sync(0xffffffffu, isfinite(v));
        float amax = fabsf(v);
        for (int o = 16; o > 0; o >>= 1) amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, o));
        const int shared = finite ? gemm_mx4_shared(amax) : 0;
        q[m * ldq + j * 32 + lane] = finite ? gemm_mx4_elem(v, shared) : int8_t(0);
        if (lane == 0) sa[m * nb + j] = finite ? gemm_mx4_scale(shared) : __int_as_float(0x7fc00000);
        if (j == nb - 1 && lane < ldq - K) q[m * ldq + K + lane] = 0;  // row padding (< 16 bytes)
    }
}

// ---- SIMT references: one thread per output (m, n), any shape -------------------------------------

__global__ void gemm_int_simt_kernel(GemmArgs a) {
    const int64_t n = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
    if (n >= a.N) return;
    const uint8_t* row = static_cast<const uint8_t*>(a.w) + n * a.ldw;
    for (int64_t m = blockIdx.y; m < a.M; m += gridDim.y) {
        const int8_t* q = a.q + m * a.ldq;
        float y = 0.0f;
        for (int64_t g = 0; g < a.NG; ++g) {
            int32_t acc = 0;
            for (int64_t k = g * a.G; k < (g + 1) * a.G; ++k) acc += int32_t(q[k]) * gemm_wcode_at(a.wcode, row, k);
            y = gemm_epi_group(acc, a.sa[m * a.sa_groups + (a.sa_groups > 1 ? g : 0)], a.scales[n * a.NG + g], y);
        }
        store_from_f32(a.y, m * a.N + n, gemm_epi_bias(y, a.bias, n), a.act);
    }
}

__global__ void gemm_wf_simt_kernel(GemmArgs a) {
    const int64_t n = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
    if (n >= a.N) return;
    const uint8_t* row = static_cast<const uint8_t*>(a.w) + n * a.ldw;
    for (int64_t m = blockIdx.y; m < a.M; m += gridDim.y) {
        float y = 0.0f;
        for (int64_t g = 0; g < a.NG; ++g) {
            const int z = a.wbits == 4 ? int(a.zeros[n * a.NG + g]) : 0;
            float acc = 0.0f;
            for (int64_t k = g * a.G; k < (g + 1) * a.G; ++k)
                acc = fmaf(load_as_f32(a.x, m * a.K + k, a.xt), float(gemm_wf_code(a.wbits, row, k, z)), acc);
            y = fmaf(a.scales[n * a.NG + g], acc, y);
        }
        store_from_f32(a.y, m * a.N + n, gemm_epi_bias(y, a.bias, n), a.act);
    }
}

__global__ void gemm_float_simt_kernel(GemmArgs a) {
    const int64_t n = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
    if (n >= a.N) return;
    for (int64_t m = blockIdx.y; m < a.M; m += gridDim.y) {
        float acc = 0.0f;
        for (int64_t k = 0; k < a.K; ++k)
            acc = fmaf(load_as_f32(a.x, m * a.K + k, a.xt), load_as_f32(a.w, n * a.ldw + k, a.act), acc);
        store_from_f32(a.y, m * a.N + n, gemm_epi_bias(acc, a.bias, n), a.act);
    }
}

// Tiled SIMT f32 GEMM for float / weight-only layers outside the tensor-core and GEMV kernels
// (f32 activations with M > 8, odd K, groups that are not a multiple of 16): 64 × 64 block tiles,
// k-steps of 16 through shared memory, 4 × 4 outputs per thread; weights dequantized to f32 while
// staging, w = (code − zero)·s as gemm_wf_ref multiplies them. Any K, any G.
template <int WB>  // 32: float weights (act dtype); 8 / 4: weight-only codes
__global__ void __launch_bounds__(256) gemm_f32_tiled_kernel(GemmArgs a) {
    __shared__ float sx[16][65];  // [k][m]
    __shared__ float sw[16][65];  // [k][n]
    const int tid = threadIdx.x, tx = tid % 16, ty = tid / 16;
    const int64_t m0 = int64_t(blockIdx.y) * 64, n0 = int64_t(blockIdx.x) * 64;
    float acc[4][4] = {};
    for (int64_t k0 = 0; k0 < a.K; k0 += 16) {
#pragma unroll
        for (int j = 0; j < 4; ++j) {
            const int idx = tid + 256 * j, rr = idx / 16, kk = idx % 16;
            const int64_t k = k0 + kk, m = m0 + rr, n = n0 + rr;
            sx[kk][rr] = m < a.M && k < a.K ? load_as_f32(a.x, m * a.K + k, a.xt) : 0.0f;
            float wv = 0.0f;
            if (n < a.N && k < a.K) {
                if constexpr (WB == 32) {
                    wv = load_as_f32(a.w, n * a.ldw + k, a.act);
                } else {
                    const int64_t g = k / a.G;
                    const int z = WB == 4 ? int(a.zeros[n * a.NG + g]) : 0;
                    wv = float(gemm_wf_code(WB, static_cast<const uint8_t*>(a.w) + n * a.ldw, k, z)) *
                         a.scales[n * a.NG + g];
                }
            }
            sw[kk][rr] = wv;
        }
        __syncthreads();
#pragma unroll
        for (int kk = 0; kk < 16; ++kk) {
            float xr[4], wc[4];
#pragma unroll
            for (int i = 0; i < 4; ++i) xr[i] = sx[kk][ty + 16 * i], wc[i] = sw[kk][tx + 16 * i];
#pragma unroll
            for (int i = 0; i < 4; ++i)
#pragma unroll
                for (int j = 0; j < 4; ++j) acc[i][j] = fmaf(xr[i], wc[j], acc[i][j]);
        }
        __syncthreads();
    }
#pragma unroll
    for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j) {
            const int64_t m = m0 + ty + 16 * i, n = n0 + tx + 16 * j;
            if (m < a.M && n < a.N) store_from_f32(a.y, m * a.N + n, gemm_epi_bias(acc[i][j], a.bias, n), a.act);
        }
}

void launch_f32_tiled(const GemmArgs& a, LinearKind kind, cudaStream_t stream) {
    const dim3 grid(unsigned(ceil_div(a.N, 64)), unsigned(ceil_div(a.M, 64)));
    if (kind == LinearKind::Float)
        gemm_f32_tiled_kernel<32><<<grid, 256, 0, stream>>>(a);
    else if (a.wbits == 8)
        gemm_f32_tiled_kernel<8><<<grid, 256, 0, stream>>>(a);
    else
        gemm_f32_tiled_kernel<4><<<grid, 256, 0, stream>>>(a);
    CUDA_CHECK_LAUNCH();
}

void launch_simt(const GemmArgs& a, LinearKind kind, cudaStream_t stream) {
    const dim3 grid(unsigned(ceil_div(a.N, 128)), unsigned(std::min<int64_t>(a.M, 65535)));
    if (kind == LinearKind::Int)
        gemm_int_simt_kernel<<<grid, 128, 0, stream>>>(a);
    else if (kind == LinearKind::Wf)
        gemm_wf_simt_kernel<<<grid, 128, 0, stream>>>(a);
    else
        gemm_float_simt_kernel<<<grid, 128, 0, stream>>>(a);
    CUDA_CHECK_LAUNCH();
}

// ---- workspace layout -------------------------------------------------------------------------

struct Workspace {
    size_t had = 0, q = 0, sa = 0, total = 0;  // byte offsets; had / q / sa present when sizes > 0
    size_t had_bytes = 0, q_bytes = 0, sa_bytes = 0;
    int64_t ldq = 0;
};

Workspace workspace_layout(const CudaLinear& L, int64_t M) {
    Workspace w;
    if (L.had_m) w.had_bytes = size_t(M * L.K) * 4;  // f32 (integer activations) or act dtype
    if (L.kind == LinearKind::Int) {
        w.ldq = int64_t(align_up(size_t(L.K), 16));
        w.q_bytes = size_t(M * w.ldq);
        w.sa_bytes = size_t(M * (L.aq == AQuant::Mxfp4 ? L.K / 32 : 1)) * 4;
    }
    w.had = 0;
    w.q = align_up(w.had + w.had_bytes, kAlign);
    w.sa = align_up(w.q + w.q_bytes, kAlign);
    w.total = w.sa + w.sa_bytes;
    if (w.had_bytes + w.q_bytes + w.sa_bytes == 0) w.total = 0;
    return w;
}

}  // namespace

// ---- upload -----------------------------------------------------------------------------------

CudaLinearPtr cuda_linear_upload(const QuantLinear& q, DType act) {
    CudaLinearPtr L(new CudaLinear);
    L->act = act;
    L->N = q.N;
    L->K = q.K;
    L->aq = q.aq;
    L->a_clip = q.a_clip;
    const int64_t K = q.K;

    LinearImage img = linear_image(q, act);
    L->kind = img.kind;
    L->G = img.G;
    L->NG = img.NG;
    L->ldw = img.ldw;
    L->wbits = img.wbits;
    L->wcode = img.wcode;
    L->name = img.name;
    const std::vector<uint8_t>& w_img = img.w;
    const std::vector<float>& scales_img = img.scales;
    const std::vector<uint8_t>& zeros_img = img.zeros;
    const std::vector<float>& bias = q.bias();
    const HadamardSpec& h = q.hadamard;
    if (h.m) {
        QUELLM_CHECK(h.m * h.p == K, "cuda_linear_upload: Hadamard order does not match K");
        L->had_m = h.m;
        L->had_p = h.p;
    }
    const size_t w_bytes = w_img.size(), s_bytes = scales_img.size() * 4, z_bytes = zeros_img.size(),
                 b_bytes = bias.size() * 4, h_bytes = h.m > 1 ? h.hm.size() : 0;
    const size_t o_s = align_up(w_bytes, kAlign), o_z = align_up(o_s + s_bytes, kAlign),
                 o_b = align_up(o_z + z_bytes, kAlign), o_h = align_up(o_b + b_bytes, kAlign), total = o_h + h_bytes;
    int dev = 0;
    CUDA_CHECK(cudaGetDevice(&dev));
    CUDA_CHECK(cudaDeviceGetAttribute(&L->cc_major, cudaDevAttrComputeCapabilityMajor, dev));
    CUDA_CHECK(cudaMalloc(&L->mem, total));
    L->nbytes = w_bytes + s_bytes + z_bytes + b_bytes + h_bytes;
    uint8_t* base = static_cast<uint8_t*>(L->mem);
    L->w = base;
    CUDA_CHECK(cudaMemcpy(base, w_img.data(), w_bytes, cudaMemcpyHostToDevice));
    if (s_bytes) {
        L->scales = reinterpret_cast<float*>(base + o_s);
        CUDA_CHECK(cudaMemcpy(L->scales, scales_img.data(), s_bytes, cudaMemcpyHostToDevice));
    }
    if (z_bytes) {
        L->zeros = base + o_z;
        CUDA_CHECK(cudaMemcpy(L->zeros, zeros_img.data(), z_bytes, cudaMemcpyHostToDevice));
    }
    if (b_bytes) {
        L->bias = reinterpret_cast<float*>(base + o_b);
        CUDA_CHECK(cudaMemcpy(L->bias, bias.data(), b_bytes, cudaMemcpyHostToDevice));
    }
    if (h_bytes) {
        L->had_hm = reinterpret_cast<int8_t*>(base + o_h);
        CUDA_CHECK(cudaMemcpy(L->had_hm, h.hm.data(), h_bytes, cudaMemcpyHostToDevice));
    }
    return L;
}

std::size_t cuda_linear_workspace_bytes(const CudaLinear& L, long long M) {
    QUELLM_CHECK(M >= 0, "cuda_linear_workspace_bytes: M must be >= 0, got ", M);
    return workspace_layout(L, M).total;
}

std::string cuda_linear_kernel(const CudaLinear& L) { return L.name; }
std::size_t cuda_linear_nbytes(const CudaLinear& L) { return L.nbytes; }
void cuda_linear_force_simt(bool on) { g_force_simt = on; }

// ---- forward ----------------------------------------------------------------------------------

void cuda_linear_forward(const CudaLinear& L, const void* x, long long M, void* y, void* workspace, void* stream_ptr) {
    QUELLM_CHECK(M >= 0, "cuda_linear_forward: M must be >= 0, got ", M);
    if (M == 0) return;
    QUELLM_CHECK(x != nullptr && y != nullptr, "cuda_linear_forward: null x or y");
    QUELLM_CHECK(x != y, "cuda_linear_forward: y must not alias x");
    const Workspace ws = workspace_layout(L, M);
    QUELLM_CHECK(ws.total == 0 || workspace != nullptr, "cuda_linear_forward: a workspace of ", ws.total,
                 " bytes is required for M = ", M);
    QUELLM_CHECK(reinterpret_cast<uintptr_t>(workspace) % 256 == 0, "cuda_linear_forward: the workspace must be "
                 "256-byte aligned (as cudaMalloc returns)");
    cudaStream_t stream = static_cast<cudaStream_t>(stream_ptr);
    uint8_t* wsp = static_cast<uint8_t*>(workspace);

    GemmArgs a;
    a.M = M;
    a.N = L.N;
    a.K = L.K;
    a.G = L.G;
    a.NG = L.NG;
    a.act = L.act;
    a.x = x;
    a.xt = L.act;
    a.w = L.w;
    a.ldw = L.ldw;
    a.wbits = L.wbits;
    a.wcode = L.wcode;
    a.scales = L.scales;
    a.zeros = L.zeros;
    a.bias = L.bias;
    a.y = y;

    if (L.had_m) {
        FwhtCudaParams fp;
        fp.x = x;
        fp.out = wsp + ws.had;
        fp.x_dtype = L.act;
        // integer activations are quantized from f32 (as on the CPU); float kernels read act dtype
        fp.out_dtype = L.kind == LinearKind::Int ? DType::F32 : L.act;
        fp.rows = M;
        fp.n = L.K;
        fp.p = L.had_p;
        fp.m = L.had_m;
        fp.hm_device = reinterpret_cast<const signed char*>(L.had_hm);
        fp.scale = float(1.0 / std::sqrt(double(L.K)));  // = QuantLinear::forward
        fwht_cuda(fp, stream);
        a.x = fp.out;
        a.xt = fp.out_dtype;
    }

    const char* path = "simt";
    if (L.kind == LinearKind::Int) {
        a.q = reinterpret_cast<int8_t*>(wsp + ws.q);
        a.ldq = ws.ldq;
        a.sa = reinterpret_cast<float*>(wsp + ws.sa);
        if (L.aq == AQuant::Mxfp4) {
            a.sa_groups = L.K / 32;
            const int64_t warps = M * (L.K / 32);
            const unsigned blocks = unsigned(std::min<int64_t>(ceil_div(warps, 8), 65535));
            act_quant_mx4_kernel<<<blocks, 256, 0, stream>>>(a.x, a.xt, M, L.K, const_cast<int8_t*>(a.q), a.ldq,
                                                            const_cast<float*>(a.sa));
        } else {
            a.sa_groups = 1;
            a.a4 = L.aq == AQuant::Int4;
            const int qmax = L.aq == AQuant::Int8 ? 127 : 7;
            act_quant_rows_kernel<<<unsigned(std::min<long long>(M, 65535)), 256, 0, stream>>>(
                a.x, a.xt, M, L.K, qmax, L.a_clip, const_cast<int8_t*>(a.q), a.ldq, const_cast<float*>(a.sa));
        }
        CUDA_CHECK_LAUNCH();
        if (g_force_simt || !gemm_int_fast(a, L.cc_major, stream, &path)) launch_simt(a, L.kind, stream);
    } else {  // float or weight-only
        const bool fast = !g_force_simt && (L.kind == LinearKind::Wf ? gemm_wf_fast(a, stream, &path)
                                                                     : gemm_float_fast(a, stream, &path));
        if (!fast) {
            if (!g_force_simt && ceil_div(M, 64) <= 65535)
                launch_f32_tiled(a, L.kind, stream);
            else
                launch_simt(a, L.kind, stream);
        }
    }
    (void)path;
}

}  // namespace quellm::cuda
