// formats.cpp — the traits table of every number format, argument checks and the entry points.
// See formats.h for layouts and formulas. References: formats_int.cpp (int, ovp),
// formats_mx.cpp (mx, nvfp4, bfp). Dispatched paths: formats_fast.cpp (+ arch/x86/formats_*).
#include "formats.h"

#include <cstring>
#include <string>

#include "common.h"

namespace quellm {

namespace {

// One row per format, in FormatType order (= formats.names()); defaults of formats.get(name).
const FormatTraits kTraits[QUELLM_TYPE_COUNT] = {
    {"int4", "int", 4, 0, 0, ScaleDtype::F32, ScaleGran::ROW, 2, int_encode_ref, int_decode_ref, int_encode, int_decode},
    {"int8", "int", 8, 0, 0, ScaleDtype::F32, ScaleGran::ROW, 1, int_encode_ref, int_decode_ref, int_encode, int_decode},
    {"ovp4", "ovp", 4, 0, 0, ScaleDtype::F32, ScaleGran::ROW, 2, ovp_encode_ref, ovp_decode_ref, ovp_encode, ovp_decode},
    {"ovp4_flint", "ovp", 4, 0, 0, ScaleDtype::F32, ScaleGran::ROW, 2, ovp_encode_ref, ovp_decode_ref, ovp_encode,
     ovp_decode},
    {"ovp8", "ovp", 8, 0, 0, ScaleDtype::F32, ScaleGran::ROW, 2, ovp_encode_ref, ovp_decode_ref, ovp_encode, ovp_decode},
    {"mxfp8_e4m3", "mx", 8, QK_MX, sizeof(block_mxfp8), ScaleDtype::E8M0, ScaleGran::BLOCK, QK_MX, mx_encode_ref,
     mx_decode_ref, mx_encode, mx_decode},
    {"mxfp8_e5m2", "mx", 8, QK_MX, sizeof(block_mxfp8), ScaleDtype::E8M0, ScaleGran::BLOCK, QK_MX, mx_encode_ref,
     mx_decode_ref, mx_encode, mx_decode},
    {"mxfp6_e3m2", "mx", 6, QK_MX, sizeof(block_mxfp6), ScaleDtype::E8M0, ScaleGran::BLOCK, QK_MX, mx_encode_ref,
     mx_decode_ref, mx_encode, mx_decode},
    {"mxfp6_e2m3", "mx", 6, QK_MX, sizeof(block_mxfp6), ScaleDtype::E8M0, ScaleGran::BLOCK, QK_MX, mx_encode_ref,
     mx_decode_ref, mx_encode, mx_decode},
    {"mxfp4", "mx", 4, QK_MX, sizeof(block_mxfp4), ScaleDtype::E8M0, ScaleGran::BLOCK, QK_MX, mx_encode_ref,
     mx_decode_ref, mx_encode, mx_decode},
    {"mxint8", "mx", 8, QK_MX, sizeof(block_mxint8), ScaleDtype::E8M0, ScaleGran::BLOCK, QK_MX, mx_encode_ref,
     mx_decode_ref, mx_encode, mx_decode},
    {"nvfp4", "nvfp4", 4, QK_NVFP4, sizeof(block_nvfp4), ScaleDtype::E4M3, ScaleGran::BLOCK, QK_NVFP4,
     nvfp4_encode_ref, nvfp4_decode_ref, nvfp4_encode, nvfp4_decode},
    {"bfp", "bfp", 4, QK_BFP, sizeof(block_bfp12), ScaleDtype::E8M0, ScaleGran::BLOCK, QK_BFP, bfp_encode_ref,
     bfp_decode_ref, bfp_encode, bfp_decode},
};

bool is_family(FormatType t, const char* fam) { return std::strcmp(kTraits[t].family, fam) == 0; }

}  // namespace

const FormatTraits& format_traits(FormatType t) {
    QUELLM_CHECK(t >= 0 && t < QUELLM_TYPE_COUNT, "unknown format type ", int(t));
    return kTraits[t];
}

FormatType format_type(const char* name) {
    for (int t = 0; t < QUELLM_TYPE_COUNT; ++t)
        if (std::strcmp(kTraits[t].name, name) == 0) return FormatType(t);
    QUELLM_CHECK(false, "unknown format '", name, "'");
}

int format_element_bits(const FormatParams& p) {
    return is_family(p.type, "bfp") ? p.mantissa_bits : format_traits(p.type).element_bits;
}

int64_t format_block_len(const FormatParams& p) {
    const FormatTraits& tr = format_traits(p.type);
    if (is_family(p.type, "mx") || is_family(p.type, "nvfp4")) return tr.block_size;
    if (is_family(p.type, "bfp")) return p.block;
    switch (p.gran) {
        case ScaleGran::BLOCK: return p.block;
        case ScaleGran::ROW: return p.K;
        default: return p.rows * p.K;
    }
}

int64_t format_n_scales(const FormatParams& p) {
    const int64_t n = p.rows * p.K;
    return n == 0 ? 0 : n / format_block_len(p);
}

int64_t format_code_bytes(const FormatParams& p) { return p.rows * (p.K * format_element_bits(p) / 8); }

void format_check(const FormatParams& p, bool buffers) {
    const FormatTraits& tr = format_traits(p.type);
    const char* nm = tr.name;
    QUELLM_CHECK(p.rows >= 0 && p.K >= 1, nm, ": need rows >= 0 and K >= 1, got (", p.rows, ", ", p.K, ")");
    const bool intf = is_family(p.type, "int"), ovp = is_family(p.type, "ovp"), bfp = is_family(p.type, "bfp");
    if (intf || ovp) {
        QUELLM_CHECK(ovp ? (p.gran != ScaleGran::BLOCK) : true, nm, ": OVP scales are per row or per tensor");
        QUELLM_CHECK(p.clip > 0.0f && p.clip <= 1.0f, nm, ": clip ratio must lie in (0, 1], got ", p.clip);
        if (p.gran == ScaleGran::BLOCK)
            QUELLM_CHECK(p.block > 0 && (tr.element_bits == 8 || p.block % 2 == 0), nm, ": bad group size ", p.block);
    } else {
        QUELLM_CHECK(!p.scales_given, nm, ": block formats compute their own scales");
    }
    if (bfp) {
        const int m = p.mantissa_bits;
        QUELLM_CHECK(m == 4 || m == 6 || m == 8, nm, ": mantissa_bits must be 4, 6 or 8, got ", m);
        QUELLM_CHECK(p.block > 0 && (p.block * m) % 8 == 0 && (m != 6 || p.block % 4 == 0), nm, ": block ", p.block,
                     " cannot be packed with ", m, "-bit codes");
    }
    int64_t align = tr.align;
    if (bfp || (intf && p.gran == ScaleGran::BLOCK)) align = p.block;
    QUELLM_CHECK(p.K % align == 0, nm, ": length ", p.K, " along the encoded axis is not a multiple of ", align);
    if (!buffers) return;
    QUELLM_CHECK(p.rows == 0 || (p.codes && p.scales), nm, ": null codes or scales buffer");
    QUELLM_CHECK(!(intf && !p.sym) || p.rows == 0 || p.zeros, nm, ": asymmetric int needs a zeros buffer");
    QUELLM_CHECK(!is_family(p.type, "nvfp4") || p.tensor_scale, nm, ": nvfp4 needs a tensor_scale buffer");
}

void format_encode_ref(const FormatParams& p) {
    format_check(p);
    QUELLM_CHECK(p.rows == 0 || p.x, format_traits(p.type).name, ": null input");
    if (p.rows) format_traits(p.type).encode_ref(p);
}
void format_decode_ref(const FormatParams& p) {
    format_check(p);
    QUELLM_CHECK(p.rows == 0 || p.y, format_traits(p.type).name, ": null output");
    if (p.rows) format_traits(p.type).decode_ref(p);
}
void format_encode(const FormatParams& p) {
    format_check(p);
    QUELLM_CHECK(p.rows == 0 || p.x, format_traits(p.type).name, ": null input");
    if (p.rows) format_traits(p.type).encode(p);
}
void format_decode(const FormatParams& p) {
    format_check(p);
    QUELLM_CHECK(p.rows == 0 || p.y, format_traits(p.type).name, ": null output");
    if (p.rows) format_traits(p.type).decode(p);
}

}  // namespace quellm
