// quant_linear.h — the quantized linear layer every runtime linear goes through (DESIGN.md §2):
//
//   x (f32 rows) → [online transform: none | Hadamard]  → [activation quantizer: none | int8 | int4]
//                → GEMM kernel for (weight format × activation format) → epilogue (scales, bias)
//
// Weight formats: f32, int8 (symmetric), int4 (symmetric, or asymmetric for weight-only), with
// per-group scales along `in` (G = in: per output channel), and MXFP4. Activation formats: none
// (f32), int8 / int4 per-token symmetric with a clip ratio (quantize_rows), MXFP4 / MXFP8 (E4M3)
// (blocks of 32, quantize_rows_mxfp4 / _mxfp8), OliVe OVP4 per token (quantize_rows_ovp4).
// Kernels per pair:
//   f32  × none          → matmul_f32
//   int4 / int8 × none   → gemm_wf   (W4A16 / W8A16: dequantize in registers)
//   int4 / int8 × int8 / int4 → gemm_int (W4A8, W8A8, W4A4, W8A4; symmetric weights)
//   MXFP4 × MXFP4 / int8, int4 / int8 (group 32) × MXFP4 → gemm_int (2·E2M1 values are integers)
//   OVP4 / int4 / int8 × int8 / int4 / OVP4 → gemm_int (OVP pairs decode to integers: int4
//                         normals, abfloat outliers ≤ 96)
//   MXFP4, int4 / int8 (group 32) × MXFP8 → gemm_mx8 (E4M3 values · 2^9 are 18-bit integers)
// The Hadamard transform (QuaRot) rotates each activation row by H_n/√n with the FWHT kernel; the
// weights were rotated offline by the same matrix, so x·Wᵀ is unchanged up to quantization.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "gemm.h"

namespace quellm {

enum class AQuant : int { None = 0, Int8 = 8, Int4 = 4, Mxfp4 = 1, Mxfp8 = 2, Ovp4 = 3 };

struct HadamardSpec {
    int64_t p = 0;             // power-of-two part, n = m · p
    int m = 0;                 // 0: no transform
    std::vector<int8_t> hm;    // (m, m) ±1, empty when m == 1
};

class QuantLinear {
  public:
    int64_t N = 0, K = 0;      // out, in
    int w_bits = 32;           // 32 (f32), 8, 4 (int4 or MXFP4)
    bool w_mxfp4 = false;      // weights are MXFP4 (E2M1 codes, E8M0 scales per 32)
    bool w_ovp4 = false;       // weights are OliVe OVP4 pairs (int4 normal type), per-row scales
    int64_t group = 0;         // weight group size along K (K: per channel); 0 for f32
    AQuant aq = AQuant::None;
    float a_clip = 1.0f;
    HadamardSpec hadamard;

    // f32 weights (N, K), copied.
    static QuantLinear from_f32(const float* w, int64_t N, int64_t K);
    // int4: codes (N, K/2) nibbles (two's complement when zeros == nullptr, else unsigned with
    // zero points); int8: codes (N, K) int8, symmetric. scales / zeros (N, K/G). Packed once, for
    // the kernels of activation format a.
    static QuantLinear from_int(int bits, const uint8_t* codes, const float* scales, const float* zeros, int64_t N,
                                int64_t K, int64_t G, AQuant a = AQuant::None, float a_clip = 1.0f);
    // MXFP4 weights: E2M1 codes (N, K/2), E8M0 scale codes (N, K/32); integer activations only.
    static QuantLinear from_mx4(const uint8_t* codes, const uint8_t* scale_codes, int64_t N, int64_t K, AQuant a);
    // OVP4 weights: pair codes (N, K/2), scales (N); int8 / int4 per-token activations.
    static QuantLinear from_ovp4(const uint8_t* codes, const float* scales, int64_t N, int64_t K, AQuant a, float a_clip);
    void set_bias(const float* b);               // (N) or nullptr
    void set_activation(AQuant a, float clip);   // throws for pairs without a kernel
    void set_hadamard(HadamardSpec h);           // throws unless n == m·p matches K

    // y (M, N) = quantized forward of x (M, K). Concurrent forwards are safe; the set_* methods
    // repack the weights and must not run while a forward (or a model holding this layer) runs.
    void forward(const float* x, int64_t M, float* y) const;

    bool has_bias() const { return !bias_.empty(); }
    const std::vector<float>& bias() const { return bias_; }
    size_t nbytes() const;     // bytes of weights + scales + bias as held
    std::string kernel() const;  // "f32", "w4a16", "w8a8", ...
    // Canonical weights back: codes, scales, zeros (empty when symmetric) — for saving and tests.
    void export_int(std::vector<uint8_t>& codes, std::vector<float>& scales, std::vector<float>& zeros) const;
    const std::vector<float>& f32_weight() const { return wf32_; }

  private:
    bool asym_ = false;
    std::vector<float> wf32_;  // w_bits 32
    WfWeights wf_;             // weight-only kernels (activation none)
    IntPacked wi_;             // integer kernels (activation int8/int4)
    std::vector<float> bias_;
    // Weights are held once, in the layout of the current activation format's kernel (wf_ or wi_);
    // switching between weight-only and integer activations repacks via the canonical form.
    void pack(const std::vector<uint8_t>& codes, const std::vector<float>& scales, const std::vector<float>& zeros);
};

}  // namespace quellm
