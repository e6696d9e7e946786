// cuda_runtime.h (EMULATION, tests only) — lets a .cu file's kernels run on the CPU so their index
// math, shared memory use and synchronization can be checked without a GPU.
//
// cpp/tests/cuda_emu_rewrite.py turns `kernel<<<grid, block, smem, stream>>>(args)` into
// `emu::launch(kernel, emu::Cfg{grid, block, smem}, args)` and `extern __shared__ T name[];` into
// a pointer to the launch's dynamic shared memory; this header (found before the real one) supplies
// the rest. Blocks run one after another; each block's threads are fibers switched at barriers
// (__syncthreads / __syncwarp / __shfl_xor_sync), and `__shared__` variables are `static` (shared by
// the block's threads; blocks never overlap). A thread runs until its next barrier, so code between
// barriers is never interleaved: a missing barrier between a write and another thread's read shows
// up only when the order of threads matters (they run in index order). Only what quellm's runtime
// kernels use is emulated; anything else fails to compile.
#pragma once

#include <ucontext.h>

#include <cstddef>
#include <cstdio>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <functional>
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
// Graphs: while a stream is captured, launches (and emu::enqueue'd host work) are recorded as
// closures with their arguments by value — what a CUDA graph bakes in — and a graph launch replays
// them. So a value the host passes by argument instead of through device memory replays stale.
namespace emu {
struct Graph {
    std::vector<std::function<void()>> ops;
};
inline Graph* capturing = nullptr;
inline void enqueue(std::function<void()> op) {
    if (capturing) capturing->ops.push_back(std::move(op));
    else op();
}
}  // namespace emu
inline cudaError_t cudaStreamBeginCapture(cudaStream_t, cudaStreamCaptureMode) {
    if (emu::capturing) return cudaErrorEmulation;
    emu::capturing = new emu::Graph;
    return cudaSuccess;
}
inline cudaError_t cudaStreamEndCapture(cudaStream_t, cudaGraph_t* g) {
    *g = emu::capturing;
    emu::capturing = nullptr;
    return *g ? cudaSuccess : cudaErrorEmulation;
}
inline cudaError_t cudaGraphInstantiate(cudaGraphExec_t* e, cudaGraph_t g, unsigned long long = 0) {
    *e = new emu::Graph(*static_cast<emu::Graph*>(g));
    return cudaSuccess;
}
inline cudaError_t cudaGraphDestroy(cudaGraph_t g) {
    delete static_cast<emu::Graph*>(g);
    return cudaSuccess;
}
inline cudaError_t cudaGraphExecDestroy(cudaGraphExec_t e) {
    delete static_cast<emu::Graph*>(e);
    return cudaSuccess;
}
inline cudaError_t cudaGraphLaunch(cudaGraphExec_t e, cudaStream_t) {
    for (auto& op : static_cast<emu::Graph*>(e)->ops) op();
    return cudaSuccess;
}
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
    if (emu::capturing) return cudaErrorEmulation;  // not captured by this emulation
    if (n) std::memmove(d, s, n);
    return cudaSuccess;
}
inline cudaError_t cudaMemcpyAsync(void* d, const void* s, std::size_t n, cudaMemcpyKind k, cudaStream_t = nullptr) {
    return cudaMemcpy(d, s, n, k);
}
inline cudaError_t cudaMemset(void* d, int v, std::size_t n) {
    if (emu::capturing) return cudaErrorEmulation;
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

// Every CUDA thread of a block is a fiber (ucontext) on the calling host thread: a fiber runs until
// it reaches a barrier, then the next one runs; a barrier opens when all its fibers have arrived.
// Cheap switches, deterministic order, no locks.
struct Barrier {
    unsigned n = 0, count = 0, gen = 0;
};

struct Fiber {
    ucontext_t ctx;
    std::vector<unsigned char> stack;
    Barrier* waiting = nullptr;  // blocked on this barrier until its gen passes wait_gen
    unsigned wait_gen = 0;
    bool done = false;
};

struct Ctx {
    dim3 thread, block, bdim, gdim;
    Barrier* block_bar = nullptr;
    Barrier* warp_bar = nullptr;
    float* warp_buf = nullptr;  // 32 floats per warp (shuffles)
    Fiber* self = nullptr;
};
inline Ctx ctx;                       // the running fiber's view
inline ucontext_t scheduler_ctx;
inline std::vector<unsigned char> dyn_smem;

inline void barrier_wait(Barrier* b) {
    if (++b->count == b->n) {  // last to arrive: open it and go on
        b->count = 0;
        ++b->gen;
        return;
    }
    Ctx saved = ctx;
    saved.self->waiting = b;
    saved.self->wait_gen = b->gen;
    swapcontext(&saved.self->ctx, &scheduler_ctx);
    ctx = saved;
}

struct Cfg {
    dim3 grid, block;
    std::size_t smem = 0;
    cudaStream_t stream = nullptr;
};

struct FiberStart {
    std::function<void()> fn;
    Fiber* f;
};
inline void fiber_entry(unsigned lo, unsigned hi) {
    auto* s = reinterpret_cast<FiberStart*>((uintptr_t(hi) << 32) | uintptr_t(lo));
    s->fn();
    s->f->done = true;
    swapcontext(&s->f->ctx, &scheduler_ctx);
}

// One block: its fibers set up, then run round robin until all are done.
template <class F, class... Args>
__attribute__((noinline)) void run_block(const Cfg& c, dim3 blk, std::vector<Fiber>& fibers, F kernel, Args... args) {
    const unsigned nt = c.block.x * c.block.y * c.block.z, nw = (nt + 31) / 32;
    dyn_smem.assign(c.smem + 16, 0xCD);  // garbage, as on a GPU
    Barrier bb;
    bb.n = nt;
    std::vector<Barrier> wb(nw);
    for (unsigned w = 0; w < nw; ++w) wb[w].n = std::min(32u, nt - 32 * w);
    std::vector<float> buf(32 * nw);
    std::vector<Ctx> views(nt);
    std::vector<FiberStart> starts(nt);
    for (unsigned t = 0; t < nt; ++t) {
        Fiber& f = fibers[t];
        f.done = false;
        f.waiting = nullptr;
        Ctx& v = views[t];
        v.thread = dim3(t % c.block.x, (t / c.block.x) % c.block.y, t / (c.block.x * c.block.y));
        v.block = blk;
        v.bdim = c.block;
        v.gdim = c.grid;
        v.block_bar = &bb;
        v.warp_bar = &wb[t / 32];
        v.warp_buf = buf.data() + 32 * (t / 32);
        v.self = &f;
        starts[t].fn = [&views, t, kernel, args...] {
            ctx = views[t];
            kernel(args...);
        };
        starts[t].f = &f;
        getcontext(&f.ctx);
        f.ctx.uc_stack.ss_sp = f.stack.data();
        f.ctx.uc_stack.ss_size = f.stack.size();
        f.ctx.uc_link = nullptr;
        const uintptr_t p = reinterpret_cast<uintptr_t>(&starts[t]);
        makecontext(&f.ctx, reinterpret_cast<void (*)()>(fiber_entry), 2, unsigned(p & 0xffffffffu), unsigned(p >> 32));
    }
    for (;;) {
        bool all_done = true, progressed = false;
        for (unsigned t = 0; t < nt; ++t) {
            Fiber& f = fibers[t];
            if (f.done) continue;
            all_done = false;
            if (f.waiting && f.waiting->gen == f.wait_gen) continue;  // its barrier is still closed
            f.waiting = nullptr;
            progressed = true;
            swapcontext(&scheduler_ctx, &f.ctx);
        }
        if (all_done) return;
        if (!progressed) {
            std::fprintf(stderr, "cuda emulation: deadlock (threads wait at different barriers)\n");
            std::abort();
        }
    }
}

template <class F, class... Args>
void launch(F kernel, Cfg c, Args... args) {
    enqueue([=] {
        std::vector<Fiber> fibers(c.block.x * c.block.y * c.block.z);
        for (auto& f : fibers) f.stack.resize(256 * 1024);
        for (unsigned bz = 0; bz < c.grid.z; ++bz)
            for (unsigned by = 0; by < c.grid.y; ++by)
                for (unsigned bx = 0; bx < c.grid.x; ++bx) run_block(c, dim3(bx, by, bz), fibers, kernel, args...);
    });
}

}  // namespace emu

#define threadIdx (::emu::ctx.thread)
#define blockIdx (::emu::ctx.block)
#define blockDim (::emu::ctx.bdim)
#define gridDim (::emu::ctx.gdim)

inline void __syncthreads() { emu::barrier_wait(emu::ctx.block_bar); }
inline void __syncwarp(unsigned = 0xffffffffu) { emu::barrier_wait(emu::ctx.warp_bar); }
inline float __shfl_xor_sync(unsigned, float v, int o) {
    const unsigned lane = (threadIdx.x + threadIdx.y * blockDim.x) % 32;
    float* buf = emu::ctx.warp_buf;
    buf[lane] = v;
    __syncwarp();
    const float r = buf[lane ^ unsigned(o)];
    __syncwarp();
    return r;
}
template <class T>
inline T min(T a, T b) { return b < a ? b : a; }
template <class T>
inline T max(T a, T b) { return a < b ? b : a; }
