// cuda_api.h — host-side declarations of quellm's CUDA entry points, with no CUDA types, so
// bindings.cpp compiles with or without nvcc. Every function here is defined in cuda/*.cu and
// exists only when the build defines QUELLM_HAS_CUDA.
#pragma once

#include <cstddef>
#include <string>

namespace quellm::cuda {

struct DeviceInfo {
    bool available = false;   // a usable device exists
    std::string reason;       // why not, when !available
    int device_count = 0;
    int runtime_version = 0;  // e.g. 13000
    int driver_version = 0;   // 0 when no driver is installed
    std::string name;         // of device 0
    int cc_major = 0, cc_minor = 0;
    std::size_t total_memory = 0;
};

DeviceInfo device_info();

// Element types of device buffers crossing the API (f16 and bf16 as raw 16-bit patterns).
enum class DType : int { F32 = 0, F16 = 1, BF16 = 2 };

// ---- device memory (used by the Python DeviceArray) -----------------------------------------
void* device_alloc(std::size_t bytes);
void device_free(void* ptr) noexcept;
void copy_to_device(void* dst, const void* src, std::size_t bytes);
void copy_to_host(void* dst, const void* src, std::size_t bytes);
void synchronize();

// ---- FWHT (cuda/fwht.cu): out = scale · (H_m ⊗ H_p) · x per row, see cpp/fwht.h ----------------
struct FwhtCudaParams {
    const void* x;        // device (rows, n), dtype x_dtype
    void* out;            // device (rows, n), dtype out_dtype; may equal x
    DType x_dtype = DType::F32, out_dtype = DType::F32;
    long long rows = 0, n = 0, p = 1;  // n = m · p
    int m = 1;
    const signed char* hm = nullptr;    // HOST (m, m) ±1 factor; copied to the device per call
    float scale = 1.0f;
};
void fwht_cuda(const FwhtCudaParams& params, void* stream);  // stream: cudaStream_t or nullptr

// Runs the f16/bf16 conversion helpers of common.h on the device over `n` f32 inputs and writes
// their bit patterns; tests compare them with the host results of the same helpers.
void convert_selftest(const float* x_host, std::size_t n, unsigned short* f16_host,
                      unsigned short* bf16_host);

}  // namespace quellm::cuda
