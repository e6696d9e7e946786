// mamba.h — the Mamba-1 runtime: plain structs and one forward function that serves prefill
// (a whole sequence) and decode (T = 1) with the same per-channel loop. Math: MODELS.md §3.
//
// Dimension letters: B sequences, T new tokens, D = dim, Di = d_inner, N = d_state,
// K = d_conv, R = dt_rank, V = vocab_size.
#pragma once

#include <cstdint>
#include <vector>

#include "llama.h"  // Linear, linear_forward

namespace quellm {

struct MambaConfig {
    int64_t dim = 0, d_inner = 0, d_state = 0, d_conv = 0, dt_rank = 0, n_layers = 0, vocab_size = 0;
    float norm_eps = 1e-5f;
};

struct MambaLayer {
    const float* norm = nullptr;     // (D)
    Linear in_proj;                  // (2·Di, D): rows [0, Di) give x, [Di, 2·Di) give z
    const float* conv_w = nullptr;   // (Di, K): conv_w[c, K-1] multiplies the current token
    const float* conv_b = nullptr;   // (Di) or nullptr
    Linear x_proj;                   // (R + 2N, Di): dt_low, B, C
    Linear dt_proj;                  // (Di, R) + bias (Di)
    std::vector<float> A;            // (Di, N) = −exp(A_log), precomputed
    const float* D = nullptr;        // (Di) skip
    Linear out_proj;                 // (D, Di)
};

struct MambaWeights {
    const float* embed = nullptr;    // (V, D)
    std::vector<MambaLayer> layers;
    const float* norm_f = nullptr;   // (D)
    Linear lm_head;                  // (V, D); the embedding when tied
};

// One sequence's recurrent state, every layer.
// One sequence's recurrent state, for every layer or for a run of n_layers consecutive layers.
struct MambaState {
    int64_t len = 0;                 // tokens consumed
    int64_t n_layers = 0;
    std::vector<float> conv;         // (n_layers, Di, K-1): the newest K-1 pre-conv inputs, oldest first
    std::vector<float> ssm;          // (n_layers, Di, N)
    explicit MambaState(const MambaConfig& c, int64_t layers = 0);  // layers 0: all of the model's
};

// B sequences of T new tokens each; logits (B, T, V) if all_logits else (B, V).
// obs (nullable) accumulates calibration statistics at every quantization point.
void mamba_forward(const MambaConfig& c, const MambaWeights& w, const int32_t* tokens, int64_t B, int64_t T,
                   MambaState* const* states, bool all_logits, float* logits, Observers* obs = nullptr);

// Layers [l0, l1) on the residual stream x (B·T, D), in place (see llama_layers): the states hold
// every layer or exactly l1 − l0 layers; len is not advanced.
void mamba_layers(const MambaConfig& c, const MambaWeights& w, float* x, int64_t B, int64_t T, int64_t l0, int64_t l1,
                  MambaState* const* states, Observers* obs = nullptr);

}  // namespace quellm
