// gemm_layout.h — the device image of a QuantLinear: what cuda_linear_upload (cuda/gemm.cu) copies
// to the GPU, built on the host from the layer's canonical codes (QuantLinear::export_int). Host-only
// C++ with no CUDA types, so the CPU tests (cpp/tests/test_kernels.cpp) check it too.
//
//   Float: weights (N, ldw) in the activation dtype (f32 / f16 / bf16 bits), ldw elements, rows
//          32-byte aligned.
//   Wf:    weight-only; int8 signed codes (N, ldw) bytes, or int4 unsigned nibbles u (element 2i in
//          the low nibble of byte i) with zero points z (N, NG) — symmetric int4 q is stored
//          u = q + 8, z = 8; scales (N, NG): w = (u − z)·s.
//   Int:   integer activations; canonical codes (int8, int4 two's complement, MXFP4 E2M1, OVP4
//          pairs) (N, ldw) bytes and scales (N, NG) (MXFP4: 2^(code − 127) / 2).
// Rows are padded to 16 bytes (ldw) with codes that decode to 0.
#pragma once

#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "common.h"
#include "cuda_api.h"
#include "gemm_hd.h"
#include "quant_linear.h"

namespace quellm::cuda {

enum class LinearKind { Float, Wf, Int };

struct LinearImage {
    LinearKind kind = LinearKind::Float;
    int64_t N = 0, K = 0, G = 0, NG = 1;
    int64_t ldw = 0;            // float: elements; else bytes
    int wbits = 32;
    WCode wcode = WCode::S8;    // Int
    std::string name;           // cuda_linear_kernel
    std::vector<uint8_t> w;     // (N, ldw)
    std::vector<float> scales;  // (N, NG); empty for float weights
    std::vector<uint8_t> zeros; // Wf int4: (N, NG)
};

inline LinearImage linear_image(const QuantLinear& q, DType act) {
    QUELLM_CHECK(act == DType::F32 || act == DType::F16 || act == DType::BF16,
                 "cuda_linear_upload: act must be F32, F16 or BF16");
    QUELLM_CHECK(q.N >= 1 && q.K >= 1, "cuda_linear_upload: empty layer");
    auto align_up = [](int64_t v, int64_t a) { return (v + a - 1) / a * a; };
    auto dtype_str = [](DType t) { return t == DType::F32 ? "f32" : t == DType::F16 ? "f16" : "bf16"; };
    LinearImage img;
    img.N = q.N;
    img.K = q.K;
    const int64_t N = q.N, K = q.K;
    if (q.w_bits == 32) {
        QUELLM_CHECK(q.aq == AQuant::None, "cuda_linear_upload: no device kernel for f32 weights with quantized "
                     "activations");
        img.kind = LinearKind::Float;
        img.G = K;
        img.NG = 1;
        img.name = dtype_str(act);
        const int esz = act == DType::F32 ? 4 : 2;
        img.ldw = align_up(K, 16 / esz * 2);  // rows 16-byte aligned (32 for f32)
        img.w.assign(size_t(N * img.ldw * esz), 0);
        const std::vector<float>& wf = q.f32_weight();
        for (int64_t n = 0; n < N; ++n)
            for (int64_t k = 0; k < K; ++k) {
                const float v = wf[size_t(n * K + k)];
                uint8_t* dst = img.w.data() + (n * img.ldw + k) * esz;
                if (act == DType::F32) {
                    std::memcpy(dst, &v, 4);
                } else {
                    const uint16_t h = act == DType::F16 ? f32_to_f16(v) : f32_to_bf16(v);
                    std::memcpy(dst, &h, 2);
                }
            }
    } else {
        std::vector<uint8_t> codes;
        std::vector<float> zeros;
        q.export_int(codes, img.scales, zeros);
        img.wbits = q.w_bits;
        img.G = q.group;
        QUELLM_CHECK(img.G >= 1 && K % img.G == 0, "cuda_linear_upload: group ", img.G, " does not divide K = ", K);
        img.NG = K / img.G;
        img.name = q.kernel();
        const int64_t rowbytes = q.w_bits == 4 ? K / 2 : K;
        img.ldw = align_up(rowbytes, 16);
        const bool asym = !zeros.empty();
        img.w.assign(size_t(N * img.ldw), q.w_bits == 4 && q.aq == AQuant::None ? 0x88 : 0);
        for (int64_t n = 0; n < N; ++n) std::memcpy(img.w.data() + n * img.ldw, codes.data() + n * rowbytes, size_t(rowbytes));
        if (q.aq == AQuant::None) {
            QUELLM_CHECK(!q.w_mxfp4 && !q.w_ovp4, "cuda_linear_upload: no weight-only MXFP4/OVP4 kernel");
            img.kind = LinearKind::Wf;
            if (q.w_bits == 4) {  // unsigned nibbles u and zero points z: w = (u − z)·s
                img.zeros.resize(img.scales.size());
                for (size_t i = 0; i < img.zeros.size(); ++i) img.zeros[i] = asym ? uint8_t(zeros[i]) : 8;
                if (!asym)
                    for (int64_t n = 0; n < N; ++n)
                        for (int64_t j = 0; j < rowbytes; ++j) img.w[size_t(n * img.ldw + j)] ^= 0x88;
            }
        } else {
            QUELLM_CHECK(!asym, "cuda_linear_upload: integer-activation kernels need symmetric weights");
            img.kind = LinearKind::Int;
            img.wcode = q.w_mxfp4 ? WCode::E2M1 : q.w_ovp4 ? WCode::OVP : q.w_bits == 4 ? WCode::S4 : WCode::S8;
            QUELLM_CHECK(q.aq != AQuant::Mxfp4 || (img.G == 32 && K % 32 == 0), "cuda_linear_upload: MXFP4 activations "
                         "need weight groups of 32");
        }
    }
    return img;
}

}  // namespace quellm::cuda
