// runtime.h — the GPU runtime: Llama-family and Mamba-1 forward passes on the device, built once
// from the host models (LlamaConfig/LlamaWeights, MambaConfig/MambaWeights and their
// QuantLinears). Host-visible declarations only (no CUDA types), so bindings compile without nvcc;
// everything is defined in cuda/runtime_*.cu and exists only with QUELLM_HAS_CUDA.
//
// Numbers on the device:
//   * the residual stream is f32 (as residual_in_fp32), everything between two kernels that feeds
//     a linear is in the activation dtype `act` (f16 by default, or bf16; f32 runs the whole model
//     in f32, float weights included — the exactness check against the CPU runtime); kernels
//     compute in f32;
//   * every linear (q/k/v/o/gate/up/down, Mamba's in/x/dt/out, lm_head) is a CudaLinear
//     (cuda/gemm.cu): float weights uploaded as f16/bf16, quantized ones packed, never expanded;
//   * the lm_head writes logits in act, widened to f32 for the host (QUELLM_CUDA_F32_HEAD=1: f32
//     activations and weights for the head, f32 logits straight from the GEMM);
//   * the KV cache holds act-dtype keys/values, or packed int8/int4 codes with an f32 (scale,
//     zero) per (token, KV head) — the semantics of cpp/runtime/kv_quant.h, Hadamard included;
//   * Mamba conv and SSM states are f32.
// Decode steps (T = 1) of a state are captured once in a CUDA graph and replayed: token ids and
// positions are read from device memory, so nothing in the graph changes between steps.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "cuda_api.h"

namespace quellm {
struct LlamaConfig;
struct LlamaWeights;
struct MambaConfig;
struct MambaWeights;
}  // namespace quellm

namespace quellm::cuda {

struct RuntimeOptions {
    DType act = DType::F16;  // activation dtype: F16, BF16 or F32
    bool graphs = true;      // capture decode steps in CUDA graphs (also off with QUELLM_CUDA_GRAPHS=0)
};

// Throws std::runtime_error with a readable reason when no usable device is present, or it is
// older than compute capability 8.0, or this build has no kernels for it.
void require_runtime_device();
// Free and total device memory in bytes (cudaMemGetInfo).
void memory_info(std::size_t* free_bytes, std::size_t* total_bytes);

// Sequences' state on the device: KV caches (Llama) or conv + SSM states (Mamba) of B sequences
// that advance together, with capacity S positions (Llama).
class GpuState {
  public:
    virtual ~GpuState() = default;
    int64_t batch() const { return B_; }
    int64_t capacity() const { return S_; }
    int64_t len() const { return len_; }
    virtual void reset() = 0;              // len 0 (Mamba: states zeroed)
    virtual void truncate(int64_t n) = 0;  // Llama only: forget positions >= n
    virtual std::size_t nbytes() const = 0;
    const void* owner() const { return owner_; }

  protected:
    int64_t B_ = 0, S_ = 0, len_ = 0;
    const void* owner_ = nullptr;  // the model that made it
    friend class GpuModel;
};

class GpuModel {
  public:
    virtual ~GpuModel() = default;
    virtual std::unique_ptr<GpuState> new_state(int64_t B, int64_t capacity) = 0;
    // tokens (B, T) host; logits host f32 (B, T, V) if all_logits else (B, V). Synchronizes.
    virtual void forward(const int32_t* tokens, int64_t B, int64_t T, GpuState& st, bool all_logits,
                         float* logits) = 0;
    virtual int64_t vocab_size() const = 0;

    DType act() const { return opt_.act; }
    bool graphs() const { return opt_.graphs; }
    void set_graphs(bool on) { opt_.graphs = on && graphs_allowed_; }
    // Per-kernel-kind timing with CUDA events (forces plain launches while on).
    void set_profile(bool on);
    std::vector<std::pair<std::string, double>> profile_ms() const;  // kind → total ms
    void reset_profile();
    std::size_t weight_bytes() const { return weight_bytes_; }
    // Kernel names of the linears ("w4a16", "f16", ...) → how many layers use each.
    std::vector<std::pair<std::string, int>> linear_kernels() const;
    std::size_t graph_replays() const { return graph_replays_; }

    struct Impl;  // stream and profiler; defined in runtime_internal.cuh
    Impl& impl() const { return *impl_; }

  protected:
    RuntimeOptions opt_;
    bool graphs_allowed_ = true;
    std::size_t weight_bytes_ = 0;
    std::size_t graph_replays_ = 0;
    std::shared_ptr<Impl> impl_;
    std::vector<std::pair<std::string, int>> kernels_;
    GpuModel();
};

std::unique_ptr<GpuModel> gpu_llama(const LlamaConfig& c, const LlamaWeights& w, RuntimeOptions opt);
std::unique_ptr<GpuModel> gpu_mamba(const MambaConfig& c, const MambaWeights& w, RuntimeOptions opt);

// Mamba states back to the host for tests: conv (Di, K-1) and ssm (Di, N) of layer l, sequence b
// (the caller's sizes are checked against the model's).
void gpu_mamba_read_state(const GpuModel& m, const GpuState& st, int64_t layer, int64_t b, int64_t Di, int64_t K1,
                          int64_t N, float* conv, float* ssm);
// Llama KV cache back to the host (dequantized, f32): (len, Hk, Hd) of layer l, sequence b.
void gpu_llama_read_kv(const GpuModel& m, const GpuState& st, int64_t layer, int64_t b, bool values, int64_t Hk,
                       int64_t Hd, float* out);

}  // namespace quellm::cuda
