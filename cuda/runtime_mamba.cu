// runtime_mamba.cu — the Mamba-1 forward pass on the GPU (math: MODELS.md §3.3–3.4; the CPU twin:
// cpp/runtime/mamba.cpp). One forward enqueues, for B sequences × T tokens (N = B·T rows):
//
//   embed → per layer: [add +] RMSNorm → in_proj → causal conv + SiLU (mamba_conv_cuda, conv state)
//           → x_proj → dt_proj (on the dt_low columns) → selective scan with D skip, softplus(dt)
//           and SiLU(z) gating (mamba_scan_cuda, SSM state) → out_proj
//   → add + final RMSNorm → lm_head → f32 logits
//
// The conv and SSM states are f32 on the device, (n_layers, B, Di, K−1) and (n_layers, B, Di, N).
// A decode step (T = 1) is replayed from a CUDA graph.
#include <algorithm>
#include <map>

#include "quant_linear.h"
#include "runtime/mamba.h"
#include "runtime_internal.cuh"

namespace quellm::cuda {

namespace {

class MambaGpuState final : public GpuState {
  public:
    int64_t L = 0, Di = 0, K1 = 0, Ns = 0;
    DevMem conv, ssm;
    Scratch scratch;
    DecodeGraph graph;

    MambaGpuState(const MambaConfig& c, int64_t B, const void* owner) {
        B_ = B;
        S_ = 0;
        owner_ = owner;
        L = c.n_layers;
        Di = c.d_inner;
        K1 = c.d_conv - 1;
        Ns = c.d_state;
        conv.alloc(std::size_t(L) * B * Di * std::max<int64_t>(K1, 1) * sizeof(float), "the Mamba conv state");
        ssm.alloc(std::size_t(L) * B * Di * Ns * sizeof(float), "the Mamba SSM state");
        reset();
    }
    float* conv_layer(int64_t l) const { return conv.as<float>() + std::size_t(l) * B_ * Di * K1; }
    float* ssm_layer(int64_t l) const { return ssm.as<float>() + std::size_t(l) * B_ * Di * Ns; }
    void set_len_host(int64_t n) { len_ = n; }
    void reset() override {
        CUDA_CHECK(cudaMemset(conv.get(), 0, conv.size()));
        CUDA_CHECK(cudaMemset(ssm.get(), 0, ssm.size()));
        // The forward runs on the model's non-blocking stream, which does not wait for the legacy
        // default stream: finish the clearing first.
        CUDA_CHECK(cudaDeviceSynchronize());
        len_ = 0;
    }
    void truncate(int64_t) override {
        QUELLM_CHECK(false, "truncate: a Mamba state cannot forget tokens (it has no per-position cache)");
    }
    std::size_t nbytes() const override { return conv.size() + ssm.size() + scratch.nbytes(); }
};

struct MambaLayerDev {
    DevMem norm, conv_w, conv_b, A, Dskip;
    CudaLinearPtr in_proj, x_proj, dt_proj, out_proj;
};

class GpuMamba final : public GpuModel {
  public:
    GpuMamba(const MambaConfig& c, const MambaWeights& w, RuntimeOptions opt) : c_(c) {
        QUELLM_CHECK(opt.act == DType::F16 || opt.act == DType::BF16 || opt.act == DType::F32,
                     "GPU runtime: activations must be f16, bf16 or f32");
        QUELLM_CHECK(c.d_state <= 256 && c.d_conv >= 1 && c.d_conv <= 64,
                     "GPU runtime: Mamba needs state_size <= 256 and conv_kernel in [1, 64]");
        QUELLM_CHECK(int64_t(w.layers.size()) == c.n_layers, "GPU runtime: weights for ", w.layers.size(),
                     " layers, config has ", c.n_layers);
        opt_ = opt;
        set_graphs(opt.graphs);
        const DType act = opt.act;
        const int64_t D = c.dim, Di = c.d_inner, Ns = c.d_state, K = c.d_conv;
        std::map<std::string, int> kinds;
        auto lin = [&](const Linear& l) {
            CudaLinearPtr p = upload_linear(l, act);
            weight_bytes_ += cuda_linear_nbytes(*p);
            ++kinds[cuda_linear_kernel(*p)];
            return p;
        };
        embed_ = upload_as(w.embed, std::size_t(c.vocab_size) * D, act, "the token embeddings");
        weight_bytes_ += embed_.size();
        for (const MambaLayer& L : w.layers) {
            MambaLayerDev d;
            d.norm = upload(L.norm, D * sizeof(float), "a norm weight");
            d.conv_w = upload(L.conv_w, Di * K * sizeof(float), "conv weights");
            if (L.conv_b) d.conv_b = upload(L.conv_b, Di * sizeof(float), "conv bias");
            d.A = upload(L.A.data(), L.A.size() * sizeof(float), "A");
            d.Dskip = upload(L.D, Di * sizeof(float), "D");
            weight_bytes_ += d.norm.size() + d.conv_w.size() + d.conv_b.size() + d.A.size() + d.Dskip.size();
            QUELLM_CHECK(int64_t(L.A.size()) == Di * Ns, "GPU runtime: A has the wrong size");
            d.in_proj = lin(L.in_proj);
            d.x_proj = lin(L.x_proj);
            d.dt_proj = lin(L.dt_proj);
            d.out_proj = lin(L.out_proj);
            layers_.push_back(std::move(d));
        }
        norm_f_ = upload(w.norm_f, D * sizeof(float), "the final norm weight");
        head_ = upload_head(w.lm_head, act, &head_act_);
        weight_bytes_ += cuda_linear_nbytes(*head_) + norm_f_.size();
        ++kinds[cuda_linear_kernel(*head_)];
        kernels_.assign(kinds.begin(), kinds.end());
        CUDA_CHECK(cudaDeviceSynchronize());
    }

    int64_t vocab_size() const override { return c_.vocab_size; }

    std::unique_ptr<GpuState> new_state(int64_t B, int64_t) override {
        QUELLM_CHECK(B >= 1, "new_state: batch must be >= 1, got ", B);
        return std::make_unique<MambaGpuState>(c_, B, this);
    }

    void forward(const int32_t* tokens, int64_t B, int64_t T, GpuState& st_, bool all_logits, float* logits) override {
        QUELLM_CHECK(st_.owner() == this, "forward: the state was made for another model; make new states");
        MambaGpuState& st = static_cast<MambaGpuState&>(st_);
        QUELLM_CHECK(B == st.batch() && T >= 1, "forward: state for ", st.batch(), " sequences, tokens for ", B);
        const int64_t N = B * T, V = c_.vocab_size, rows = all_logits ? N : B;
        for (int64_t i = 0; i < N; ++i)
            QUELLM_CHECK(tokens[i] >= 0 && tokens[i] < V, "forward: token id ", tokens[i], " out of range [0, ", V, ")");
        const Plan p = plan(st, B, T, rows);
        cudaStream_t s = impl_->stream;
        CUDA_CHECK(cudaMemcpyAsync(p.tokens, tokens, N * sizeof(int32_t), cudaMemcpyHostToDevice, s));
        const bool use_graph = T == 1 && opt_.graphs && !impl_->profile;
        if (run_maybe_graphed(st.graph, st.scratch.gen, use_graph, s, [&] { body(p, st, B, T, !all_logits); }))
            ++graph_replays_;
        CUDA_CHECK(cudaMemcpyAsync(logits, p.logits, rows * V * sizeof(float), cudaMemcpyDeviceToHost, s));
        CUDA_CHECK(cudaStreamSynchronize(s));
        if (impl_->profile) impl_->collect();
        st.set_len_host(st.len() + T);
    }

  private:
    struct Plan {
        int32_t* tokens;
        float *x, *logits;
        void *h, *xz, *u, *dbc, *dtl, *dt, *yv, *y, *hh, *lt, *ws;
    };

    MambaConfig c_;
    DevMem embed_, norm_f_;
    std::vector<MambaLayerDev> layers_;
    CudaLinearPtr head_;
    DType head_act_ = DType::F16;

    Plan plan(MambaGpuState& st, int64_t B, int64_t T, int64_t rows) {
        const int64_t N = B * T, D = c_.dim, Di = c_.d_inner, R = c_.dt_rank, P = R + 2 * c_.d_state;
        const std::size_t e = dtype_size(opt_.act);
        Scratch& sc = st.scratch;
        Plan p{};
        p.tokens = static_cast<int32_t*>(sc.get("tokens", N * sizeof(int32_t)));
        p.x = static_cast<float*>(sc.get("the residual stream", N * D * sizeof(float)));
        p.h = sc.get("normed activations", N * D * e);
        p.xz = sc.get("in_proj output", N * 2 * Di * e);
        p.u = sc.get("conv output", N * Di * e);
        p.dbc = sc.get("x_proj output", N * P * e);
        p.dtl = sc.get("dt_low", N * std::max<int64_t>(R, 1) * e);
        p.dt = sc.get("dt", N * Di * e);
        p.yv = sc.get("scan output", N * Di * e);
        p.y = sc.get("linear output", N * D * e);
        p.hh = sc.get("lm_head input", rows * D * dtype_size(head_act_));
        p.logits = static_cast<float*>(sc.get("logits", rows * c_.vocab_size * sizeof(float)));
        p.lt = head_act_ == DType::F32 ? nullptr : sc.get("logits (act)", rows * c_.vocab_size * e);
        std::size_t ws = cuda_linear_workspace_bytes(*head_, rows);
        for (const MambaLayerDev& L : layers_)
            for (const CudaLinearPtr* l : {&L.in_proj, &L.x_proj, &L.dt_proj, &L.out_proj})
                ws = std::max(ws, cuda_linear_workspace_bytes(**l, N));
        p.ws = sc.get("linear workspace", std::max<std::size_t>(ws, 256));
        return p;
    }

    void lin(const CudaLinearPtr& L, const void* x, int64_t M, void* y, const Plan& p) {
        cuda_linear_forward(*L, x, M, y, p.ws, impl_->stream);
    }

    void body(const Plan& p, MambaGpuState& st, int64_t B, int64_t T, bool last_only) {
        cudaStream_t s = impl_->stream;
        Impl& im = *impl_;
        const DType act = opt_.act;
        const std::size_t e = dtype_size(act);
        const int64_t N = B * T, D = c_.dim, Di = c_.d_inner, Ns = c_.d_state, R = c_.dt_rank, P = R + 2 * Ns;
        const int64_t V = c_.vocab_size, rows = last_only ? B : N;
        const float eps = c_.norm_eps;
        {
            Prof pr(im, "embedding");
            launch_embed(p.tokens, embed_.get(), act, N, D, p.x, s);
        }
        for (std::size_t l = 0; l < layers_.size(); ++l) {
            const MambaLayerDev& L = layers_[l];
            {
                Prof pr(im, "rmsnorm");
                launch_add_rmsnorm(p.x, l ? p.y : nullptr, act, L.norm.as<float>(), N, D, eps, p.h, act, T, false, s);
            }
            {
                Prof pr(im, "linear.in_proj");
                lin(L.in_proj, p.h, N, p.xz, p);
            }
            {
                Prof pr(im, "mamba_conv");
                MambaConvCudaParams cp;
                cp.xs = p.xz;
                cp.ld_xs = 2 * Di;
                cp.conv_w = L.conv_w.as<float>();
                cp.conv_b = L.conv_b.get() ? L.conv_b.as<float>() : nullptr;
                cp.conv_state = st.conv_layer(int64_t(l));
                cp.u = p.u;
                cp.act = act;
                cp.B = B;
                cp.T = T;
                cp.Di = Di;
                cp.K = c_.d_conv;
                mamba_conv_cuda(cp, s);
            }
            {
                Prof pr(im, "linear.x_proj");
                lin(L.x_proj, p.u, N, p.dbc, p);
            }
            {
                Prof pr(im, "linear.dt_proj");
                launch_copy_cols(p.dbc, P, 0, R, p.dtl, N, act, s);
                lin(L.dt_proj, p.dtl, N, p.dt, p);
            }
            {
                Prof pr(im, "mamba_scan");
                MambaScanCudaParams sp;
                sp.u = p.u;
                sp.dt = p.dt;
                sp.bc = static_cast<const char*>(p.dbc) + R * e;
                sp.ld_bc = P;
                sp.z = static_cast<const char*>(p.xz) + Di * e;
                sp.ld_z = 2 * Di;
                sp.A = L.A.as<float>();
                sp.Dskip = L.Dskip.as<float>();
                sp.ssm_state = st.ssm_layer(int64_t(l));
                sp.y = p.yv;
                sp.act = act;
                sp.dt_softplus = true;
                sp.B = B;
                sp.T = T;
                sp.Di = Di;
                sp.N = Ns;
                mamba_scan_cuda(sp, s);
            }
            {
                Prof pr(im, "linear.out_proj");
                lin(L.out_proj, p.yv, N, p.y, p);
            }
        }
        {
            Prof pr(im, "rmsnorm");
            launch_add_rmsnorm(p.x, layers_.empty() ? nullptr : p.y, act, norm_f_.as<float>(), N, D, eps, p.hh, head_act_, T,
                               last_only, s);
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
    }
};

}  // namespace

std::unique_ptr<GpuModel> gpu_mamba(const MambaConfig& c, const MambaWeights& w, RuntimeOptions opt) {
    return std::make_unique<GpuMamba>(c, w, opt);
}

void gpu_mamba_read_state(const GpuModel& m, const GpuState& st_, int64_t layer, int64_t b, int64_t Di, int64_t K1,
                          int64_t N, float* conv, float* ssm) {
    QUELLM_CHECK(dynamic_cast<const GpuMamba*>(&m) != nullptr && st_.owner() == &m,
                 "read_state: not a state of this Mamba model");
    const MambaGpuState& st = static_cast<const MambaGpuState&>(st_);
    QUELLM_CHECK(layer >= 0 && layer < st.L && b >= 0 && b < st.batch(), "read_state: layer or sequence out of range");
    QUELLM_CHECK(Di == st.Di && K1 == st.K1 && N == st.Ns, "read_state: the state is (", st.Di, ", ", st.K1, ") / (",
                 st.Di, ", ", st.Ns, ")");
    const std::size_t nc = std::size_t(st.Di * st.K1), ns = std::size_t(st.Di * st.Ns);
    if (nc) CUDA_CHECK(cudaMemcpy(conv, st.conv_layer(layer) + b * nc, nc * sizeof(float), cudaMemcpyDeviceToHost));
    CUDA_CHECK(cudaMemcpy(ssm, st.ssm_layer(layer) + b * ns, ns * sizeof(float), cudaMemcpyDeviceToHost));
}

}  // namespace quellm::cuda
