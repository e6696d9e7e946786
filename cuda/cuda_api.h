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

// Runs the f16/bf16 conversion helpers of common.h on the device over `n` f32 inputs and writes
// their bit patterns; tests compare them with the host results of the same helpers.
void convert_selftest(const float* x_host, std::size_t n, unsigned short* f16_host,
                      unsigned short* bf16_host);

}  // namespace quellm::cuda
