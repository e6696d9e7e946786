// formats.h — every quellm number format declared once: its block struct, its row in the
// traits table, and the encode/decode entry points (scalar references and run-time dispatch).
//
// Canonical layout (the same as python/quellm/formats.py's Packed): a tensor is a matrix
// (rows, K), K the encoded (reduction) axis, stored as planes:
//     codes   (rows, K · element_bits / 8)   uint8, packed along K
//     scales  (rows, K / block) | (rows, 1) | (1, 1)   f32 or uint8 bits (E8M0 / E4M3)
//     zeros   like scales, f32                         asymmetric int only
//     tensor_scale (1) f32                             nvfp4 only
// Scales live in their own plane (structure of arrays), so a block struct below holds the
// element codes of one block only; its scale is the block's entry in the scale plane.
//
// Bit order of codes, element i of a block / row:
//   8 bits: byte i.
//   4 bits: byte i/2, element 2j in bits 0-3 (low nibble), 2j+1 in bits 4-7.
//           int4 [-8, 7, 3, -1] -> 0x78 0xF3 (SPEC §3.7).
//   6 bits: element 4j+t in bits 6t..6t+5 of the little-endian 24-bit word b0 | b1<<8 | b2<<16
//           of bytes 3j..3j+2 (pack6 / unpack6 in formats_elem.h).
//
// Decode formulas (all float32, exact unless said):
//   int (sym)   x = q · s, q the two's-complement code; (asym) x = (q − z) · s, q unsigned
//   ovp         x = value(pair) · s, OliVe pair decode (§1.3), identifier 0x8 / 0x80
//   mx          x = value(P) · 2^(E − 127), E the E8M0 scale code (0xFF: NaN); MXINT8 P = k/64
//   nvfp4       x = (value(P) · value_e4m3(sb)) · ts
//   bfp         x = ±q · 2^(E − 127 + 2 − m), sign in the top bit of the m-bit code
#pragma once

#include <cstdint>

namespace quellm {

// ---- type enum (the row order of the traits table = formats.names()) ------------------------
enum FormatType : int32_t {
    QUELLM_TYPE_INT4 = 0,
    QUELLM_TYPE_INT8,
    QUELLM_TYPE_OVP4,
    QUELLM_TYPE_OVP4_FLINT,
    QUELLM_TYPE_OVP8,
    QUELLM_TYPE_MXFP8_E4M3,
    QUELLM_TYPE_MXFP8_E5M2,
    QUELLM_TYPE_MXFP6_E3M2,
    QUELLM_TYPE_MXFP6_E2M3,
    QUELLM_TYPE_MXFP4,
    QUELLM_TYPE_MXINT8,
    QUELLM_TYPE_NVFP4,
    QUELLM_TYPE_BFP,
    QUELLM_TYPE_COUNT
};

// ---- block structs: the element codes of one block (scales are in the scale plane) -----------
constexpr int QK_MX = 32;     // OCP MX block
constexpr int QK_NVFP4 = 16;  // NVFP4 block
constexpr int QK_BFP = 32;    // default BFP block (a parameter)

struct block_mxfp8 { uint8_t qs[QK_MX]; };             // E4M3 or E5M2 byte per element; scale E8M0
struct block_mxfp6 { uint8_t qs[QK_MX * 6 / 8]; };     // E3M2 or E2M3, 4 elements per 3 bytes; scale E8M0
struct block_mxfp4 { uint8_t qs[QK_MX / 2]; };         // E2M1 nibbles, element 2j low; scale E8M0
struct block_mxint8 { int8_t qs[QK_MX]; };             // k, value k/64; scale E8M0
struct block_nvfp4 { uint8_t qs[QK_NVFP4 / 2]; };      // E2M1 nibbles; scale E4M3 (+ f32 tensor scale)
struct block_bfp12 { uint8_t qs[QK_BFP / 2]; };        // default bfp: 4-bit sign-magnitude; scale E8M0-style
struct pair_ovp4 { uint8_t q; };                       // one OliVe pair, element 2j low nibble; scale f32 per row
struct pair_ovp8 { uint8_t q[2]; };                    // one OliVe pair of bytes
struct pair_int4 { uint8_t q; };                       // two int4 codes, element 2j low nibble
static_assert(sizeof(block_mxfp8) == 32, "mxfp8 block: 32 bytes");
static_assert(sizeof(block_mxfp6) == 24, "mxfp6 block: 24 bytes");
static_assert(sizeof(block_mxfp4) == 16, "mxfp4 block: 16 bytes");
static_assert(sizeof(block_mxint8) == 32, "mxint8 block: 32 bytes");
static_assert(sizeof(block_nvfp4) == 8, "nvfp4 block: 8 bytes");
static_assert(sizeof(block_bfp12) == 16, "bfp12 block: 16 bytes");
static_assert(sizeof(pair_ovp4) == 1 && sizeof(pair_ovp8) == 2 && sizeof(pair_int4) == 1, "pairs");

enum class ScaleDtype : int32_t { F32 = 0, E8M0 = 1, E4M3 = 2 };
enum class ScaleGran : int32_t { BLOCK = 0, ROW = 1, TENSOR = 2 };

// Parameters of one encode/decode call: the host<->device contract (plain values and raw
// pointers; sizes in elements). `x` (encode input) / `y` (decode output) is (rows, K) f32.
struct FormatParams {
    FormatType type = QUELLM_TYPE_INT4;
    int64_t rows = 0, K = 0;
    // int
    bool sym = true, narrow = false;
    ScaleGran gran = ScaleGran::ROW;  // int / ovp; block formats: BLOCK
    int64_t block = 0;                // elements per scale for BLOCK granularity (int group, bfp block)
    float clip = 1.0f;
    // ovp
    bool keep_larger = false;
    // mx / nvfp4 / bfp
    bool rna = false;                 // ties away from zero instead of ties to even
    int mantissa_bits = 4;            // bfp
    // buffers
    const float* x = nullptr;         // (rows, K) encode input
    float* y = nullptr;               // (rows, K) decode output
    uint8_t* codes = nullptr;         // (rows, K·bits/8)
    void* scales = nullptr;           // n_scales() entries, f32 or uint8
    float* zeros = nullptr;           // asym int: n_scales() entries
    float* tensor_scale = nullptr;    // nvfp4: 1 entry
    bool scales_given = false;        // int / ovp encode: scales (and zeros) are inputs
    bool tensor_scale_given = false;  // nvfp4 encode: tensor_scale is an input
};

// One row of the traits table (defaults of formats.get(name)).
using format_fn = void (*)(const FormatParams&);
struct FormatTraits {
    const char* name;
    const char* family;          // int, ovp, mx, nvfp4, bfp
    int element_bits;            // of the default parameters (bfp: mantissa_bits)
    int block_size;              // 0: per row / per tensor (int default), or a parameter
    int bytes_per_block;         // 0 where block_size is 0
    ScaleDtype scale_dtype;
    ScaleGran scale_gran;
    int align;                   // K must be a multiple
    format_fn encode_ref, decode_ref;  // scalar references, single-threaded
    format_fn encode, decode;          // dispatch: best ISA, OpenMP over rows
};

const FormatTraits& format_traits(FormatType t);
FormatType format_type(const char* name);  // throws std::invalid_argument on an unknown name

// Derived sizes of a call (validated by format_check).
int format_element_bits(const FormatParams& p);
int64_t format_block_len(const FormatParams& p);  // elements per scale (K per row, rows·K per tensor)
int64_t format_n_scales(const FormatParams& p);
int64_t format_code_bytes(const FormatParams& p);  // all rows
void format_check(const FormatParams& p, bool buffers = true);  // throws std::invalid_argument

// Entry points (validate, then run): *_ref single-threaded scalar, the others dispatch.
void format_encode_ref(const FormatParams& p);
void format_decode_ref(const FormatParams& p);
void format_encode(const FormatParams& p);
void format_decode(const FormatParams& p);

// Per-family implementations (formats_int.cpp, formats_mx.cpp, formats_fast.cpp).
void int_encode_ref(const FormatParams& p);
void int_decode_ref(const FormatParams& p);
void ovp_encode_ref(const FormatParams& p);
void ovp_decode_ref(const FormatParams& p);
void mx_encode_ref(const FormatParams& p);
void mx_decode_ref(const FormatParams& p);
void nvfp4_encode_ref(const FormatParams& p);
void nvfp4_decode_ref(const FormatParams& p);
void bfp_encode_ref(const FormatParams& p);
void bfp_decode_ref(const FormatParams& p);
void int_encode(const FormatParams& p);
void int_decode(const FormatParams& p);
void ovp_encode(const FormatParams& p);
void ovp_decode(const FormatParams& p);
void mx_encode(const FormatParams& p);
void mx_decode(const FormatParams& p);
void nvfp4_encode(const FormatParams& p);
void nvfp4_decode(const FormatParams& p);
void bfp_encode(const FormatParams& p);
void bfp_decode(const FormatParams& p);

struct OvpTables;
const OvpTables& ovp_tables(FormatType t);  // OVP4, OVP4_FLINT or OVP8

// OliVe's scale search (shared/SPEC.md §1.4 step 1, formats.OvpFormat.search_scale) for OVP format
// `type` on one row or tensor x of n elements (n even, finite): x_max = max(|μ + 3σ|, |μ − 3σ|)
// (float64 mean and unbiased std, summed in order), candidates s_k = float32(min(x_max·k/100/
// normal_max, FLT_MAX)) (1 when not > 0) for k in ks; the first candidate with the smallest
// squared error of quantize-dequantize wins (the codes from the dispatched OVP kernel, the error
// summed in float64 in 16 interleaved partial sums, added in order: the same at every ISA).
// Returns s, and its mean squared error in *mse (nullable). numpy sums differently, so the two
// can disagree on near-ties (calibration, not the bit-exact contract).
float ovp_search_scale(FormatType type, const float* x, int64_t n, const int* ks, int nk, bool keep_larger,
                       double* mse);
// ovp_search_scale on each of `rows` rows of x (rows, K), OpenMP over rows: s (rows), mse (rows).
void ovp_search_scales(FormatType type, const float* x, int64_t rows, int64_t K, const int* ks, int nk,
                       bool keep_larger, float* s, double* mse);
// The k grid of the runtime OVP4 activation quantizer (quantize_rows_ovp4); the reference search
// walks k = 75, 77, ..., 249 (formats.OVP_SEARCH_K).
extern const int kOvpActSearchK[8];

}  // namespace quellm
