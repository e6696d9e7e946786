// gemm.h — low-bit GEMM/GEMV kernels behind QuantLinear (quant_linear.h).
//
// Two families, both y = x·Wᵀ (+ b) with weights W (N, K) quantized in groups of G along K:
//
// 1. Integer kernels (W4A8, W8A8, and W4A4 / W8A4 with activations held as int8 in [-7, 7]):
//      y[m, n] = Σ_g  acc[m, n, g] · (sa[m] · sw[n, g])  (+ b[n])
//      acc[m, n, g] = Σ_{k in group g} qa[m, k] · qw[n, k]            (exact, int32)
//    Symmetric weights only (qw = two's complement int4 or int8); activations per-row symmetric.
// 2. Weight-only kernels (W4A16, W8A16): f32 activations times dequantized weights
//      w[n, k] = (u[n, k] − z[n, g]) · s[n, g]
//    with u the raw code (int4: unsigned nibble 0..15, so a symmetric int4 code q is stored as
//    u = q + 8, z = 8; int8: signed code, z = 0 for symmetric weights), computed in registers.
//
// Canonical weight storage (the on-disk format, shared/SPEC.md §3.7): int4 codes (N, K/2) uint8,
// element 2i of a row in the low nibble of byte i; int8 codes (N, K) int8; scales (N, K/G) f32.
//
// Integer kernels use a repacked copy (gemm_w4_repack / gemm_w8_repack): rows in tiles of 16, and
// for each group of 4 k-steps (a k-quad) the 16 rows' 4 codes side by side (one 64-byte VNNI
// operand). int8: 64 bytes per quad, row j's codes k0..k3 at bytes 4j..4j+3. int4: within each
// weight group the quads pair into k-octs of 64 bytes, row j's byte 4j + i = k_i | k_{i+4} << 4
// (i = 0..3), so one load gives both quads' operands with no shuffle: v & 0x0F (k0..k3, the
// activations' byte order) and (v >> 4) & 0x0F (k4..k7). When G/4 is odd, the last quad of each
// group stays in the quad form (32 bytes, row j's bytes 2j, 2j + 1 = k0|k1<<4, k2|k3<<4). Either
// way quad kq of tile t starts at byte 32·(t·K/4 + kq); codes are 64-byte aligned.
// int4 is stored offset-binary (q + 8, 0..15) so an unpacked byte is the u8 operand of VNNI's
// vpdpbusd; the +8 is removed with 8·Σ qa per group. int8 weights are the s8 operand and the
// activations are shifted to u8 (qa + 128); the shift is removed with 128·Σ qw per group
// (precomputed, `wsum`). Versions: gemm_int_ref (scalar, the definition), gemm_int (AVX-512 VNNI,
// or AVX2 vpmaddubsw/vpmaddwd), OpenMP over 16-row tiles. Integer sums are exact, and the float
// epilogue does the same operations in the same order in every version: all agree bit for bit.
//
// Weight-only kernels: gemm_wf_ref (scalar), gemm_wf (AVX-512/AVX2 for up to kWfGemvRows
// activation rows, reading each weight byte once per 4 rows: per group, acc = Σ x·(u − z) with
// u − z a byte subtraction (exact), then y += s·acc; larger batches dequantize panels of W to
// f32 and run the f32 GEMM). Float sums: results agree with the
// reference to rounding, not bit for bit.
#pragma once

#include <cstddef>
#include <cstdint>
#include <new>
#include <vector>

namespace quellm {

// Allocator on 64-byte (cache-line) boundaries: the integer kernels load whole 64-byte operands,
// and an operand split across two lines halves the rate at which they stream from L2.
template <class T>
struct CacheAligned {
    using value_type = T;
    CacheAligned() = default;
    template <class U>
    CacheAligned(const CacheAligned<U>&) {}
    T* allocate(size_t n) { return static_cast<T*>(::operator new(n * sizeof(T), std::align_val_t(64))); }
    void deallocate(T* p, size_t) { ::operator delete(p, std::align_val_t(64)); }
    template <class U>
    bool operator==(const CacheAligned<U>&) const { return true; }
    template <class U>
    bool operator!=(const CacheAligned<U>&) const { return false; }
};

// A call's small working buffer (activation codes, scales, per-group sums) of n T: this thread's
// reusable block for `slot` when it fits in kCallScratchBytes, so batch-1 calls do not go through
// malloc (a GEMV takes a few microseconds; large requests cost glibc a consolidation each), else
// the heap. A call chain must not hold two buffers of the same slot at once.
enum class ScratchSlot : int { ActCodes = 0, ActScales = 1, ActSums = 2 };
constexpr size_t kCallScratchBytes = size_t(64) << 10;
uint8_t* thread_scratch(ScratchSlot slot);  // kCallScratchBytes, 64-byte aligned

template <class T>
class CallBuffer {
   public:
    CallBuffer(ScratchSlot slot, size_t n) {
        if (n * sizeof(T) <= kCallScratchBytes) {
            p_ = reinterpret_cast<T*>(thread_scratch(slot));
        } else {
            heap_.resize(n * sizeof(T));
            p_ = reinterpret_cast<T*>(heap_.data());
        }
    }
    T* data() const { return p_; }

   private:
    std::vector<uint8_t, CacheAligned<uint8_t>> heap_;
    T* p_ = nullptr;
};

// ---- integer kernels --------------------------------------------------------------------------

struct IntPacked {
    int bits = 4;                      // 4 or 8
    bool e2m1 = false;                 // bits 4: codes are OCP E2M1 (MXFP4) nibbles, value 2·E2M1 in [-12, 12]
    bool ovp = false;                  // bits 4: codes are OliVe OVP4 pairs (int4 normal, abfloat outlier)
    int64_t N = 0, K = 0, G = 0;       // K % G == 0, G % 4 == 0
    int64_t tiles = 0;                 // ceil(N / 16)
    std::vector<uint8_t, CacheAligned<uint8_t>> codes;
                                       // bits 4: (tiles, K/8, 16, 4) nibbles q+8 in k-octs (k_i | k_{i+4} << 4),
                                       //   per group; the last quad of a group with G/4 odd (16, 2) (see above)
                                       // bits 8: (tiles, K/4, 16, 4): int8 q
    std::vector<float> scales;         // (tiles, K/G, 16)
    std::vector<int32_t> wsum;         // bits 8 / e2m1: (tiles, K/G, 16) Σ q over the group; int4: empty
    size_t nbytes() const { return codes.size() + 4 * scales.size() + 4 * wsum.size(); }
};

// codes (N, K/2) nibbles / (N, K) int8, scales (N, K/G) -> packed. Rows past N are zero weights.
IntPacked gemm_w4_repack(const uint8_t* codes, const float* scales, int64_t N, int64_t K, int64_t G);
IntPacked gemm_w8_repack(const int8_t* codes, const float* scales, int64_t N, int64_t K, int64_t G);
// MXFP4 weights: E2M1 codes (N, K/2) (element 2i in the low nibble) and E8M0 scale codes
// (N, K/32); the kernels use q = 2·E2M1 value and scale 2^(code − 127) / 2 (exact). Throws on a
// NaN block (scale code 0xFF).
IntPacked gemm_mx4_repack(const uint8_t* codes, const uint8_t* scale_codes, int64_t N, int64_t K);
// OliVe OVP4 weights (int4 normal type): pair codes (N, K/2) (byte j = elements 2j, 2j+1, first
// in the low nibble) and per-row scales (N). Each pair decodes to two int8 values: a nibble is 0
// if it is the identifier 8, an abfloat outlier (±12..±96) if its partner is the identifier,
// else an int4 normal (−7..7). The kernels decode pairs in registers.
IntPacked gemm_ovp4_repack(const uint8_t* codes, const float* scales, int64_t N, int64_t K);
// packed -> canonical codes and scales: the inverse, for round-trip tests and saving.
void gemm_int_unpack(const IntPacked& w, uint8_t* codes, float* scales);

// Per-row symmetric quantization to [-qmax, qmax] (qmax = 127 for int8, 7 for int4), f32:
//   sa = (clip · max|x|) / qmax (1 for an all-zero row), q = clamp(RNE(x / sa), −qmax, qmax).
// Non-finite values are rejected (throws, naming row and column).
void quantize_rows(const float* x, int64_t M, int64_t K, int qmax, float clip, int8_t* q, float* sa);

// MXFP4 activations: per row, blocks of 32 encoded as formats.py's MxFormat("mxfp4") (RNE,
// saturating) and returned as q = 2·E2M1 value (int8) with sa (M, K/32) = 2^shared / 2.
// Non-finite values throw.
void quantize_rows_mxfp4(const float* x, int64_t M, int64_t K, int8_t* q, float* sa);

// MXFP8 (E4M3) activations: per row, blocks of 32 encoded as formats.py's MxFormat("mxfp8_e4m3")
// (RNE, saturating to ±448) and returned as integers q = E4M3 value · 2^9 (exact: the finest E4M3
// step is 2^-9; |q| ≤ 229376) with sa (M, K/32) = 2^shared · 2^-9. Non-finite values throw.
void quantize_rows_mxfp8(const float* x, int64_t M, int64_t K, int32_t* q, float* sa);

// OliVe OVP4 activations (int4 normal type, abfloat4 outliers, the reference's keep-first pair
// rule): per row the scale of ovp_search_scale over kOvpActSearchK (formats.h), and each pair's
// decoded values as integers q (normals −7..7, outliers ±12..±96, victims 0) — int8 operands of
// gemm_int with sa (M) the row scales. K must be even. Non-finite values throw.
void quantize_rows_ovp4(const float* x, int64_t M, int64_t K, int8_t* q, float* sa);

struct GemmIntParams {
    const int8_t* qa;   // (M, K)
    const float* sa;    // (M, sa_groups): per row (1) or per weight group (K/G)
    const IntPacked* w;
    const float* bias;  // (N) or nullptr
    float* y;           // (M, N)
    int64_t M;
    int64_t sa_groups = 1;
    float act_scale(int64_t m, int64_t g) const { return sa[m * sa_groups + (sa_groups > 1 ? g : 0)]; }
};
void gemm_int_ref(const GemmIntParams& p);
void gemm_int(const GemmIntParams& p);

// Integer weights in groups of 32 (int4, int8, E2M1 — not OVP) × MXFP8 activations:
//   y[m, n] = Σ_b float(acc[m, n, b]) · (sa[m, b] · sw[n, b])  (+ b[n]),  the same fma chain as gemm_int
//   acc[m, n, b] = Σ_{k in block b} qa[m, k] · qw[n, k]   (int32, exact: 32 · 229376 · 127 < 2^31)
// The products are int32 (vpmulld): E4M3 values span 18 bits, beyond the int8 dot-product units.
struct GemmMx8Params {
    const int32_t* qa;  // (M, K) from quantize_rows_mxfp8
    const float* sa;    // (M, K/32)
    const IntPacked* w; // G == 32
    const float* bias;  // (N) or nullptr
    float* y;           // (M, N)
    int64_t M;
};
void gemm_mx8_ref(const GemmMx8Params& p);
void gemm_mx8(const GemmMx8Params& p);

// ---- weight-only kernels ----------------------------------------------------------------------

struct WfWeights {
    int bits = 4;                      // 4 or 8
    int64_t N = 0, K = 0, G = 0;       // K % G == 0
    // bits 8: (N, K) int8. bits 4: (N, K/2) unsigned nibbles, either canonical (element 2i in the
    // low nibble of byte i) or, when split32, in chunks of 32 elements / 16 bytes with element j
    // in the low nibble and element j + 16 in the high nibble of the chunk's byte j — so a SIMD
    // load of 16 bytes yields 16 consecutive elements from the low nibbles and the next 16 from
    // the high ones, without an interleave. Kernels take split32 when G % 32 == 0.
    std::vector<uint8_t> codes;
    std::vector<float> scales;         // (N, K/G): w = (u − z) · s
    std::vector<uint8_t> zeros;        // int4: (N, K/G) integer zero points 0..15; int8: empty (z = 0)
    bool split32 = false;
    size_t nbytes() const { return codes.size() + 4 * scales.size() + zeros.size(); }
};
// Canonical nibbles <-> split32 layout of one row's codes (K/2 bytes, K % 32 == 0), in place.
void wf_split32(uint8_t* row, int64_t K, bool to_split);
constexpr int64_t kWfGemvRows = 8;     // batches above this dequantize panels + f32 GEMM

struct GemmWfParams {
    const float* x;     // (M, K)
    const WfWeights* w;
    const float* bias;  // (N) or nullptr
    float* y;           // (M, N)
    int64_t M;
};
void gemm_wf_ref(const GemmWfParams& p);
void gemm_wf(const GemmWfParams& p);
// Rows [n0, n1) of W dequantized to f32 into out ((n1 − n0), K).
void wf_dequant_rows(const WfWeights& w, int64_t n0, int64_t n1, float* out);

namespace x86 {
// Integer tile: rows m0..m0+mr-1 of x (mr <= 8 for AVX-512, 4 for AVX2) against 16-row tile t;
// writes y for its valid rows.
void gemm_int_tile_avx512(const GemmIntParams& p, int64_t t, int64_t m0, int mr, const int32_t* asum);
void gemm_int_tile_avx2(const GemmIntParams& p, int64_t t, int64_t m0, int mr, const int32_t* asum);
// MXFP8-activation tile: rows m0..m0+mr-1 (mr <= 8 for AVX-512, 4 for AVX2) against 16-row tile t.
void gemm_mx8_tile_avx512(const GemmMx8Params& p, int64_t t, int64_t m0, int mr);
void gemm_mx8_tile_avx2(const GemmMx8Params& p, int64_t t, int64_t m0, int mr);
// Weight-only rows: y[m0..m0+mr) × W rows [n0, n1) (mr <= 4). Need G % 32 == 0 (int4: split32).
void gemm_wf_rows_avx512(const GemmWfParams& p, int64_t n0, int64_t n1, int64_t m0, int mr);
void gemm_wf_rows_avx2(const GemmWfParams& p, int64_t n0, int64_t n1, int64_t m0, int mr);
// Row n of W dequantized over [k0, k1) (multiples of 32; same layout condition), as wf_dequant_rows.
void wf_dequant_segment_avx512(const WfWeights& w, int64_t n, int64_t k0, int64_t k1, float* out);
void wf_dequant_segment_avx2(const WfWeights& w, int64_t n, int64_t k0, int64_t k1, float* out);
// Batches above kWfGemvRows: y[:, n0 : n1) with the packed f32 GEMM (matmul_simd.h), each W strip
// dequantized straight into its packed form. Same layout condition.
void gemm_wf_packed_avx512(const GemmWfParams& p, int64_t n0, int64_t n1);
void gemm_wf_packed_avx2(const GemmWfParams& p, int64_t n0, int64_t n1);
// One row of quantize_rows (gemm_act_scale + gemm_act_quant, the same bits); false, writing
// nothing, when the row holds a NaN or Inf.
bool quantize_row_avx512(const float* x, int64_t K, int qmax, float clip, int8_t* q, float* sa);
bool quantize_row_avx2(const float* x, int64_t K, int qmax, float clip, int8_t* q, float* sa);
}  // namespace x86

}  // namespace quellm
