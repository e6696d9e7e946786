// mamba.cpp — forward pass of the Mamba-1 runtime (see mamba.h and MODELS.md §3.3–3.4).
//
// Linears run over all B·T rows as GEMMs; the causal conv and the selective scan run channel by
// channel (OpenMP over (sequence, channel)), keeping the channel's N-state in registers/L1 and
// walking the T tokens in order — the same loop for prefill and for a single decode step.
#include "mamba.h"

#include <algorithm>
#include <cmath>

#include "common.h"
#include "cpu_features.h"
#include "forward.h"
#include "matmul.h"
#include "ops.h"
#include "parallel.h"

namespace quellm {

MambaState::MambaState(const MambaConfig& c, int64_t layers) : n_layers(layers ? layers : c.n_layers) {
    QUELLM_CHECK(layers >= 0 && layers <= c.n_layers, "MambaState: layers must be in [0, ", c.n_layers, "], got ", layers);
    conv.assign(size_t(n_layers * c.d_inner * (c.d_conv - 1)), 0.0f);
    ssm.assign(size_t(n_layers * c.d_inner * c.d_state), 0.0f);
}

void mamba_forward(const MambaConfig& c, const MambaWeights& w, const int32_t* tokens, int64_t B, int64_t T,
                   MambaState* const* states, bool all_logits, float* logits, Observers* obs) {
    forward_tokens(w.embed, c.dim, c.vocab_size, c.n_layers, w.norm_f, c.norm_eps, w.lm_head, tokens, B, T, states,
                   all_logits, logits, obs, "state", [&](float* x) { mamba_layers(c, w, x, B, T, 0, c.n_layers, states, obs); });
}

void mamba_layers(const MambaConfig& c, const MambaWeights& w, float* x, int64_t B, int64_t T, int64_t l0, int64_t l1,
                  MambaState* const* states, Observers* obs) {
    const int64_t D = c.dim, Di = c.d_inner, Ns = c.d_state, K = c.d_conv, R = c.dt_rank;
    const int64_t N = B * T, P = R + 2 * Ns;
    QUELLM_CHECK(B >= 1 && T >= 1, "forward: need at least one token per sequence");
    QUELLM_CHECK(0 <= l0 && l0 <= l1 && l1 <= c.n_layers, "forward: layers [", l0, ", ", l1, ") out of range [0, ",
                 c.n_layers, "]");
    QUELLM_CHECK(states[0] != nullptr, "forward: null state");
    const int64_t state_layers = states[0]->n_layers;
    QUELLM_CHECK(state_layers == c.n_layers || state_layers == l1 - l0, "forward: states of ", state_layers,
                 " layers cannot serve layers [", l0, ", ", l1, ")");
    for (int64_t b = 0; b < B; ++b)
        QUELLM_CHECK(states[b] != nullptr && states[b]->n_layers == state_layers &&
                         states[b]->conv.size() == size_t(state_layers * Di * (K - 1)) &&
                         states[b]->ssm.size() == size_t(state_layers * Di * Ns),
                     "forward: the state was made for another model; make new states");
    const int64_t base = state_layers == c.n_layers ? 0 : l0;  // state layer = l - base
    const int nt = num_threads();

    std::vector<float> h(N * D), xz(N * 2 * Di), u(N * Di), dbc(N * P), dt(N * Di), y(N * Di);
    for (int64_t l = l0; l < l1; ++l) {
        const MambaLayer& L = w.layers[l];
        const int64_t sl = l - base;
        parallel_for(N, N * D >= kParallelMin ? nt : 1,
                     [&](int64_t i) { rmsnorm(h.data() + i * D, x + i * D, L.norm, D, c.norm_eps); });
        if (obs) obs->observe(l, OBS_MAMBA_IN, h.data(), N, D, D);
        linear_forward(L.in_proj, h.data(), N, xz.data());

        // Causal depthwise conv over [state (K-1 oldest→newest), new tokens], then SiLU.
        parallel_for(B * Di, N * Di * K >= kParallelMin ? nt : 1, [&](int64_t bc) {
            const int64_t b = bc / Di, ch = bc % Di;
            float* cs = states[b]->conv.data() + (sl * Di + ch) * (K - 1);
            const float* wk = L.conv_w + ch * K;
            float win[64];  // K <= 64 (checked at model construction)
            for (int64_t k = 0; k < K - 1; ++k) win[k] = cs[k];
            for (int64_t t = 0; t < T; ++t) {
                const int64_t i = b * T + t;
                u[i * Di + ch] = silu(mamba_conv_token(win, wk, L.conv_b ? L.conv_b[ch] : 0.0f, K, xz[i * 2 * Di + ch]));
            }
            for (int64_t k = 0; k < K - 1; ++k) cs[k] = win[k];
        });

        // dt_low, B, C = x_proj(u); dt = softplus(dt_proj(dt_low) + bias).
        if (obs) obs->observe(l, OBS_MAMBA_U, u.data(), N, Di, Di);
        linear_forward(L.x_proj, u.data(), N, dbc.data());
        {
            MatmulParams p{dbc.data(), L.dt_proj.w, L.dt_proj.b, dt.data(), N, Di, R, P, Di};
            matmul_f32(p);
        }
        parallel_for(N * Di, N * Di >= kParallelMin ? nt : 1, [&](int64_t i) { dt[i] = softplus(dt[i]); });
        if (obs) {
            obs->observe(l, OBS_MAMBA_DT_LOW, dbc.data(), N, R, P);
            obs->observe(l, OBS_MAMBA_B, dbc.data() + R, N, Ns, P);
            obs->observe(l, OBS_MAMBA_C, dbc.data() + R + Ns, N, Ns, P);
            obs->observe(l, OBS_MAMBA_DT, dt.data(), N, Di, Di);
        }

        // Selective scan with D skip and SiLU(z) gating, channel by channel.
        parallel_for(B * Di, nt, [&](int64_t bc) {
            const int64_t b = bc / Di, ch = bc % Di;
            float* hs = states[b]->ssm.data() + (sl * Di + ch) * Ns;
            const float* A = L.A.data() + ch * Ns;
            for (int64_t t = 0; t < T; ++t) {
                const int64_t i = b * T + t;
                const float uu = u[i * Di + ch];
                const float* Bt = dbc.data() + i * P + R;
                const float acc = mamba_scan_token(hs, A, Ns, dt[i * Di + ch], uu, Bt, Bt + Ns, L.D[ch]);
                const float z = xz[i * 2 * Di + Di + ch];
                y[i * Di + ch] = acc * silu(z);
            }
        });
        if (obs) obs->observe(l, OBS_MAMBA_Y, y.data(), N, Di, Di);
        linear_forward(L.out_proj, y.data(), N, h.data());
        for (int64_t i = 0; i < N * D; ++i) x[i] += h[i];
    }
}

}  // namespace quellm
