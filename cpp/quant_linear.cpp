// quant_linear.cpp — QuantLinear: packing by activation format and the forward pipeline.
#include "quant_linear.h"

#include <algorithm>
#include <cmath>

#include "common.h"
#include "fwht.h"
#include "matmul.h"

namespace quellm {

QuantLinear QuantLinear::from_f32(const float* w, int64_t N, int64_t K) {
    QUELLM_CHECK(N >= 1 && K >= 1, "QuantLinear: empty weight");
    QuantLinear q;
    q.N = N;
    q.K = K;
    q.wf32_.assign(w, w + N * K);
    return q;
}

QuantLinear QuantLinear::from_int(int bits, const uint8_t* codes, const float* scales, const float* zeros, int64_t N,
                                  int64_t K, int64_t G, AQuant a, float a_clip) {
    QUELLM_CHECK(bits == 4 || bits == 8, "QuantLinear: weight bits must be 4 or 8, got ", bits);
    QUELLM_CHECK(N >= 1 && K >= 1, "QuantLinear: empty weight");
    QUELLM_CHECK(G >= 1 && K % G == 0, "QuantLinear: group size ", G, " does not divide in_features = ", K);
    QUELLM_CHECK(bits == 8 || K % 2 == 0, "QuantLinear: int4 weights need an even in_features, got ", K);
    QUELLM_CHECK(bits == 8 || G % 2 == 0, "QuantLinear: int4 weights need an even group size, got ", G);
    QUELLM_CHECK(bits == 4 || zeros == nullptr, "QuantLinear: int8 weights must be symmetric");
    QuantLinear q;
    q.N = N;
    q.K = K;
    q.w_bits = bits;
    q.group = G;
    q.asym_ = zeros != nullptr;
    const int64_t NG = K / G;
    std::vector<uint8_t> c(codes, codes + N * (bits == 4 ? K / 2 : K));
    std::vector<float> s(scales, scales + N * NG), z;
    if (zeros) z.assign(zeros, zeros + N * NG);
    for (int64_t i = 0; i < N * NG; ++i) {
        QUELLM_CHECK(std::isfinite(s[i]), "QuantLinear: non-finite weight scale at row ", i / NG);
        if (zeros) QUELLM_CHECK(z[i] >= 0.0f && z[i] <= 15.0f && z[i] == std::nearbyint(z[i]),
                                "QuantLinear: int4 zero point must be an integer in [0, 15] (row ", i / NG, ")");
    }
    q.set_activation(a, a_clip);  // checks the pair; nothing is packed yet
    q.pack(c, s, z);
    return q;
}

QuantLinear QuantLinear::from_mx4(const uint8_t* codes, const uint8_t* scale_codes, int64_t N, int64_t K, AQuant a) {
    QUELLM_CHECK(N >= 1 && K >= 1, "QuantLinear: empty weight");
    QUELLM_CHECK(a == AQuant::Int8 || a == AQuant::Mxfp4 || a == AQuant::Mxfp8, "QuantLinear: MXFP4 weights run "
                 "with int8, MXFP4 or MXFP8 activations (no weight-only MXFP4 kernel)");
    QuantLinear q;
    q.N = N;
    q.K = K;
    q.w_bits = 4;
    q.w_mxfp4 = true;
    q.group = 32;
    q.set_activation(a, 1.0f);
    q.wi_ = gemm_mx4_repack(codes, scale_codes, N, K);
    return q;
}

QuantLinear QuantLinear::from_ovp4(const uint8_t* codes, const float* scales, int64_t N, int64_t K, AQuant a,
                                   float a_clip) {
    QUELLM_CHECK(N >= 1 && K >= 1, "QuantLinear: empty weight");
    QUELLM_CHECK(a == AQuant::Int8 || a == AQuant::Int4 || a == AQuant::Ovp4, "QuantLinear: OVP4 weights run with "
                 "int8, int4 or OVP4 per-token activations");
    QuantLinear q;
    q.N = N;
    q.K = K;
    q.w_bits = 4;
    q.w_ovp4 = true;
    q.group = K;
    q.set_activation(a, a_clip);
    q.wi_ = gemm_ovp4_repack(codes, scales, N, K);
    return q;
}

void QuantLinear::pack(const std::vector<uint8_t>& codes, const std::vector<float>& scales,
                       const std::vector<float>& zeros) {
    if (aq == AQuant::None) {
        wi_ = IntPacked{};
        wf_.bits = w_bits;
        wf_.N = N;
        wf_.K = K;
        wf_.G = group;
        wf_.codes = codes;
        wf_.scales = scales;
        wf_.zeros.clear();
        if (w_bits == 4) {
            // The kernels read unsigned nibbles u and integer zero points z: symmetric two's
            // complement q becomes u = q + 8, z = 8.
            if (!asym_)
                for (auto& c : wf_.codes) c ^= 0x88;
            wf_.zeros.resize(scales.size());
            for (size_t i = 0; i < scales.size(); ++i) wf_.zeros[i] = asym_ ? uint8_t(zeros[i]) : 8;
        }
        wf_.split32 = w_bits == 4 && group % 32 == 0;
        if (wf_.split32)
            for (int64_t n = 0; n < N; ++n) wf_split32(wf_.codes.data() + n * (K / 2), K, true);
    } else {
        wf_ = WfWeights{};
        wi_ = w_bits == 4 ? gemm_w4_repack(codes.data(), scales.data(), N, K, group)
                          : gemm_w8_repack(reinterpret_cast<const int8_t*>(codes.data()), scales.data(), N, K, group);
    }
}

void QuantLinear::set_bias(const float* b) {
    if (b)
        bias_.assign(b, b + N);
    else
        bias_.clear();
}

void QuantLinear::set_activation(AQuant a, float clip) {
    QUELLM_CHECK(clip > 0.0f && clip <= 1.0f, "QuantLinear: activation clip ratio must lie in (0, 1], got ", clip);
    QUELLM_CHECK(!((w_mxfp4 || w_ovp4) && a == AQuant::None), "QuantLinear: no weight-only MXFP4/OVP4 kernel (use "
                 "integer activations)");
    const bool mx = a == AQuant::Mxfp4 || a == AQuant::Mxfp8;
    QUELLM_CHECK(!mx || (group == 32 && K % 32 == 0), "QuantLinear: MX activations need weights in groups of 32 "
                 "(the MX block), got group ", group);
    QUELLM_CHECK(!(w_ovp4 && mx), "QuantLinear: OVP4 weights run with int8, int4 or OVP4 activations");
    QUELLM_CHECK(!(w_mxfp4 && a == AQuant::Ovp4), "QuantLinear: MXFP4 weights run with int8, MXFP4 or MXFP8 "
                 "activations");
    if (a != AQuant::None) {
        QUELLM_CHECK(w_bits != 32, "QuantLinear: no kernel for f32 weights with quantized activations; "
                     "supported pairs: f32×none, int4×none, int8×none, int4×int8, int4×int4, int8×int8, int8×int4, "
                     "mxfp4×mxfp4, mxfp4×mxfp8, mxfp4×int8, int4×mxfp4, int8×mxfp4, int4×mxfp8, int8×mxfp8, ovp4×int8, "
                     "ovp4×int4, ovp4×ovp4, int4×ovp4, int8×ovp4");
        QUELLM_CHECK(!asym_, "QuantLinear: integer-activation kernels need symmetric weights (asymmetric int4 "
                     "runs weight-only, activation none)");
        QUELLM_CHECK(group % 4 == 0 && K % (w_bits == 4 ? 8 : 4) == 0, "QuantLinear: integer kernels need a group "
                     "size that is a multiple of 4 and in_features a multiple of ", w_bits == 4 ? 8 : 4, " (group ",
                     group, ", in ", K, ")");
    }
    const bool packed = !wf_.codes.empty() || !wi_.codes.empty();
    const bool relayout = packed && (a == AQuant::None) != (aq == AQuant::None);
    std::vector<uint8_t> codes;
    std::vector<float> scales, zeros;
    if (relayout) export_int(codes, scales, zeros);
    const AQuant old = aq;
    aq = a;
    if (relayout) {
        try {
            pack(codes, scales, zeros);
        } catch (...) {
            aq = old;  // leave the layer as it was
            throw;
        }
    }
    a_clip = clip;
}

void QuantLinear::set_hadamard(HadamardSpec h) {
    if (h.m == 0) {
        hadamard = HadamardSpec{};
        return;
    }
    QUELLM_CHECK(h.m * h.p == K, "QuantLinear: Hadamard order ", h.m, "·", h.p, " != in_features ", K);
    QUELLM_CHECK(h.m == 1 ? h.hm.empty() : int64_t(h.hm.size()) == int64_t(h.m) * h.m,
                 "QuantLinear: H_m must be (m, m)");
    FwhtParams fp{nullptr, nullptr, 0, K, h.p, h.m, h.hm.empty() ? nullptr : h.hm.data(), 1.0f};  // shape check only
    fwht_check(fp);
    hadamard = std::move(h);
}

void QuantLinear::forward(const float* x, int64_t M, float* y) const {
    if (M == 0) return;
    std::vector<float> xr;
    if (hadamard.m) {
        xr.resize(size_t(M * K));
        const float scale = float(1.0 / std::sqrt(double(K)));  // = quellm.fwht's default scale
        fwht(FwhtParams{x, xr.data(), M, K, hadamard.p, hadamard.m, hadamard.hm.empty() ? nullptr : hadamard.hm.data(),
                        scale});
        x = xr.data();
    }
    const float* b = bias_.empty() ? nullptr : bias_.data();
    if (w_bits == 32) {
        matmul_f32(MatmulParams{x, wf32_.data(), b, y, M, N, K, K, N});
    } else if (aq == AQuant::None) {
        gemm_wf(GemmWfParams{x, &wf_, b, y, M});
    } else if (aq == AQuant::Mxfp4) {
        const CallBuffer<int8_t> qa(ScratchSlot::ActCodes, size_t(M * K));
        const CallBuffer<float> sa(ScratchSlot::ActScales, size_t(M * (K / 32)));
        quantize_rows_mxfp4(x, M, K, qa.data(), sa.data());
        gemm_int(GemmIntParams{qa.data(), sa.data(), &wi_, b, y, M, K / 32});
    } else if (aq == AQuant::Mxfp8) {
        const CallBuffer<int32_t> qa(ScratchSlot::ActCodes, size_t(M * K));
        const CallBuffer<float> sa(ScratchSlot::ActScales, size_t(M * (K / 32)));
        quantize_rows_mxfp8(x, M, K, qa.data(), sa.data());
        gemm_mx8(GemmMx8Params{qa.data(), sa.data(), &wi_, b, y, M});
    } else if (aq == AQuant::Ovp4) {
        const CallBuffer<int8_t> qa(ScratchSlot::ActCodes, size_t(M * K));
        const CallBuffer<float> sa(ScratchSlot::ActScales, size_t(M));
        quantize_rows_ovp4(x, M, K, qa.data(), sa.data());
        gemm_int(GemmIntParams{qa.data(), sa.data(), &wi_, b, y, M});
    } else {
        const CallBuffer<int8_t> qa(ScratchSlot::ActCodes, size_t(M * K));
        const CallBuffer<float> sa(ScratchSlot::ActScales, size_t(M));
        quantize_rows(x, M, K, int(aq) == 8 ? 127 : 7, a_clip, qa.data(), sa.data());
        gemm_int(GemmIntParams{qa.data(), sa.data(), &wi_, b, y, M});
    }
}

size_t QuantLinear::nbytes() const {
    return 4 * (wf32_.size() + bias_.size()) + wf_.nbytes() + wi_.nbytes();
}

std::string QuantLinear::kernel() const {
    if (w_bits == 32) return "f32";
    const std::string a = aq == AQuant::None    ? "a16"
                          : aq == AQuant::Mxfp4 ? "amx4"
                          : aq == AQuant::Mxfp8 ? "amx8"
                          : aq == AQuant::Ovp4  ? "aovp4"
                                                : "a" + std::to_string(int(aq));
    return (w_mxfp4 ? std::string("wmx4") : w_ovp4 ? std::string("wovp4") : "w" + std::to_string(w_bits)) + a;
}

void QuantLinear::export_int(std::vector<uint8_t>& codes, std::vector<float>& scales, std::vector<float>& zeros) const {
    QUELLM_CHECK(w_bits != 32, "QuantLinear: f32 weights have no integer codes");
    zeros.clear();
    if (aq == AQuant::None) {
        codes = wf_.codes;
        if (wf_.split32)
            for (int64_t n = 0; n < N; ++n) wf_split32(codes.data() + n * (K / 2), K, false);
        scales = wf_.scales;
        if (asym_)
            zeros.assign(wf_.zeros.begin(), wf_.zeros.end());
        else if (w_bits == 4)
            for (auto& c : codes) c ^= 0x88;
    } else {
        codes.resize(size_t(N * (w_bits == 4 ? K / 2 : K)));
        scales.resize(size_t(N * (K / group)));
        gemm_int_unpack(wi_, codes.data(), scales.data());
    }
}

}  // namespace quellm
