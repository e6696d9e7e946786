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

// Tensor-core and GEMV kernels (cuda/gemm_mma.cu). Each returns false, launching nothing, when
// the shape is outside what it handles; the caller then runs the SIMT kernel.
bool gemm_int_fast(const GemmArgs& a, int cc_major, cudaStream_t stream, const char** path);
bool gemm_wf_fast(const GemmArgs& a, cudaStream_t stream, const char** path);
bool gemm_float_fast(const GemmArgs& a, cudaStream_t stream, const char** path);

}  // namespace quellm::cuda
