// runtime_llama.cu — the Llama-family forward pass on the GPU (math: MODELS.md §2, the CPU twin:
// cpp/runtime/llama.cpp). One forward enqueues, for B sequences × T tokens (N = B·T rows):
//
//   embed → per layer: [add +] RMSNorm → q,k,v linears → RoPE/Hadamard + KV append → attention
//           → o linear → add + RMSNorm → gate, up linears → SwiGLU → down linear
//   → add + final RMSNorm (all rows, or each sequence's last) → lm_head → f32 logits → lens += T
//
// Positions come from the state's device `lens`, so a decode step (T = 1) is the same work every
// time and is replayed from a CUDA graph.
#include <algorithm>
#include <cmath>
#include <map>

#include "quant_linear.h"
#include "runtime/llama.h"
#include "runtime_internal.cuh"
#include "runtime_ops.h"

namespace quellm::cuda {

namespace {

class LlamaState final : public GpuState {
  public:
    KvShape kv;
    int64_t L = 0;
    DevMem k, v, kp, vp, lens, err;
    Scratch scratch;
    DecodeGraph graph;

    LlamaState(const LlamaConfig& c, int64_t B, int64_t S, DType act, const void* owner) {
        B_ = B;
        S_ = S;
        owner_ = owner;
        L = c.n_layers;
        kv.B = B;
        kv.S = S;
        kv.H = c.n_heads;
        kv.Hk = c.n_kv_heads;
        kv.Hd = c.head_dim;
        kv.bits = c.kv.bits;
        kv.clip = c.kv.clip;
        kv.hadamard = c.kv.hadamard;
        kv.window = c.sliding_window;
        const std::size_t rows = std::size_t(L) * B * S * kv.Hk;
        const std::size_t row_bytes = kv.bits ? std::size_t(kv.row_bytes()) : kv.Hd * dtype_size(act);
        k.alloc(rows * row_bytes, "the key cache");
        v.alloc(rows * row_bytes, "the value cache");
        if (kv.bits) {
            kp.alloc(rows * 2 * sizeof(float), "the key cache scales");
            vp.alloc(rows * 2 * sizeof(float), "the value cache scales");
        }
        lens.alloc(std::size_t(B) * sizeof(int32_t), "sequence lengths");
        err.alloc(sizeof(int), "the error flag");
        CUDA_CHECK(cudaMemset(lens.get(), 0, lens.size()));
        CUDA_CHECK(cudaMemset(err.get(), 0, err.size()));
        // The forward runs on the model's non-blocking stream, which does not wait for work on the
        // legacy default stream: finish these writes before the state is used.
        CUDA_CHECK(cudaDeviceSynchronize());
    }
    std::size_t layer_rows() const { return std::size_t(B_) * S_ * kv.Hk; }
    KvLayer layer(int64_t l, DType act) const {
        const std::size_t rb = kv.bits ? std::size_t(kv.row_bytes()) : kv.Hd * dtype_size(act);
        const std::size_t off = std::size_t(l) * layer_rows();
        KvLayer c;
        c.k = k.as<uint8_t>() + off * rb;
        c.v = v.as<uint8_t>() + off * rb;
        if (kv.bits) {
            c.kp = kp.as<float>() + off * 2;
            c.vp = vp.as<float>() + off * 2;
        }
        return c;
    }
    void set_len(int64_t n) {
        std::vector<int32_t> h(static_cast<std::size_t>(B_), static_cast<int32_t>(n));
        CUDA_CHECK(cudaMemcpy(lens.get(), h.data(), h.size() * sizeof(int32_t), cudaMemcpyHostToDevice));
        CUDA_CHECK(cudaDeviceSynchronize());  // see the constructor
        len_ = n;
    }
    void set_len_host(int64_t n) { len_ = n; }
    void reset() override { set_len(0); }
    void truncate(int64_t n) override {
        QUELLM_CHECK(n >= 0 && n <= len_, "truncate: n must be in [0, ", len_, "], got ", n);
        set_len(n);
    }
    std::size_t nbytes() const override {
        return k.size() + v.size() + kp.size() + vp.size() + lens.size() + scratch.nbytes();
    }
};

struct LlamaLayerDev {
    DevMem attn_norm, ffn_norm;
    CudaLinearPtr q, k, v, o, gate, up, down;
};

class GpuLlama final : public GpuModel {
  public:
    GpuLlama(const LlamaConfig& c, const LlamaWeights& w, RuntimeOptions opt) : c_(c) {
        QUELLM_CHECK(opt.act == DType::F16 || opt.act == DType::BF16 || opt.act == DType::F32,
                     "GPU runtime: activations must be f16, bf16 or f32");
        opt_ = opt;
        set_graphs(opt.graphs);
        QUELLM_CHECK(c.head_dim % 2 == 0 && c.head_dim <= 512, "GPU runtime: head_dim must be even and <= 512, got ",
                     c.head_dim);
        QUELLM_CHECK(int64_t(w.layers.size()) == c.n_layers, "GPU runtime: weights for ", w.layers.size(),
                     " layers, config has ", c.n_layers);
        const DType act = opt.act;
        const int64_t D = c.dim;
        std::map<std::string, int> kinds;
        auto lin = [&](const Linear& l) {
            CudaLinearPtr p = upload_linear(l, act);
            weight_bytes_ += cuda_linear_nbytes(*p);
            ++kinds[cuda_linear_kernel(*p)];
            return p;
        };
        embed_ = upload_as(w.embed, std::size_t(c.vocab_size) * D, act, "the token embeddings");
        weight_bytes_ += embed_.size();
        for (const LlamaLayer& L : w.layers) {
            LlamaLayerDev d;
            d.attn_norm = upload(L.attn_norm, D * sizeof(float), "a norm weight");
            d.ffn_norm = upload(L.ffn_norm, D * sizeof(float), "a norm weight");
            weight_bytes_ += 2 * D * sizeof(float);
            d.q = lin(L.q);
            d.k = lin(L.k);
            d.v = lin(L.v);
            d.o = lin(L.o);
            d.gate = lin(L.gate);
            d.up = lin(L.up);
            d.down = lin(L.down);
            layers_.push_back(std::move(d));
        }
        final_norm_ = upload(w.final_norm, D * sizeof(float), "the final norm weight");
        inv_freq_ = upload(w.inv_freq.data(), w.inv_freq.size() * sizeof(float), "RoPE frequencies");
        head_ = upload_head(w.lm_head, act, &head_act_);
        weight_bytes_ += cuda_linear_nbytes(*head_) + final_norm_.size() + inv_freq_.size();
        ++kinds[cuda_linear_kernel(*head_)];
        kernels_.assign(kinds.begin(), kinds.end());
        CUDA_CHECK(cudaDeviceSynchronize());
    }

    int64_t vocab_size() const override { return c_.vocab_size; }

    std::unique_ptr<GpuState> new_state(int64_t B, int64_t S) override {
        QUELLM_CHECK(B >= 1, "new_state: batch must be >= 1, got ", B);
        QUELLM_CHECK(S >= 1 && S <= c_.max_seq_len, "new_state: capacity must be in [1, ", c_.max_seq_len, "], got ", S);
        return std::make_unique<LlamaState>(c_, B, S, opt_.act, this);
    }

    void forward(const int32_t* tokens, int64_t B, int64_t T, GpuState& st_, bool all_logits, float* logits) override {
        QUELLM_CHECK(st_.owner() == this, "forward: the state was made for another model; make new states");
        LlamaState& st = static_cast<LlamaState&>(st_);
        QUELLM_CHECK(B == st.batch() && T >= 1, "forward: state for ", st.batch(), " sequences, tokens for ", B);
        QUELLM_CHECK(st.kv.bits == c_.kv.bits && st.kv.clip == c_.kv.clip && st.kv.hadamard == c_.kv.hadamard,
                     "forward: the cache was made for another KV cache format; make new states");
        QUELLM_CHECK(st.len() + T <= st.capacity(), "forward: sequence of ", st.len() + T,
                     " tokens exceeds the cache capacity ", st.capacity());
        const int64_t N = B * T, V = c_.vocab_size, rows = all_logits ? N : B;
        for (int64_t i = 0; i < N; ++i)
            QUELLM_CHECK(tokens[i] >= 0 && tokens[i] < V, "forward: token id ", tokens[i], " out of range [0, ", V, ")");
        const Plan p = plan(st, B, T, rows);
        cudaStream_t s = impl_->stream;
        CUDA_CHECK(cudaMemcpyAsync(p.tokens, tokens, N * sizeof(int32_t), cudaMemcpyHostToDevice, s));
        const bool use_graph = T == 1 && opt_.graphs && !impl_->profile;
        if (run_maybe_graphed(st.graph, st.scratch.gen, use_graph, s, [&] { body(p, st, B, T, !all_logits); }))
            ++graph_replays_;
        int err = 0;
        CUDA_CHECK(cudaMemcpyAsync(logits, p.logits, rows * V * sizeof(float), cudaMemcpyDeviceToHost, s));
        CUDA_CHECK(cudaMemcpyAsync(&err, st.err.get(), sizeof(int), cudaMemcpyDeviceToHost, s));
        CUDA_CHECK(cudaStreamSynchronize(s));
        if (impl_->profile) impl_->collect();
        if (err) {
            CUDA_CHECK(cudaMemset(st.err.get(), 0, sizeof(int)));
            st.set_len(st.len());  // the device lengths advanced; the CPU runtime leaves them
            QUELLM_CHECK(false, "forward: non-finite key/value cannot be quantized for the KV cache");
        }
        st.set_len_host(st.len() + T);
    }

  private:
    struct Plan {
        int32_t* tokens;
        float *x, *logits, *partial;
        void *h, *q, *k, *v, *att, *y, *g, *u, *hh, *lt, *ws;
        int nsplit;
    };

    LlamaConfig c_;
    DevMem embed_, final_norm_, inv_freq_;
    std::vector<LlamaLayerDev> layers_;
    CudaLinearPtr head_;
    DType head_act_ = DType::F16;

    Plan plan(LlamaState& st, int64_t B, int64_t T, int64_t rows) {
        const int64_t N = B * T, D = c_.dim, F = c_.hidden_dim, H = c_.n_heads, Hk = c_.n_kv_heads, Hd = c_.head_dim;
        const std::size_t e = dtype_size(opt_.act);
        Scratch& sc = st.scratch;
        Plan p{};
        p.tokens = static_cast<int32_t*>(sc.get("tokens", N * sizeof(int32_t)));
        p.x = static_cast<float*>(sc.get("the residual stream", N * D * sizeof(float)));
        p.h = sc.get("normed activations", N * D * e);
        p.q = sc.get("queries", N * H * Hd * e);
        p.k = sc.get("keys", N * Hk * Hd * e);
        p.v = sc.get("values", N * Hk * Hd * e);
        p.att = sc.get("attention output", N * H * Hd * e);
        p.y = sc.get("linear output", N * D * e);
        p.g = sc.get("gate activations", N * F * e);
        p.u = sc.get("up activations", N * F * e);
        p.hh = sc.get("lm_head input", rows * D * dtype_size(head_act_));
        p.logits = static_cast<float*>(sc.get("logits", rows * c_.vocab_size * sizeof(float)));
        p.lt = head_act_ == DType::F32 ? nullptr : sc.get("logits (act)", rows * c_.vocab_size * e);
        p.nsplit = T == 1 ? attention_splits(st.capacity(), B, Hk) : 1;
        p.partial = p.nsplit > 1 ? static_cast<float*>(sc.get("attention partials",
                                                              std::size_t(p.nsplit) * N * H * (Hd + 2) * sizeof(float)))
                                 : nullptr;
        std::size_t ws = cuda_linear_workspace_bytes(*head_, rows);
        for (const LlamaLayerDev& L : layers_)
            for (const CudaLinearPtr* l : {&L.q, &L.k, &L.v, &L.o, &L.gate, &L.up, &L.down})
                ws = std::max(ws, cuda_linear_workspace_bytes(**l, N));
        p.ws = sc.get("linear workspace", std::max<std::size_t>(ws, 256));
        return p;
    }

    void lin(const CudaLinearPtr& L, const void* x, int64_t M, void* y, const Plan& p) {
        cuda_linear_forward(*L, x, M, y, p.ws, impl_->stream);
    }

    void body(const Plan& p, LlamaState& st, int64_t B, int64_t T, bool last_only) {
        cudaStream_t s = impl_->stream;
        Impl& im = *impl_;
        const DType act = opt_.act;
        const int64_t N = B * T, D = c_.dim, F = c_.hidden_dim, V = c_.vocab_size, rows = last_only ? B : N;
        const float eps = c_.norm_eps;
        {
            Prof pr(im, "embedding");
            launch_embed(p.tokens, embed_.get(), act, N, D, p.x, s);
        }
        for (std::size_t l = 0; l < layers_.size(); ++l) {
            const LlamaLayerDev& L = layers_[l];
            const KvLayer cache = st.layer(int64_t(l), act);
            {
                Prof pr(im, "rmsnorm");
                launch_add_rmsnorm(p.x, l ? p.y : nullptr, act, L.attn_norm.as<float>(), N, D, eps, p.h, act, T, false, s);
            }
            {
                Prof pr(im, "linear.qkv");
                lin(L.q, p.h, N, p.q, p);
                lin(L.k, p.h, N, p.k, p);
                lin(L.v, p.h, N, p.v, p);
            }
            {
                Prof pr(im, "rope_kv_store");
                launch_rope_store(p.q, p.k, p.v, act, inv_freq_.as<float>(), st.lens.as<int32_t>(), T, st.kv, cache,
                                  st.err.as<int>(), s);
            }
            {
                Prof pr(im, T == 1 ? "attention.decode" : "attention.prefill");
                launch_attention(p.q, act, st.lens.as<int32_t>(), T, st.kv, cache, p.nsplit, p.partial, p.att, s);
            }
            {
                Prof pr(im, "linear.o");
                lin(L.o, p.att, N, p.y, p);
            }
            {
                Prof pr(im, "rmsnorm");
                launch_add_rmsnorm(p.x, p.y, act, L.ffn_norm.as<float>(), N, D, eps, p.h, act, T, false, s);
            }
            {
                Prof pr(im, "linear.gate_up");
                lin(L.gate, p.h, N, p.g, p);
                lin(L.up, p.h, N, p.u, p);
            }
            {
                Prof pr(im, "swiglu");
                launch_swiglu(p.g, p.u, N * F, act, s);
            }
            {
                Prof pr(im, "linear.down");
                lin(L.down, p.g, N, p.y, p);
            }
        }
        {
            Prof pr(im, "rmsnorm");
            launch_add_rmsnorm(p.x, layers_.empty() ? nullptr : p.y, act, final_norm_.as<float>(), N, D, eps, p.hh, head_act_,
                               T, last_only, s);
        }
        {
            Prof pr(im, "lm_head");
            if (head_act_ == DType::F32) {
                lin(head_, p.hh, rows, p.logits, p);
            } else {
                lin(head_, p.hh, rows, p.lt, p);
                launch_to_f32(p.lt, act, rows * V, p.logits, s);
            }
        }
        launch_advance(st.lens.as<int32_t>(), B, T, s);
    }
};

}  // namespace

std::unique_ptr<GpuModel> gpu_llama(const LlamaConfig& c, const LlamaWeights& w, RuntimeOptions opt) {
    return std::make_unique<GpuLlama>(c, w, opt);
}

void gpu_llama_read_kv(const GpuModel& m, const GpuState& st_, int64_t layer, int64_t b, bool values, int64_t Hk,
                       int64_t Hd, float* out) {
    const auto* gm = dynamic_cast<const GpuLlama*>(&m);
    QUELLM_CHECK(gm != nullptr && st_.owner() == &m, "read_kv: not a state of this Llama model");
    const LlamaState& st = static_cast<const LlamaState&>(st_);
    QUELLM_CHECK(layer >= 0 && layer < st.L && b >= 0 && b < st.batch(), "read_kv: layer or sequence out of range");
    const KvShape& kv = st.kv;
    QUELLM_CHECK(Hk == kv.Hk && Hd == kv.Hd, "read_kv: the cache has ", kv.Hk, " heads of ", kv.Hd);
    const int64_t n = st.len() * kv.Hk;  // rows (position, head) of sequence b
    const KvLayer c = st.layer(layer, m.act());
    const std::size_t row0 = std::size_t(b) * kv.S * kv.Hk;
    if (kv.bits == 0) {
        const std::size_t count = std::size_t(n * kv.Hd), esz = dtype_size(m.act());
        const uint8_t* src = static_cast<const uint8_t*>(values ? c.v : c.k) + row0 * kv.Hd * esz;
        if (m.act() == DType::F32) {
            CUDA_CHECK(cudaMemcpy(out, src, count * 4, cudaMemcpyDeviceToHost));
            return;
        }
        std::vector<uint16_t> h(count);
        CUDA_CHECK(cudaMemcpy(h.data(), src, count * 2, cudaMemcpyDeviceToHost));
        for (std::size_t i = 0; i < count; ++i) out[i] = m.act() == DType::F16 ? f16_to_f32(h[i]) : bf16_to_f32(h[i]);
        return;
    }
    const int64_t rb = kv.row_bytes();
    std::vector<uint8_t> codes(std::size_t(n * rb));
    std::vector<float> prm(std::size_t(n * 2));
    CUDA_CHECK(cudaMemcpy(codes.data(), static_cast<const uint8_t*>(values ? c.v : c.k) + row0 * rb, codes.size(),
                          cudaMemcpyDeviceToHost));
    CUDA_CHECK(cudaMemcpy(prm.data(), (values ? c.vp : c.kp) + row0 * 2, prm.size() * 4, cudaMemcpyDeviceToHost));
    for (int64_t r = 0; r < n; ++r)
        for (int64_t d = 0; d < kv.Hd; ++d)
            out[r * kv.Hd + d] = rt::kv_dequant(codes.data() + r * rb, d, kv.bits, prm[2 * r], prm[2 * r + 1]);
}

}  // namespace quellm::cuda
