// runtime_common.cu — what the GPU Llama and Mamba runtimes share: device checks, device memory
// with readable out-of-memory errors, the model's stream, and the per-kernel-kind profiler.
#include <cstdlib>
#include <string>
#include <vector>

#include "quant_linear.h"
#include "runtime_internal.cuh"

namespace quellm::cuda {

namespace {
__global__ void probe_kernel(int* out) { *out = 1; }

std::string mib(std::size_t bytes) { return std::to_string((bytes + (1 << 20) - 1) >> 20) + " MiB"; }
}  // namespace

void require_runtime_device() {
    const DeviceInfo info = device_info();
    if (!info.available) throw std::runtime_error("no usable CUDA device: " + info.reason);
    if (info.cc_major < 8)
        throw std::runtime_error("the GPU runtime needs compute capability 8.0 or newer (Ampere+); " + info.name +
                                 " is " + std::to_string(info.cc_major) + "." + std::to_string(info.cc_minor));
    // A build compiled for other architectures fails here, not in the middle of a forward pass.
    int* d = nullptr;
    cudaError_t e = cudaMalloc(&d, sizeof(int));
    if (e == cudaSuccess) {
        probe_kernel<<<1, 1>>>(d);
        e = cudaGetLastError();
        if (e == cudaSuccess) e = cudaDeviceSynchronize();
        cudaFree(d);
    }
    if (e != cudaSuccess) {
        cudaGetLastError();
        std::string why = cudaGetErrorString(e);
        if (e == cudaErrorNoKernelImageForDevice || e == cudaErrorUnsupportedPtxVersion)
            why += " (this quellm build has no kernels for compute capability " + std::to_string(info.cc_major) + "." +
                   std::to_string(info.cc_minor) + "; rebuild with CUDAARCHS=" + std::to_string(info.cc_major) +
                   std::to_string(info.cc_minor) + ")";
        throw std::runtime_error("CUDA device " + info.name + " is not usable: " + why);
    }
}

void memory_info(std::size_t* free_bytes, std::size_t* total_bytes) {
    CUDA_CHECK(cudaMemGetInfo(free_bytes, total_bytes));
}

void DevMem::alloc(std::size_t bytes, const char* what) {
    release();
    void* p = nullptr;
    const cudaError_t e = cudaMalloc(&p, bytes ? bytes : 1);
    if (e != cudaSuccess) {
        cudaGetLastError();
        std::size_t free_b = 0, total_b = 0;
        cudaMemGetInfo(&free_b, &total_b);
        if (e == cudaErrorMemoryAllocation)
            throw std::runtime_error(std::string("out of GPU memory allocating ") + mib(bytes) + " for " + what + " (" +
                                     mib(free_b) + " free of " + mib(total_b) + ")");
        throw std::runtime_error(std::string("cudaMalloc of ") + mib(bytes) + " for " + what +
                                 " failed: " + cudaGetErrorString(e));
    }
    p_ = p;
    n_ = bytes;
}

DevMem upload(const void* host, std::size_t bytes, const char* what) {
    DevMem m(bytes, what);
    if (bytes) CUDA_CHECK(cudaMemcpy(m.get(), host, bytes, cudaMemcpyHostToDevice));
    return m;
}

DevMem upload_as(const float* host, std::size_t n, DType t, const char* what) {
    if (t == DType::F32) return upload(host, n * 4, what);
    std::vector<uint16_t> h(n);
    for (std::size_t i = 0; i < n; ++i) h[i] = t == DType::F16 ? f32_to_f16(host[i]) : f32_to_bf16(host[i]);
    return upload(h.data(), n * 2, what);
}

CudaLinearPtr upload_linear(const Linear& l, DType act) {
    if (l.q) return cuda_linear_upload(*l.q, act);
    QuantLinear q = QuantLinear::from_f32(l.w, l.out, l.in);
    if (l.b) q.set_bias(l.b);
    return cuda_linear_upload(q, act);
}

CudaLinearPtr upload_head(const Linear& l, DType act, DType* head_act) {
    // QUELLM_CUDA_F32_HEAD=1: run the lm_head with f32 activations (f32 logits straight from the
    // GEMM; a float head then keeps f32 weights — twice the bytes of the largest matrix of a small
    // model, read at every decode step). Default: the activation dtype, logits widened after.
    const char* env = std::getenv("QUELLM_CUDA_F32_HEAD");
    if (act != DType::F32 && env && std::string(env) == "1") {
        try {
            CudaLinearPtr p = upload_linear(l, DType::F32);
            *head_act = DType::F32;
            return p;
        } catch (const std::invalid_argument&) {
            // no f32-activation kernel for this head: use act
        }
    }
    *head_act = act;
    return upload_linear(l, act);
}

GpuModel::Impl::~Impl() {
    for (auto& p : pending) {
        cudaEventDestroy(p.a);
        cudaEventDestroy(p.b);
    }
    for (cudaEvent_t e : pool) cudaEventDestroy(e);
    if (stream) cudaStreamDestroy(stream);
}

cudaEvent_t GpuModel::Impl::event() {
    if (!pool.empty()) {
        cudaEvent_t e = pool.back();
        pool.pop_back();
        return e;
    }
    cudaEvent_t e;
    CUDA_CHECK(cudaEventCreate(&e));
    return e;
}

void GpuModel::Impl::collect() {
    for (auto& p : pending) {
        float ms = 0.0f;
        if (cudaEventElapsedTime(&ms, p.a, p.b) == cudaSuccess) totals[p.kind] += ms;
        pool.push_back(p.a);
        pool.push_back(p.b);
    }
    pending.clear();
}

GpuModel::GpuModel() : impl_(std::make_shared<Impl>()) {
    require_runtime_device();
    CUDA_CHECK(cudaStreamCreateWithFlags(&impl_->stream, cudaStreamNonBlocking));
    const char* env = std::getenv("QUELLM_CUDA_GRAPHS");
    graphs_allowed_ = !(env && (std::string(env) == "0" || std::string(env) == "off" || std::string(env) == "false"));
}

void GpuModel::set_profile(bool on) { impl_->profile = on; }

std::vector<std::pair<std::string, double>> GpuModel::profile_ms() const {
    return {impl_->totals.begin(), impl_->totals.end()};
}

void GpuModel::reset_profile() { impl_->totals.clear(); }

std::vector<std::pair<std::string, int>> GpuModel::linear_kernels() const { return kernels_; }

}  // namespace quellm::cuda
