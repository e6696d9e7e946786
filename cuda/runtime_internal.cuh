// runtime_internal.cuh — what the GPU runtime's .cu files share: kernel launchers
// (runtime_kernels.cu), device buffers, the per-model stream and profiler (runtime_common.cu),
// and the per-state scratch and CUDA-graph bookkeeping. Not part of the host-visible API.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "common.cuh"
#include "runtime.h"
#include "runtime/llama.h"

namespace quellm::cuda {

// ---- device memory --------------------------------------------------------------------------
// Owning device allocation that reports an out-of-memory with the size and what it was for.
class DevMem {
  public:
    DevMem() = default;
    DevMem(std::size_t bytes, const char* what) { alloc(bytes, what); }
    ~DevMem() { release(); }
    DevMem(const DevMem&) = delete;
    DevMem& operator=(const DevMem&) = delete;
    DevMem(DevMem&& o) noexcept : p_(o.p_), n_(o.n_) { o.p_ = nullptr; o.n_ = 0; }
    DevMem& operator=(DevMem&& o) noexcept {
        if (this != &o) {
            release();
            p_ = o.p_;
            n_ = o.n_;
            o.p_ = nullptr;
            o.n_ = 0;
        }
        return *this;
    }
    void alloc(std::size_t bytes, const char* what);
    void release() noexcept {
        if (p_) cudaFree(p_);
        p_ = nullptr;
        n_ = 0;
    }
    void* get() const { return p_; }
    template <class T>
    T* as() const { return static_cast<T*>(p_); }
    std::size_t size() const { return n_; }

  private:
    void* p_ = nullptr;
    std::size_t n_ = 0;
};

// Copy host data to a new device allocation.
DevMem upload(const void* host, std::size_t bytes, const char* what);
// f32 host values → a device array in dtype t (f32 / f16 / bf16).
DevMem upload_as(const float* host, std::size_t n, DType t, const char* what);

// A runtime Linear (cpp/runtime/llama.h) on the device: its QuantLinear as it is, or float
// weights wrapped in one (kept in the activation dtype by the GEMM). upload_head is the lm_head:
// in the activation dtype, or with f32 activations when QUELLM_CUDA_F32_HEAD=1 (and the GEMM has
// such a kernel); *head_act says which.
CudaLinearPtr upload_linear(const Linear& l, DType act);
CudaLinearPtr upload_head(const Linear& l, DType act, DType* head_act);

inline std::size_t dtype_size(DType t) { return t == DType::F32 ? 4 : 2; }

// ---- the model's stream and profiler ---------------------------------------------------------
struct GpuModel::Impl {
    cudaStream_t stream = nullptr;
    bool profile = false;
    struct Pending {
        std::string kind;
        cudaEvent_t a, b;
    };
    std::vector<Pending> pending;
    std::vector<cudaEvent_t> pool;
    std::map<std::string, double> totals;
    ~Impl();
    cudaEvent_t event();
    void collect();  // after the stream is synchronized: add the pending pairs to totals
};

// A launch site: with profiling on, brackets the launches made while it lives with a pair of
// events attributed to `kind` (collected after the forward's final synchronization).
class Prof {
  public:
    Prof(GpuModel::Impl& im, const char* kind) : im_(im), kind_(kind) {
        if (im_.profile) {
            a_ = im_.event();
            CUDA_CHECK(cudaEventRecord(a_, im_.stream));
        }
    }
    ~Prof() {
        if (im_.profile && a_) {
            cudaEvent_t b = im_.event();
            cudaEventRecord(b, im_.stream);
            im_.pending.push_back({kind_, a_, b});
        }
    }
    Prof(const Prof&) = delete;
    Prof& operator=(const Prof&) = delete;

  private:
    GpuModel::Impl& im_;
    const char* kind_;
    cudaEvent_t a_ = nullptr;
};

// ---- per-state scratch and the decode graph ------------------------------------------------------
// Activation buffers of a state, grown on demand (never during a graph capture: a forward first
// asks for every buffer it needs, then enqueues). `gen` changes whenever a buffer moves, which
// invalidates a captured graph.
struct Scratch {
    std::map<std::string, DevMem> bufs;
    int gen = 0;
    void* get(const std::string& name, std::size_t bytes) {
        DevMem& m = bufs[name];
        if (m.size() < bytes || !m.get()) {
            m.alloc(bytes, name.c_str());
            ++gen;
        }
        return m.get();
    }
    std::size_t nbytes() const {
        std::size_t n = 0;
        for (auto& kv : bufs) n += kv.second.size();
        return n;
    }
};

// One captured decode step (T = 1) of a state. The graph is bound to the state's buffers; it is
// recaptured when they move, and abandoned (plain launches from then on) if capture fails.
struct DecodeGraph {
    cudaGraphExec_t exec = nullptr;
    int gen = -1;
    bool broken = false;
    DecodeGraph() = default;
    DecodeGraph(const DecodeGraph&) = delete;
    DecodeGraph& operator=(const DecodeGraph&) = delete;
    ~DecodeGraph() { drop(); }
    void drop() {
        if (exec) cudaGraphExecDestroy(exec);
        exec = nullptr;
        gen = -1;
    }
};

// Enqueue `body` on stream s: as a replay of g (captured first if needed) when use_graph, else as
// plain launches. Returns true if the graph ran.
template <class F>
bool run_maybe_graphed(DecodeGraph& g, int gen, bool use_graph, cudaStream_t s, F&& body) {
    if (use_graph && !g.broken && (g.exec == nullptr || g.gen != gen)) {
        g.drop();
        cudaGraph_t graph = nullptr;
        bool ok = cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal) == cudaSuccess;
        if (ok) {
            try {
                body();
            } catch (...) {
                ok = false;
            }
            ok = cudaStreamEndCapture(s, &graph) == cudaSuccess && ok && graph != nullptr;
        }
        if (ok) ok = cudaGraphInstantiate(&g.exec, graph, 0) == cudaSuccess;
        if (graph) cudaGraphDestroy(graph);
        if (!ok) {
            cudaGetLastError();  // capture errors are not sticky; clear the last one
            g.exec = nullptr;
            g.broken = true;     // fall back to plain launches for this state
        } else {
            g.gen = gen;
        }
    }
    if (use_graph && g.exec) {
        CUDA_CHECK(cudaGraphLaunch(g.exec, s));
        return true;
    }
    body();
    return false;
}

// ---- kernel launchers (runtime_kernels.cu); device pointers, `s` the stream -----------------
// x (N, D) f32 = table[tokens] (table (V, D) in dtype tdt).
void launch_embed(const int32_t* tokens, const void* table, DType tdt, int64_t N, int64_t D, float* x, cudaStream_t s);

// x (N, D) f32 += y (dtype act, may be null); then, if h: h = rmsnorm(x) · w in dtype hdt for every
// row (last_only false), or only for each sequence's last row t = T − 1, written to h row b.
void launch_add_rmsnorm(float* x, const void* y, DType act, const float* w, int64_t N, int64_t D, float eps, void* h,
                        DType hdt, int64_t T, bool last_only, cudaStream_t s);

// KV cache of one layer: B sequences × S positions × Hk heads.
struct KvLayer {
    void* k = nullptr;   // act (B, S, Hk, Hd) when bits == 0, else codes (B, S, Hk, row_bytes)
    void* v = nullptr;
    float* kp = nullptr; // (B, S, Hk, 2) scale, zero (quantized only)
    float* vp = nullptr;
};
struct KvShape {
    int64_t B = 0, S = 0, H = 0, Hk = 0, Hd = 0;
    int bits = 0;
    float clip = 1.0f;
    bool hadamard = false;
    int64_t window = 0;
    __host__ __device__ int64_t row_bytes() const { return bits == 4 ? Hd / 2 : Hd; }
};

// RoPE on q (N, H·Hd) in place and on k, the Hadamard rotation of q, k, v when kv.hadamard, then
// k, v (N, Hk·Hd) appended to the cache at positions lens[b] + t. err is set to 1 for a
// non-finite key/value that must be quantized.
void launch_rope_store(void* q, const void* k, const void* v, DType act, const float* inv_freq, const int32_t* lens,
                       int64_t T, const KvShape& kv, const KvLayer& cache, int* err, cudaStream_t s);

// Causal GQA attention of q (N = B·T, H·Hd) over the cache (positions lens[b] + t already stored)
// → att (N, H·Hd) act (rotated back when kv.hadamard). nsplit > 1 splits every query's keys into
// nsplit fixed chunks of ceil(S / nsplit) positions (decode), merged by a second kernel through
// `partial` (nsplit · N · H · (Hd + 2) floats).
void launch_attention(const void* q, DType act, const int32_t* lens, int64_t T, const KvShape& kv, const KvLayer& cache,
                      int nsplit, float* partial, void* att, cudaStream_t s);
int attention_splits(int64_t S, int64_t B, int64_t H);  // the nsplit decode uses for capacity S

// g = silu(g) · u over n elements (act).
void launch_swiglu(void* g, const void* u, int64_t n, DType act, cudaStream_t s);
// dst (N, ncols) = src (N, ld)[:, col0 : col0 + ncols], act.
void launch_copy_cols(const void* src, int64_t ld, int64_t col0, int64_t ncols, void* dst, int64_t N, DType act,
                      cudaStream_t s);
// f32 out (n) = act in (n).
void launch_to_f32(const void* in, DType act, int64_t n, float* out, cudaStream_t s);
// lens[b] += T for b < B.
void launch_advance(int32_t* lens, int64_t B, int64_t T, cudaStream_t s);

}  // namespace quellm::cuda
