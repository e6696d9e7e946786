// cuda_runtime.h (EMULATION, tests only) — lets a .cu file's kernels run on the CPU so their index
// math, shared memory use and synchronization can be checked without a GPU.
//
// cpp/tests/cuda_emu_rewrite.py turns `kernel<<<grid, block, smem, stream>>>(args)` into
// `emu::launch(kernel, emu::Cfg{grid, block, smem}, args)` and `extern __shared__ T name[];` into
// a pointer to the launch's dynamic shared memory; this header (found before the real one) supplies
// the rest. Blocks run one after another; each block's threads are real threads, so
// __syncthreads / __syncwarp / __shfl_xor_sync are barriers, and `__shared__` variables are
// `static` (shared by the block's threads; blocks never overlap). Only what quellm's runtime
// kernels use is emulated; anything else fails to compile.
#pragma once

#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __shared__ static

struct dim3 {
    unsigned x = 1, y = 1, z = 1;
    dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};

enum cudaError_t {
    cudaSuccess = 0,
    cudaErrorEmulation = 1,
    cudaErrorMemoryAllocation = 2,
    cudaErrorNoKernelImageForDevice = 209,
    cudaErrorUnsupportedPtxVersion = 222
};
inline const char* cudaGetErrorString(cudaError_t e) { return e == cudaSuccess ? "no error" : "emulation error"; }
inline cudaError_t cudaGetLastError() { return cudaSuccess; }
using cudaStream_t = void*;
using cudaEvent_t = void*;
using cudaGraph_t = void*;
using cudaGraphExec_t = void*;
enum cudaStreamCaptureMode { cudaStreamCaptureModeThreadLocal = 0 };
enum cudaFuncAttribute { cudaFuncAttributeMaxDynamicSharedMemorySize = 0 };
inline cudaError_t cudaEventRecord(cudaEvent_t, cudaStream_t) { return cudaSuccess; }
inline cudaError_t cudaGraphExecDestroy(cudaGraphExec_t) { return cudaSuccess; }
inline cudaError_t cudaGraphDestroy(cudaGraph_t) { return cudaSuccess; }
inline cudaError_t cudaGraphLaunch(cudaGraphExec_t, cudaStream_t) { return cudaErrorEmulation; }
inline cudaError_t cudaStreamBeginCapture(cudaStream_t, cudaStreamCaptureMode) { return cudaErrorEmulation; }
inline cudaError_t cudaStreamEndCapture(cudaStream_t, cudaGraph_t*) { return cudaErrorEmulation; }
inline cudaError_t cudaGraphInstantiate(cudaGraphExec_t*, cudaGraph_t, unsigned long long = 0) { return cudaErrorEmulation; }
template <class F>
cudaError_t cudaFuncSetAttribute(F, cudaFuncAttribute, int) { return cudaSuccess; }
// The "device" is host memory; streams run synchronously (launches complete before returning).
enum cudaMemcpyKind { cudaMemcpyHostToDevice = 1, cudaMemcpyDeviceToHost = 2, cudaMemcpyDeviceToDevice = 3 };
constexpr unsigned cudaStreamNonBlocking = 1;
inline cudaError_t cudaStreamCreateWithFlags(cudaStream_t* s, unsigned) {
    static int dummy;
    *s = &dummy;
    return cudaSuccess;
}
inline cudaError_t cudaStreamDestroy(cudaStream_t) { return cudaSuccess; }
inline cudaError_t cudaStreamSynchronize(cudaStream_t) { return cudaSuccess; }
inline cudaError_t cudaDeviceSynchronize() { return cudaSuccess; }
inline cudaError_t cudaEventCreate(cudaEvent_t* e) {
    static int dummy;
    *e = &dummy;
    return cudaSuccess;
}
inline cudaError_t cudaEventDestroy(cudaEvent_t) { return cudaSuccess; }
inline cudaError_t cudaEventElapsedTime(float* ms, cudaEvent_t, cudaEvent_t) {
    *ms = 0.001f;
    return cudaSuccess;
}
inline cudaError_t cudaMemcpy(void* d, const void* s, std::size_t n, cudaMemcpyKind) {
    if (n) std::memmove(d, s, n);
    return cudaSuccess;
}
inline cudaError_t cudaMemcpyAsync(void* d, const void* s, std::size_t n, cudaMemcpyKind k, cudaStream_t = nullptr) {
    return cudaMemcpy(d, s, n, k);
}
inline cudaError_t cudaMemset(void* d, int v, std::size_t n) {
    std::memset(d, v, n);
    return cudaSuccess;
}
inline cudaError_t cudaMemGetInfo(std::size_t* f, std::size_t* t) {
    *f = std::size_t(1) << 30;
    *t = std::size_t(2) << 30;
    return cudaSuccess;
}
struct cudaDeviceProp {
    char name[256] = "quellm CUDA emulation";
    int major = 9, minor = 0;
    std::size_t totalGlobalMem = std::size_t(2) << 30;
};
inline cudaError_t cudaGetDeviceCount(int* n) {
    *n = 1;
    return cudaSuccess;
}
inline cudaError_t cudaGetDeviceProperties(cudaDeviceProp* p, int) {
    *p = cudaDeviceProp{};
    return cudaSuccess;
}
inline cudaError_t cudaRuntimeGetVersion(int* v) {
    *v = 13000;
    return cudaSuccess;
}
inline cudaError_t cudaDriverGetVersion(int* v) {
    *v = 13000;
    return cudaSuccess;
}
inline cudaError_t cudaMalloc(void** p, std::size_t n) {
    *p = std::calloc(n ? n : 1, 1);
    return *p ? cudaSuccess : cudaErrorEmulation;
}
template <class T>
cudaError_t cudaMalloc(T** p, std::size_t n) { return cudaMalloc(reinterpret_cast<void**>(p), n); }
inline cudaError_t cudaFree(void* p) {
    std::free(p);
    return cudaSuccess;
}

namespace emu {

struct Barrier {
    std::mutex m;
    std::condition_variable cv;
    unsigned n = 0, count = 0, gen = 0;
    void wait() {
        std::unique_lock<std::mutex> lk(m);
        const unsigned g = gen;
        if (++count == n) {
            count = 0;
            ++gen;
            cv.notify_all();
        } else {
            cv.wait(lk, [&] { return gen != g; });
        }
    }
};

struct Ctx {
    dim3 thread, block, bdim, gdim;
    Barrier* block_bar = nullptr;
    Barrier* warp_bar = nullptr;
    float* warp_buf = nullptr;  // 32 floats per warp (shuffles)
};
inline thread_local Ctx ctx;
inline std::vector<unsigned char> dyn_smem;

struct Cfg {
    dim3 grid, block;
    std::size_t smem = 0;
    cudaStream_t stream = nullptr;
};

template <class F, class... Args>
void launch(F kernel, Cfg c, Args... args) {
    const unsigned nt = c.block.x * c.block.y * c.block.z, nw = (nt + 31) / 32;
    for (unsigned bz = 0; bz < c.grid.z; ++bz)
        for (unsigned by = 0; by < c.grid.y; ++by)
            for (unsigned bx = 0; bx < c.grid.x; ++bx) {
                dyn_smem.assign(c.smem + 16, 0xCD);  // garbage, as on a GPU
                Barrier bb;
                bb.n = nt;
                std::vector<Barrier> wb(nw);
                for (unsigned w = 0; w < nw; ++w) wb[w].n = std::min(32u, nt - 32 * w);
                std::vector<float> buf(32 * nw);
                std::vector<std::thread> threads;
                for (unsigned t = 0; t < nt; ++t)
                    threads.emplace_back([&, t] {
                        ctx.thread = dim3(t % c.block.x, (t / c.block.x) % c.block.y, t / (c.block.x * c.block.y));
                        ctx.block = dim3(bx, by, bz);
                        ctx.bdim = c.block;
                        ctx.gdim = c.grid;
                        ctx.block_bar = &bb;
                        ctx.warp_bar = &wb[t / 32];
                        ctx.warp_buf = buf.data() + 32 * (t / 32);
                        kernel(args...);
                    });
                for (auto& th : threads) th.join();
            }
}

}  // namespace emu

#define threadIdx (::emu::ctx.thread)
#define blockIdx (::emu::ctx.block)
#define blockDim (::emu::ctx.bdim)
#define gridDim (::emu::ctx.gdim)

inline void __syncthreads() { emu::ctx.block_bar->wait(); }
inline void __syncwarp(unsigned = 0xffffffffu) { emu::ctx.warp_bar->wait(); }
inline float __shfl_xor_sync(unsigned, float v, int o) {
    const unsigned lane = (threadIdx.x + threadIdx.y * blockDim.x) % 32;
    emu::ctx.warp_buf[lane] = v;
    emu::ctx.warp_bar->wait();
    const float r = emu::ctx.warp_buf[lane ^ unsigned(o)];
    emu::ctx.warp_bar->wait();
    return r;
}
template <class T>
inline T min(T a, T b) { return b < a ? b : a; }
template <class T>
inline T max(T a, T b) { return a < b ? b : a; }
