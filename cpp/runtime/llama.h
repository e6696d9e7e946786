// llama.h — the Llama-family runtime (Llama, Mistral, Qwen2, SmolLM): plain structs in the
// llama2.c style and one forward function. Math: shared/MODELS.md §2.3–2.4.
//
// Dimension letters: B sequences, T new tokens per sequence, D = dim, F = hidden_dim,
// H = n_heads, Hk = n_kv_heads, Hd = head_dim, V = vocab_size, S = cache capacity.
#pragma once

#include <cstdint>
#include <vector>

#include "kv_quant.h"
#include "observe.h"

namespace quellm {

// y = x · Wᵀ (+ b); W is (out, in) row-major — the HF layout. The one place the runtime does
// matrix work; quantized formats plug in here.
class QuantLinear;

// A linear layer of a runtime: float32 weights used in place, or a QuantLinear (which then holds
// the weights, bias and the kernel choice).
struct Linear {
    const float* w = nullptr;  // (out, in)
    const float* b = nullptr;  // (out) or nullptr
    int64_t out = 0, in = 0;
    const QuantLinear* q = nullptr;
};
void linear_forward(const Linear& l, const float* x, int64_t rows, float* y);  // x (rows, in), y (rows, out)

// The last step of every runtime: final RMSNorm of x (B·T, D) into h (B·T, D) for the rows
// that need logits — every position, or each sequence's last — then logits = h · lm_headᵀ
// ((B·T, V) or (B, V)). Observers see the lm_head input of every position (as layer obs_layer).
void final_norm_logits(const float* x, float* h, const float* norm_w, float eps, const Linear& lm_head, int64_t B,
                       int64_t T, int64_t D, bool all_logits, Observers* obs, int64_t obs_layer, float* logits);

struct LlamaConfig {
    int64_t dim = 0;          // D
    int64_t hidden_dim = 0;   // F
    int64_t n_layers = 0;
    int64_t n_heads = 0;      // H
    int64_t n_kv_heads = 0;   // Hk; H % Hk == 0 (GQA: query head h reads KV head h / (H / Hk))
    int64_t head_dim = 0;     // Hd (even)
    int64_t vocab_size = 0;   // V
    int64_t max_seq_len = 0;  // positions the model supports
    int64_t sliding_window = 0;  // 0 = full causal attention; else keys with q_pos - k_pos < window
    float norm_eps = 1e-5f;
    KvQuant kv;                  // the KV cache format (kv_quant.h)
};

struct LlamaLayer {
    const float* attn_norm = nullptr;  // (D)
    Linear q, k, v, o;                 // q (H·Hd, D), k/v (Hk·Hd, D), o (D, H·Hd)
    const float* ffn_norm = nullptr;   // (D)
    Linear gate, up, down;             // gate/up (F, D), down (D, F)
};

struct LlamaWeights {
    const float* embed = nullptr;      // (V, D)
    std::vector<LlamaLayer> layers;
    const float* final_norm = nullptr; // (D)
    Linear lm_head;                    // (V, D); the embedding when tied
    std::vector<float> inv_freq;       // (Hd/2) RoPE frequencies, scaling already applied
};

// Keys (after RoPE, and the Hadamard rotation when kv.hadamard) and values of one sequence, for
// every layer or for a run of `n_layers` consecutive layers (layer-by-layer calibration).
struct KVCache {
    int64_t capacity = 0;   // S
    int64_t len = 0;        // positions filled
    int64_t n_layers = 0, n_kv = 0, hd = 0;
    KvQuant kv;
    std::vector<float> k, v;        // f32: (n_layers, S, Hk, Hd)
    std::vector<uint8_t> kc, vc;    // quantized: (n_layers, S, Hk, row_bytes(Hd)) codes
    std::vector<float> kp, vp;      // quantized: (n_layers, S, Hk, 2) scale, zero
    KVCache(const LlamaConfig& c, int64_t cap, int64_t layers = 0);  // layers 0: all of the model's
    // Write position pos of layer l: k, v (Hk·Hd) each. False if a value is not finite.
    bool store(int64_t l, int64_t pos, const float* krow, const float* vrow);
    // Positions [p0, p1) of KV head h of layer l, as f32 (p1 − p0, Hd) — dequantized if needed.
    void read(int64_t l, int64_t h, int64_t p0, int64_t p1, bool values, float* out) const;
};

// Runs B sequences of T new tokens each (positions cache.len .. cache.len+T-1), appends to the
// caches, and writes logits: (B, T, V) if all_logits, else (B, V) for the last token.
// tokens (B, T). Throws std::invalid_argument on a token out of range or a full cache.
// obs (nullable) accumulates calibration statistics at every quantization point.
void llama_forward(const LlamaConfig& c, const LlamaWeights& w, const int32_t* tokens, int64_t B, int64_t T,
                   KVCache* const* caches, bool all_logits, float* logits, Observers* obs = nullptr);

// Layers [l0, l1) of the forward pass on the residual stream x (B·T, D), in place: what
// llama_forward does between the embedding and the final norm. The caches hold every layer, or
// exactly l1 − l0 layers (cache layer l − l0); positions cache.len.., and len is not advanced.
void llama_layers(const LlamaConfig& c, const LlamaWeights& w, float* x, int64_t B, int64_t T, int64_t l0, int64_t l1,
                  KVCache* const* caches, Observers* obs = nullptr);

}  // namespace quellm
