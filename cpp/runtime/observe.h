// observe.h — calibration observers: per-channel statistics of the activations at every
// quantization point of the runtimes, accumulated in C++ during forward passes.
//
// A point is (layer, kind). For each point and channel c over all observed rows x:
//   count, absmax[c] = max |x_c|, sum[c] = Σ x_c, sum2/3/4[c] = Σ x_c^2/3/4 (f64),
// and optionally xtx = Σ xᵀx (C × C, f64) — the GPTQ Hessian, accumulated as a GEMM.
// A NaN or Inf is not accumulated: the first one is recorded (row, channel) and reported by
// the Python layer with the layer and point names.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace quellm {

// Observation points. Llama: the input of q/k/v (shared), of o_proj, of gate/up (shared), of
// down_proj, and the keys (after RoPE) and values written to the cache. Mamba: the input of
// in_proj, the scan input u (= x_proj input), dt_low (= dt_proj input), dt (after softplus),
// B, C, and the gated scan output y (= out_proj input). Both: the lm_head input.
enum ObsKind : int {
    OBS_ATTN_IN = 0, OBS_O_IN, OBS_MLP_IN, OBS_DOWN_IN, OBS_K, OBS_V,
    OBS_MAMBA_IN, OBS_MAMBA_U, OBS_MAMBA_DT_LOW, OBS_MAMBA_DT, OBS_MAMBA_B, OBS_MAMBA_C, OBS_MAMBA_Y,
    OBS_HEAD_IN,
    OBS_NUM_KINDS
};
const char* obs_kind_name(int kind);

struct ChannelStats {
    int64_t channels = 0;
    int64_t count = 0;               // rows accumulated
    std::vector<float> absmax;       // (C)
    std::vector<double> sum, sum2, sum3, sum4;  // (C)
    std::vector<double> xtx;         // (C, C) when requested, else empty
    bool nonfinite = false;          // a NaN/Inf was seen (and skipped)
    int64_t bad_row = -1, bad_channel = -1;  // the first one
};

struct Observers {
    int64_t n_layers = 0;
    bool want_xtx = false;
    std::vector<ChannelStats> stats;  // (n_layers + 1, OBS_NUM_KINDS); the last "layer" holds OBS_HEAD_IN

    Observers(int64_t layers, bool xtx);
    ChannelStats& at(int64_t layer, int kind) { return stats[size_t(layer * OBS_NUM_KINDS + kind)]; }
    // Accumulates rows x[r, 0:cols] (row stride ld) into point (layer, kind). Threads: OpenMP
    // over channels; deterministic (fixed summation order) for any thread count.
    void observe(int64_t layer, int kind, const float* x, int64_t rows, int64_t cols, int64_t ld);
};

}  // namespace quellm
