// formats_mx.cpp — scalar references of the block formats with power-of-two or FP8 scales:
// OCP MX (mxfp8_e4m3, mxfp8_e5m2, mxfp6_e3m2, mxfp6_e2m3, mxfp4, mxint8; blocks of 32, E8M0
// scale), NVFP4 (E2M1 in blocks of 16, E4M3 block scale, f32 tensor scale) and BFP (m-bit
// sign-magnitude, shared 8-bit exponent, block a parameter). Twin: formats.py MxFormat,
// Nvfp4Format, BfpFormat; formulas in formats_elem.h.
//
// Non-finite input never raises here: a block holding NaN or ±Inf gets the NaN scale code
// (E8M0 0xFF, E4M3 0x7F) and zero codes, and decodes to NaN.
#include <cmath>
#include <cstdint>
#include <vector>

#include "common.h"
#include "formats.h"
#include "formats_elem.h"

namespace quellm {

// Element spec and emax_elem of an MX format (spec.bits == 0 for MXINT8).
ElemSpec mx_elem_spec(FormatType t, int* emax) {
    ElemSpec s{};
    switch (t) {
        case QUELLM_TYPE_MXFP8_E4M3: s = spec_e4m3(); break;
        case QUELLM_TYPE_MXFP8_E5M2: s = spec_e5m2(); break;
        case QUELLM_TYPE_MXFP6_E3M2: s = spec_e3m2(); break;
        case QUELLM_TYPE_MXFP6_E2M3: s = spec_e2m3(); break;
        case QUELLM_TYPE_MXFP4: s = spec_e2m1(); break;
        default: break;  // MXINT8
    }
    *emax = s.bits ? (s.max_code >> s.mbits) - s.bias : 0;
    return s;
}

namespace {

// Pack one row of codes (one per element) into `bits`-bit storage.
void pack_row(const uint32_t* c, int64_t K, int bits, uint8_t* out) {
    if (bits == 8) {
        for (int64_t i = 0; i < K; ++i) out[i] = uint8_t(c[i]);
    } else if (bits == 4) {
        for (int64_t j = 0; j < K / 2; ++j) out[j] = uint8_t(c[2 * j] | (c[2 * j + 1] << 4));
    } else {
        for (int64_t j = 0; j < K / 4; ++j) pack6(c + 4 * j, out + 3 * j);
    }
}

// Max |x| of a block as float32 bits (>= 0x7F800000 when a NaN or ±Inf is present).
uint32_t absmax_bits_ref(const float* x, int64_t n) {
    uint32_t m = 0;
    for (int64_t i = 0; i < n; ++i) {
        const uint32_t a = f32_to_bits(x[i]) & 0x7FFFFFFFu;
        m = a > m ? a : m;
    }
    return m;
}

}  // namespace

// ---- MX -------------------------------------------------------------------------------------

void mx_encode_ref(const FormatParams& p) {
    int emax;
    const ElemSpec s = mx_elem_spec(p.type, &emax);
    const int bits = format_element_bits(p);
    uint8_t* sc = static_cast<uint8_t*>(p.scales);
    std::vector<uint32_t> c(size_t(p.K));
    for (int64_t r = 0; r < p.rows; ++r) {
        for (int64_t b = 0; b < p.K / QK_MX; ++b) {
            const float* x = p.x + r * p.K + b * QK_MX;
            uint32_t* cb = c.data() + b * QK_MX;
            const uint32_t am = absmax_bits_ref(x, QK_MX);
            if (!f32_bits_finite(am)) {
                sc[r * (p.K / QK_MX) + b] = 0xFF;
                for (int i = 0; i < QK_MX; ++i) cb[i] = 0;
                continue;
            }
            const int shared = mx_shared(am, emax);
            sc[r * (p.K / QK_MX) + b] = uint8_t(shared + 127);
            for (int i = 0; i < QK_MX; ++i)
                cb[i] = s.bits ? elem_encode(f32_to_bits(x[i]), s, shared, p.rna)
                               : mxint8_encode(f32_to_bits(x[i]), shared, p.rna);
        }
        pack_row(c.data(), p.K, bits, p.codes + r * (p.K * bits / 8));
    }
}

void mx_decode_ref(const FormatParams& p) {
    int emax;
    const ElemSpec s = mx_elem_spec(p.type, &emax);
    const int bits = format_element_bits(p);
    const uint8_t* sc = static_cast<const uint8_t*>(p.scales);
    for (int64_t r = 0; r < p.rows; ++r) {
        const uint8_t* row = p.codes + r * (p.K * bits / 8);
        for (int64_t k = 0; k < p.K; ++k) {
            const uint32_t c = code_at(row, k, bits);
            const float v = s.bits ? elem_value(c, s) : float(int8_t(uint8_t(c))) / 64.0f;
            p.y[r * p.K + k] = v * e8m0_value(sc[r * (p.K / QK_MX) + k / QK_MX]);
        }
    }
}

// ---- NVFP4 ----------------------------------------------------------------------------------

void nvfp4_encode_ref(const FormatParams& p) {
    const int64_t nb = p.rows * p.K / QK_NVFP4;
    float ts;
    if (p.tensor_scale_given) {
        ts = p.tensor_scale[0];
    } else {
        float amax = 0.0f;
        for (int64_t b = 0; b < nb; ++b) {
            const uint32_t am = absmax_bits_ref(p.x + b * QK_NVFP4, QK_NVFP4);
            if (f32_bits_finite(am)) amax = std::fmax(amax, bits_to_f32(am));
        }
        ts = nvfp4_tensor_scale(amax);
        p.tensor_scale[0] = ts;
    }
    uint8_t* sc = static_cast<uint8_t*>(p.scales);
    for (int64_t b = 0; b < nb; ++b) {
        const float* x = p.x + b * QK_NVFP4;
        uint8_t* out = p.codes + b * (QK_NVFP4 / 2);
        const uint32_t am = absmax_bits_ref(x, QK_NVFP4);
        if (!f32_bits_finite(am)) {
            sc[b] = 0x7F;
            for (int j = 0; j < QK_NVFP4 / 2; ++j) out[j] = 0;
            continue;
        }
        float d;
        sc[b] = uint8_t(nvfp4_block_scale(bits_to_f32(am), ts, &d));
        for (int j = 0; j < QK_NVFP4 / 2; ++j)
            out[j] = uint8_t(nvfp4_encode(x[2 * j], d, p.rna) | (nvfp4_encode(x[2 * j + 1], d, p.rna) << 4));
    }
}

void nvfp4_decode_ref(const FormatParams& p) {
    const int64_t n = p.rows * p.K;
    const uint8_t* sc = static_cast<const uint8_t*>(p.scales);
    const float ts = p.tensor_scale[0];
    for (int64_t e = 0; e < n; ++e) {
        const uint32_t c = (p.codes[e / 2] >> (4 * (e & 1))) & 0xFu;
        p.y[e] = (elem_value(c, spec_e2m1()) * elem_value(sc[e / QK_NVFP4], spec_e4m3())) * ts;
    }
}

// ---- BFP ------------------------------------------------------------------------------------

void bfp_encode_ref(const FormatParams& p) {
    const int m = p.mantissa_bits;
    const int64_t blen = p.block, nb = p.K / blen;
    uint8_t* sc = static_cast<uint8_t*>(p.scales);
    std::vector<uint32_t> c(size_t(p.K));
    for (int64_t r = 0; r < p.rows; ++r) {
        for (int64_t b = 0; b < nb; ++b) {
            const float* x = p.x + r * p.K + b * blen;
            uint32_t* cb = c.data() + b * blen;
            const uint32_t am = absmax_bits_ref(x, blen);
            const bool fin = f32_bits_finite(am);
            const int e = block_exponent(am);
            sc[r * nb + b] = fin ? uint8_t(e + 127) : uint8_t(0xFF);
            for (int64_t i = 0; i < blen; ++i) cb[i] = fin ? bfp_encode(f32_to_bits(x[i]), e, m, p.rna) : 0u;
        }
        pack_row(c.data(), p.K, m, p.codes + r * (p.K * m / 8));
    }
}

void bfp_decode_ref(const FormatParams& p) {
    const int m = p.mantissa_bits;
    const int64_t nb = p.K / p.block;
    const uint8_t* sc = static_cast<const uint8_t*>(p.scales);
    for (int64_t r = 0; r < p.rows; ++r) {
        const uint8_t* row = p.codes + r * (p.K * m / 8);
        for (int64_t k = 0; k < p.K; ++k)
            p.y[r * p.K + k] = bfp_value(code_at(row, k, m), sc[r * nb + k / p.block], m);
    }
}

}  // namespace quellm
