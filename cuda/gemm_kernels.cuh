// gemm_kernels.cuh — the host↔device contract between the CUDA linear layer (cuda/gemm.cu:
// upload, workspace, transform, activation quantization, dispatch) and its GEMM kernels
// (cuda/gemm.cu: SIMT references; cuda/gemm_mma.cu: tensor-core tiles and the GEMV kernels).
#pragma once

#include <cstdint>

#include "common.cuh"
#include "gemm_hd.h"

namespace quellm::cuda {

// One GEMM y (M, N) = x·Wᵀ (+ b) after the transform and the activation quantizer.
// Device pointers; "elements" / "bytes" say the unit of each stride.
struct GemmArgs {
    int64_t M = 0, N = 0, K = 0;
    int64_t G = 0, NG = 1;           // weight group size along K, groups per row (float: K, 1)
    DType act = DType::F32;          // dtype of y, and of x for the float / weight-only kernels
    const void* x = nullptr;         // float / weight-only: (M, K) elements of dtype xt, row stride K
    DType xt = DType::F32;
    const int8_t* q = nullptr;       // integer: (M, ldq) quantized activations, zero past K
    int64_t ldq = 0;                 // bytes, multiple of 16
    const float* sa = nullptr;       // integer: (M, sa_groups) activation scales
    int64_t sa_groups = 1;           // 1 (per token) or NG (MXFP4 activations, G = 32)
    bool a4 = false;                 // integer activations lie in [−7, 7] (int4)
    const void* w = nullptr;         // float: (N, ldw) elements of dtype act; else (N, ldw) bytes
    int64_t ldw = 0;                 // float: elements; else bytes (multiple of 16, zero padded)
    int wbits = 32;                  // 32 (float), 8, 4
    WCode wcode = WCode::S8;         // integer kernels: how the weight codes decode
    const float* scales = nullptr;   // (N, NG)
    const uint8_t* zeros = nullptr;  // weight-only int4: (N, NG) zero points (8 when symmetric)
    const float* bias = nullptr;     // (N) or null
    void* y = nullptr;               // (M, N) dtype act
};

// Tensor-core / GEMV dispatch (cuda/gemm_mma.cu). Each returns false, launching nothing, when
// the shape is outside what its kernels handle; the caller then runs the SIMT kernel.
bool gemm_int_fast(const GemmArgs& a, int cc_major, cudaStream_t stream, const char** path);
bool gemm_wf_fast(const GemmArgs& a, cudaStream_t stream, const char** path);
bool gemm_float_fast(const GemmArgs& a, cudaStream_t stream, const char** path);

// GEMV kernels for M <= kGemvRows (cuda/gemm_gemv.cu); preconditions: integer G % E == 0 and
// weight-only G % E == 0 (E = 16 int8, 32 4-bit), float K % 8 == 0, x 16-byte aligned.
constexpr int64_t kGemvRows = 8;
constexpr int kGemvMR = 4;  // activation rows per GEMV pass
void gemm_int_gemv(const GemmArgs& a, cudaStream_t stream);
void gemm_wf_gemv(const GemmArgs& a, cudaStream_t stream);
void gemm_float_gemv(const GemmArgs& a, cudaStream_t stream);

inline bool aligned(const void* p, unsigned bytes) { return reinterpret_cast<uintptr_t>(p) % bytes == 0; }

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

}  // namespace quellm::cuda
