// forward.h — the part of a runtime's forward pass around its layers, shared by the Llama and
// Mamba runtimes (internal to cpp/runtime).
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

#include "common.h"
#include "llama.h"  // Linear, final_norm_logits

namespace quellm {

// Embeds tokens (B, T), runs `layers(x)` (the runtime's *_layers over every layer) on the
// residual stream x (B·T, D), advances each sequence's state by T positions, then the final norm
// and logits. `states` (one per sequence) must have been made for this model: n_layers of them.
template <class State, class Layers>
void forward_tokens(const float* embed, int64_t D, int64_t V, int64_t n_layers, const float* norm_w, float eps,
                    const Linear& lm_head, const int32_t* tokens, int64_t B, int64_t T, State* const* states,
                    bool all_logits, float* logits, Observers* obs, const char* state_what, Layers layers) {
    const int64_t N = B * T;
    QUELLM_CHECK(B >= 1 && T >= 1, "forward: need at least one token per sequence");
    for (int64_t i = 0; i < N; ++i)
        QUELLM_CHECK(tokens[i] >= 0 && tokens[i] < V, "forward: token id ", tokens[i], " out of range [0, ", V, ")");
    for (int64_t b = 0; b < B; ++b)
        QUELLM_CHECK(states[b] != nullptr && states[b]->n_layers == n_layers, "forward: the ", state_what,
                     " was made for another model; make new states");
    std::vector<float> x(size_t(N * D)), h(size_t(N * D));  // residual stream, normed rows for the head
    for (int64_t i = 0; i < N; ++i) std::copy_n(embed + int64_t(tokens[i]) * D, D, x.data() + i * D);
    layers(x.data());
    for (int64_t b = 0; b < B; ++b) states[b]->len += T;
    final_norm_logits(x.data(), h.data(), norm_w, eps, lm_head, B, T, D, all_logits, obs, n_layers, logits);
}

}  // namespace quellm
