// observe.cpp — accumulation of the calibration statistics (see observe.h).
#include "observe.h"

#include <omp.h>

#include <cmath>

#include "common.h"
#include "cpu_features.h"
#include "matmul.h"

namespace quellm {

const char* obs_kind_name(int kind) {
    static const char* names[OBS_NUM_KINDS] = {
        "attn_in", "o_proj_in", "mlp_in", "down_proj_in", "k", "v",
        "in_proj_in", "x_proj_in", "dt_proj_in", "dt", "B", "C", "out_proj_in", "lm_head_in"};
    return kind >= 0 && kind < OBS_NUM_KINDS ? names[kind] : "?";
}

Observers::Observers(int64_t layers, bool xtx) : n_layers(layers), want_xtx(xtx), stats(size_t((layers + 1) * OBS_NUM_KINDS)) {}

void Observers::observe(int64_t layer, int kind, const float* x, int64_t rows, int64_t cols, int64_t ld) {
    QUELLM_CHECK(layer >= 0 && layer <= n_layers && kind >= 0 && kind < OBS_NUM_KINDS, "observe: bad point");
    ChannelStats& s = at(layer, kind);
    if (s.channels == 0) {
        s.channels = cols;
        s.absmax.assign(size_t(cols), 0.0f);
        s.sum.assign(size_t(cols), 0.0);
        s.sum2.assign(size_t(cols), 0.0);
        s.sum3.assign(size_t(cols), 0.0);
        s.sum4.assign(size_t(cols), 0.0);
        if (want_xtx) s.xtx.assign(size_t(cols * cols), 0.0);
    }
    QUELLM_CHECK(s.channels == cols, "observe: point ", obs_kind_name(kind), " of layer ", layer, " saw ", cols,
                 " channels, earlier ", s.channels);
    // Per-channel moments, OpenMP over channels (each channel summed over rows in order).
    int any_bad = 0;
#pragma omp parallel for num_threads(num_threads()) schedule(static) reduction(| : any_bad)
    for (int64_t c = 0; c < cols; ++c) {
        float mx = s.absmax[c];
        double a1 = 0, a2 = 0, a3 = 0, a4 = 0;
        for (int64_t r = 0; r < rows; ++r) {
            const float v = x[r * ld + c];
            if (!std::isfinite(v)) {
                any_bad = 1;
                continue;
            }
            const double d = v, d2 = d * d;
            mx = std::fabs(v) > mx ? std::fabs(v) : mx;
            a1 += d;
            a2 += d2;
            a3 += d2 * d;
            a4 += d2 * d2;
        }
        s.absmax[c] = mx;
        s.sum[c] += a1;
        s.sum2[c] += a2;
        s.sum3[c] += a3;
        s.sum4[c] += a4;
    }
    if (any_bad && !s.nonfinite) {
        for (int64_t r = 0; r < rows && !s.nonfinite; ++r)
            for (int64_t c = 0; c < cols; ++c)
                if (!std::isfinite(x[r * ld + c])) {
                    s.nonfinite = true;
                    s.bad_row = s.count + r;
                    s.bad_channel = c;
                    break;
                }
    }
    if (want_xtx && rows > 0) {
        // XᵀX as a GEMM: with xt = Xᵀ (C, rows), XᵀX = xt · xtᵀ. Non-finite rows are zeroed.
        std::vector<float> xt(size_t(cols * rows)), g(size_t(cols * cols));
        for (int64_t r = 0; r < rows; ++r)
            for (int64_t c = 0; c < cols; ++c) {
                const float v = x[r * ld + c];
                xt[size_t(c * rows + r)] = std::isfinite(v) ? v : 0.0f;
            }
        MatmulParams p{xt.data(), xt.data(), nullptr, g.data(), cols, cols, rows, rows, cols};
        matmul_f32(p);
        for (size_t i = 0; i < g.size(); ++i) s.xtx[i] += g[i];
    }
    s.count += rows;
}

}  // namespace quellm
