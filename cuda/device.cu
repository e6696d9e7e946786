// device.cu — device discovery and a self-test of the host+device conversion helpers.
#include "common.cuh"
#include "cuda_api.h"

namespace quellm::cuda {

DeviceInfo device_info() {
    DeviceInfo info;
    cudaRuntimeGetVersion(&info.runtime_version);
    cudaDriverGetVersion(&info.driver_version);  // leaves 0 when no driver is installed
    cudaError_t err = cudaGetDeviceCount(&info.device_count);
    if (err != cudaSuccess) {
        cudaGetLastError();  // clear the sticky error so later calls start clean
        info.device_count = 0;
        info.reason = std::string("cudaGetDeviceCount failed: ") + cudaGetErrorString(err);
        return info;
    }
    if (info.device_count == 0) {
        info.reason = "no CUDA device found";
        return info;
    }
    cudaDeviceProp prop;
    err = cudaGetDeviceProperties(&prop, 0);
    if (err != cudaSuccess) {
        info.reason = std::string("cudaGetDeviceProperties failed: ") + cudaGetErrorString(err);
        return info;
    }
    info.name = prop.name;
    info.cc_major = prop.major;
    info.cc_minor = prop.minor;
    info.total_memory = prop.totalGlobalMem;
    info.available = true;
    return info;
}

namespace {
__global__ void convert_kernel(const float* x, std::size_t n, unsigned short* f16,
                               unsigned short* bf16) {
    const std::size_t i = std::size_t(blockIdx.x) * blockDim.x + threadIdx.x;
    if (i < n) {
        f16[i] = f32_to_f16(x[i]);
        bf16[i] = f32_to_bf16(x[i]);
    }
}
}  // namespace

void convert_selftest(const float* x_host, std::size_t n, unsigned short* f16_host,
                      unsigned short* bf16_host) {
    DeviceBuffer<float> x(n);
    DeviceBuffer<unsigned short> f16(n), bf16(n);
    CUDA_CHECK(cudaMemcpy(x.ptr, x_host, n * sizeof(float), cudaMemcpyHostToDevice));
    const unsigned threads = 256;
    const unsigned blocks = unsigned(ceil_div(int64_t(n), threads));
    if (blocks > 0) {
        convert_kernel<<<blocks, threads>>>(x.ptr, n, f16.ptr, bf16.ptr);
        CUDA_CHECK_LAUNCH();
    }
    CUDA_CHECK(cudaMemcpy(f16_host, f16.ptr, n * 2, cudaMemcpyDeviceToHost));
    CUDA_CHECK(cudaMemcpy(bf16_host, bf16.ptr, n * 2, cudaMemcpyDeviceToHost));
}

}  // namespace quellm::cuda

namespace quellm::cuda {

void* device_alloc(std::size_t bytes) {
    void* p = nullptr;
    CUDA_CHECK(cudaMalloc(&p, bytes ? bytes : 1));
    return p;
}

void device_free(void* ptr) noexcept {
    if (ptr) cudaFree(ptr);
}

void copy_to_device(void* dst, const void* src, std::size_t bytes) {
    CUDA_CHECK(cudaMemcpy(dst, src, bytes, cudaMemcpyHostToDevice));
}

void copy_to_host(void* dst, const void* src, std::size_t bytes) {
    CUDA_CHECK(cudaMemcpy(dst, src, bytes, cudaMemcpyDeviceToHost));
}

void synchronize() { CUDA_CHECK(cudaDeviceSynchronize()); }

}  // namespace quellm::cuda
