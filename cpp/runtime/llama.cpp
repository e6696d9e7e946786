// llama.cpp — forward pass of the Llama-family runtime (see llama.h and MODELS.md §2).
#include "llama.h"

#include <algorithm>
#include <atomic>
#include <cmath>

#include "common.h"
#include "cpu_features.h"
#include "forward.h"
#include "fwht.h"
#include "matmul.h"
#include "ops.h"
#include "parallel.h"
#include "quant_linear.h"

namespace quellm {

namespace {
// Σ a[i]·b[i] in one fixed order: 8 interleaved partial sums (term i into lane i % 8), combined
// pairwise. `omp simd reduction` left the order to the compiler, and builds differed: the release
// build summed in vector lanes, the sanitizer build in sequence (its logits moved by 4.5e-4).
float dot_fixed_order(const float* a, const float* b, int64_t n) {
    float s[8] = {0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f};
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (int j = 0; j < 8; ++j) s[j] += a[i + j] * b[i + j];
    for (; i < n; ++i) s[i % 8] += a[i] * b[i];
    return ((s[0] + s[4]) + (s[1] + s[5])) + ((s[2] + s[6]) + (s[3] + s[7]));
}
}  // namespace

void linear_forward(const Linear& l, const float* x, int64_t rows, float* y) {
    if (l.q) {
        l.q->forward(x, rows, y);
        return;
    }
    MatmulParams p{x, l.w, l.b, y, rows, l.out, l.in, l.in, l.out};
    matmul_f32(p);
}

void final_norm_logits(const float* x, float* h, const float* norm_w, float eps, const Linear& lm_head, int64_t B,
                       int64_t T, int64_t D, bool all_logits, Observers* obs, int64_t obs_layer, float* logits) {
    const int64_t N = B * T, rows = all_logits ? N : B;
    if (all_logits || obs) {
        parallel_for(N, N * D >= kParallelMin ? num_threads() : 1,
                     [&](int64_t i) { rmsnorm(h + i * D, x + i * D, norm_w, D, eps); });
        if (obs) obs->observe(obs_layer, OBS_HEAD_IN, h, N, D, D);
        if (!all_logits)  // keep each sequence's last row; row b moves down to b (b <= b*T + T-1)
            for (int64_t b = 0; b < B; ++b) std::memmove(h + b * D, h + (b * T + T - 1) * D, D * sizeof(float));
    } else {
        for (int64_t b = 0; b < B; ++b) rmsnorm(h + b * D, x + (b * T + T - 1) * D, norm_w, D, eps);
    }
    linear_forward(lm_head, h, rows, logits);
}

KVCache::KVCache(const LlamaConfig& c, int64_t cap, int64_t layers)
    : capacity(cap), n_layers(layers ? layers : c.n_layers), n_kv(c.n_kv_heads), hd(c.head_dim), kv(c.kv) {
    QUELLM_CHECK(cap >= 1, "KVCache: capacity must be >= 1, got ", cap);
    QUELLM_CHECK(layers >= 0 && layers <= c.n_layers, "KVCache: layers must be in [0, ", c.n_layers, "], got ", layers);
    const size_t rows = size_t(n_layers) * size_t(cap) * size_t(n_kv);
    if (kv.bits == 0) {
        k.assign(rows * size_t(hd), 0.0f);
        v.assign(rows * size_t(hd), 0.0f);
    } else {
        kc.assign(rows * size_t(kv.row_bytes(hd)), 0);
        vc.assign(rows * size_t(kv.row_bytes(hd)), 0);
        kp.assign(rows * 2, 0.0f);
        vp.assign(rows * 2, 0.0f);
    }
}

bool KVCache::store(int64_t l, int64_t pos, const float* krow, const float* vrow) {
    const size_t row0 = (size_t(l) * capacity + pos) * n_kv;
    if (kv.bits == 0) {
        std::copy_n(krow, n_kv * hd, k.data() + row0 * hd);
        std::copy_n(vrow, n_kv * hd, v.data() + row0 * hd);
        return true;
    }
    const int64_t rb = kv.row_bytes(hd);
    bool ok = true;
    for (int64_t h = 0; h < n_kv; ++h) {
        const size_t r = row0 + h;
        ok = kv_quant_row(krow + h * hd, hd, kv.bits, kv.clip, kc.data() + r * rb, &kp[2 * r], &kp[2 * r + 1]) && ok;
        ok = kv_quant_row(vrow + h * hd, hd, kv.bits, kv.clip, vc.data() + r * rb, &vp[2 * r], &vp[2 * r + 1]) && ok;
    }
    return ok;
}

void KVCache::read(int64_t l, int64_t h, int64_t p0, int64_t p1, bool values, float* out) const {
    for (int64_t p = p0; p < p1; ++p) {
        const size_t r = (size_t(l) * capacity + p) * n_kv + h;
        float* o = out + (p - p0) * hd;
        if (kv.bits == 0) {
            std::copy_n((values ? v : k).data() + r * hd, hd, o);
        } else {
            const std::vector<float>& prm = values ? vp : kp;
            kv_dequant_row((values ? vc : kc).data() + r * kv.row_bytes(hd), hd, kv.bits, prm[2 * r], prm[2 * r + 1], o);
        }
    }
}

void llama_forward(const LlamaConfig& c, const LlamaWeights& w, const int32_t* tokens, int64_t B, int64_t T,
                   KVCache* const* caches, bool all_logits, float* logits, Observers* obs) {
    forward_tokens(w.embed, c.dim, c.vocab_size, c.n_layers, w.final_norm, c.norm_eps, w.lm_head, tokens, B, T, caches,
                   all_logits, logits, obs, "KV cache",
                   [&](float* x) { llama_layers(c, w, x, B, T, 0, c.n_layers, caches, obs); });
}

void llama_layers(const LlamaConfig& c, const LlamaWeights& w, float* x, int64_t B, int64_t T, int64_t l0, int64_t l1,
                  KVCache* const* caches, Observers* obs) {
    const int64_t D = c.dim, F = c.hidden_dim, H = c.n_heads, Hk = c.n_kv_heads, Hd = c.head_dim;
    const int64_t N = B * T, group = H / Hk, kvd = Hk * Hd;
    QUELLM_CHECK(B >= 1 && T >= 1, "forward: need at least one token per sequence");
    QUELLM_CHECK(0 <= l0 && l0 <= l1 && l1 <= c.n_layers, "forward: layers [", l0, ", ", l1, ") out of range [0, ",
                 c.n_layers, "]");
    QUELLM_CHECK(caches[0] != nullptr, "forward: null cache");
    const int64_t cache_layers = caches[0]->n_layers;
    QUELLM_CHECK(cache_layers == c.n_layers || cache_layers == l1 - l0, "forward: caches of ", cache_layers,
                 " layers cannot serve layers [", l0, ", ", l1, ")");
    const int64_t base = cache_layers == c.n_layers ? 0 : l0;  // cache layer = l - base
    for (int64_t b = 0; b < B; ++b) {
        QUELLM_CHECK(caches[b] != nullptr, "forward: null cache");
        QUELLM_CHECK(caches[b]->kv == c.kv && caches[b]->n_layers == cache_layers && caches[b]->n_kv == c.n_kv_heads &&
                         caches[b]->hd == c.head_dim,
                     "forward: the cache was made for another model or KV cache format; make new states");
        QUELLM_CHECK(caches[b]->len + T <= caches[b]->capacity, "forward: sequence of ", caches[b]->len + T,
                     " tokens exceeds the cache capacity ", caches[b]->capacity);
        QUELLM_CHECK(caches[b]->len + T <= c.max_seq_len, "forward: sequence of ", caches[b]->len + T,
                     " tokens exceeds max_position_embeddings = ", c.max_seq_len);
    }
    const int nt = num_threads();
    // Per-head Walsh–Hadamard rotation (kv.hadamard): rows of Hd, scale 1/sqrt(Hd), in place.
    const float had_scale = float(1.0 / std::sqrt(double(Hd)));
    auto rotate_heads = [&](float* data, int64_t rows) {
        fwht(FwhtParams{data, data, rows, Hd, Hd, 1, nullptr, had_scale});
    };

    // Activations for all N = B·T rows (x: the residual stream, given).
    std::vector<float> h(N * D);  // normed input, then a linear's output
    std::vector<float> q(N * H * Hd), k(N * kvd), v(N * kvd), att(N * H * Hd);
    std::vector<float> g(N * F), u(N * F);

    for (int64_t l = l0; l < l1; ++l) {
        const LlamaLayer& L = w.layers[l];
        const int64_t cl = l - base;
        parallel_for(N, N * D >= kParallelMin ? nt : 1,
                     [&](int64_t i) { rmsnorm(h.data() + i * D, x + i * D, L.attn_norm, D, c.norm_eps); });
        if (obs) obs->observe(l, OBS_ATTN_IN, h.data(), N, D, D);
        linear_forward(L.q, h.data(), N, q.data());
        linear_forward(L.k, h.data(), N, k.data());
        linear_forward(L.v, h.data(), N, v.data());

        // RoPE on q and k.
        parallel_for(N, N * (H + Hk) * Hd >= kParallelMin ? nt : 1, [&](int64_t i) {
            const int64_t b = i / T, pos = caches[b]->len + i % T;
            for (int64_t hh = 0; hh < H; ++hh) rope_rotate_half(q.data() + (i * H + hh) * Hd, w.inv_freq.data(), Hd, pos);
            for (int64_t hh = 0; hh < Hk; ++hh) rope_rotate_half(k.data() + (i * Hk + hh) * Hd, w.inv_freq.data(), Hd, pos);
        });
        if (obs) {
            obs->observe(l, OBS_K, k.data(), N, kvd, kvd);
            obs->observe(l, OBS_V, v.data(), N, kvd, kvd);
        }
        if (c.kv.hadamard) {
            rotate_heads(q.data(), N * H);
            rotate_heads(k.data(), N * Hk);
            rotate_heads(v.data(), N * Hk);
        }
        // Append k, v to each sequence's cache (quantized there if the format says so).
        std::atomic<bool> finite{true};
        parallel_for(N, N * kvd >= kParallelMin ? nt : 1, [&](int64_t i) {
            const int64_t b = i / T, pos = caches[b]->len + i % T;
            if (!caches[b]->store(cl, pos, k.data() + i * kvd, v.data() + i * kvd)) finite = false;
        });
        QUELLM_CHECK(finite.load(), "forward: non-finite key/value in layer ", l, " cannot be quantized for the KV cache");

        // Causal attention per (row, head), over the cache.
        const float inv_sqrt = 1.0f / std::sqrt(float(Hd));
        parallel_region(std::min<int64_t>(nt, N * H), [&](int, int) {
            std::vector<float> sc, kbuf, vbuf;
#pragma omp for schedule(dynamic, 4)  // orphaned: shares the region's heads, or runs them all alone
            for (int64_t ih = 0; ih < N * H; ++ih) {
                const int64_t i = ih / H, hh = ih % H, b = i / T, pos = caches[b]->len + i % T;
                const KVCache& kc = *caches[b];
                const int64_t kvh = hh / group;
                const int64_t start = c.sliding_window > 0 ? std::max<int64_t>(0, pos - c.sliding_window + 1) : 0;
                const int64_t n = pos + 1 - start;
                sc.resize(size_t(n));
                const float* qv = q.data() + (i * H + hh) * Hd;
                // Keys/values of this KV head at positions start.. as rows of stride `ld`: in place
                // for an f32 cache, dequantized into per-thread buffers otherwise.
                const float *kbase, *vbase;
                int64_t ld = kvd;
                if (kc.kv.bits == 0) {
                    kbase = kc.k.data() + size_t(cl) * kc.capacity * kvd + kvh * Hd + start * kvd;
                    vbase = kc.v.data() + size_t(cl) * kc.capacity * kvd + kvh * Hd + start * kvd;
                } else {
                    kbuf.resize(size_t(n * Hd));
                    vbuf.resize(size_t(n * Hd));
                    kc.read(cl, kvh, start, pos + 1, false, kbuf.data());
                    kc.read(cl, kvh, start, pos + 1, true, vbuf.data());
                    kbase = kbuf.data();
                    vbase = vbuf.data();
                    ld = Hd;
                }
                for (int64_t t = 0; t < n; ++t) sc[t] = dot_fixed_order(qv, kbase + t * ld, Hd) * inv_sqrt;
                softmax(sc.data(), n);
                float* o = att.data() + (i * H + hh) * Hd;
                std::fill_n(o, Hd, 0.0f);
                for (int64_t t = 0; t < n; ++t) {
                    const float* vv = vbase + t * ld;
                    const float p = sc[t];
#pragma omp simd
                    for (int64_t d = 0; d < Hd; ++d) o[d] += p * vv[d];
                }
            }
        });
        if (c.kv.hadamard) rotate_heads(att.data(), N * H);  // H_hd/√hd is its own inverse (Sylvester)
        if (obs) obs->observe(l, OBS_O_IN, att.data(), N, H * Hd, H * Hd);
        linear_forward(L.o, att.data(), N, h.data());
        for (int64_t i = 0; i < N * D; ++i) x[i] += h[i];

        // SwiGLU MLP.
        parallel_for(N, N * D >= kParallelMin ? nt : 1,
                     [&](int64_t i) { rmsnorm(h.data() + i * D, x + i * D, L.ffn_norm, D, c.norm_eps); });
        if (obs) obs->observe(l, OBS_MLP_IN, h.data(), N, D, D);
        linear_forward(L.gate, h.data(), N, g.data());
        linear_forward(L.up, h.data(), N, u.data());
        parallel_for(N * F, N * F >= kParallelMin ? nt : 1, [&](int64_t i) { g[i] = silu(g[i]) * u[i]; });
        if (obs) obs->observe(l, OBS_DOWN_IN, g.data(), N, F, F);
        linear_forward(L.down, g.data(), N, h.data());
        for (int64_t i = 0; i < N * D; ++i) x[i] += h[i];
    }
}

}  // namespace quellm
