// common.cuh — CUDA error checking and small device utilities shared by the .cu files.
#pragma once

#include <cuda_runtime.h>

#include <stdexcept>
#include <string>

#include "common.h"

namespace quellm::cuda {

[[noreturn]] inline void throw_cuda(cudaError_t err, const char* what, const char* file, int line) {
    const char* base = file;
    for (const char* p = file; *p; ++p)
        if (*p == '/') base = p + 1;
    throw std::runtime_error(std::string(base) + ":" + std::to_string(line) + ": CUDA error in " +
                             what + ": " + cudaGetErrorString(err));
}

}  // namespace quellm::cuda

#define CUDA_CHECK(call)                                                              \
    do {                                                                              \
        cudaError_t err_ = (call);                                                    \
        if (err_ != cudaSuccess) ::quellm::cuda::throw_cuda(err_, #call, __FILE__, __LINE__); \
    } while (0)

// After every kernel launch: catches bad launch configurations at the call site.
#define CUDA_CHECK_LAUNCH() CUDA_CHECK(cudaGetLastError())

#include "cuda_api.h"

// Element access for the DType-tagged buffers of the API: loads convert to f32, stores round
// from f32 (RNE) — the same converters the CPU code uses.
namespace quellm::cuda {
__device__ __forceinline__ float load_as_f32(const void* p, int64_t i, DType t) {
    switch (t) {
        case DType::F16: return f16_to_f32(static_cast<const uint16_t*>(p)[i]);
        case DType::BF16: return bf16_to_f32(static_cast<const uint16_t*>(p)[i]);
        default: return static_cast<const float*>(p)[i];
    }
}

__device__ __forceinline__ void store_from_f32(void* p, int64_t i, float v, DType t) {
    switch (t) {
        case DType::F16: static_cast<uint16_t*>(p)[i] = f32_to_f16(v); break;
        case DType::BF16: static_cast<uint16_t*>(p)[i] = f32_to_bf16(v); break;
        default: static_cast<float*>(p)[i] = v;
    }
}
}  // namespace quellm::cuda

// RAII device buffer for launchers and self-tests.
namespace quellm::cuda {
template <typename T>
struct DeviceBuffer {
    T* ptr = nullptr;
    explicit DeviceBuffer(std::size_t n) { CUDA_CHECK(cudaMalloc(&ptr, n * sizeof(T) + (n == 0))); }
    ~DeviceBuffer() { if (ptr) cudaFree(ptr); }
    DeviceBuffer(const DeviceBuffer&) = delete;
    DeviceBuffer& operator=(const DeviceBuffer&) = delete;
};
}  // namespace quellm::cuda
