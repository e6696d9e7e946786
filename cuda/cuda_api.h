// cuda_api.h — host-side declarations of quellm's CUDA entry points, with no CUDA types, so
// bindings.cpp compiles with or without nvcc. Every function here is defined in cuda/*.cu and
// exists only when the build defines QUELLM_HAS_CUDA.
#pragma once

#include <cstddef>
#include <memory>
#include <string>

namespace quellm {
struct FormatParams;  // cpp/formats.h
class QuantLinear;    // cpp/quant_linear.h
}

namespace quellm::cuda {

struct DeviceInfo {
    bool available = false;   // a usable device exists
    std::string reason;       // why not, when !available
    int device_count = 0;
    int runtime_version = 0;  // e.g. 13000
    int driver_version = 0;   // 0 when no driver is installed
    std::string name;         // of device 0
    int cc_major = 0, cc_minor = 0;
    std::size_t total_memory = 0;
};

DeviceInfo device_info();

// Element types of device buffers crossing the API (f16 and bf16 as raw 16-bit patterns).
enum class DType : int { F32 = 0, F16 = 1, BF16 = 2 };

// ---- device memory (used by the Python DeviceArray) -----------------------------------------
void* device_alloc(std::size_t bytes);
void device_free(void* ptr) noexcept;
void copy_to_device(void* dst, const void* src, std::size_t bytes);
void copy_to_host(void* dst, const void* src, std::size_t bytes);
void synchronize();

// ---- FWHT (cuda/fwht.cu): out = scale · (H_m ⊗ H_p) · x per row, see cpp/fwht.h ----------------
struct FwhtCudaParams {
    const void* x;        // device (rows, n), dtype x_dtype
    void* out;            // device (rows, n), dtype out_dtype; may equal x
    DType x_dtype = DType::F32, out_dtype = DType::F32;
    long long rows = 0, n = 0, p = 1;  // n = m · p
    int m = 1;
    const signed char* hm = nullptr;    // HOST (m, m) ±1 factor; copied to the device per call
    float scale = 1.0f;
    // DEVICE copy of H_m: when set, used instead of hm (no per-call allocation or copy, so the
    // call can be captured in a CUDA graph as long as the row fits in shared memory).
    const signed char* hm_device = nullptr;
};
void fwht_cuda(const FwhtCudaParams& params, void* stream);  // stream: cudaStream_t or nullptr

// ---- Mamba (cuda/mamba.cu): the conv and the selective scan of one layer, B sequences × T tokens,
// one thread per (sequence, channel) walking the tokens in order; arithmetic shared with the CPU
// runtime (mamba_conv_token / mamba_scan_token in cpp/runtime/ops.h). Device pointers; row r =
// b·T + t; activations in `act` dtype (f32 / f16 / bf16), weights and states f32.
struct MambaConvCudaParams {
    const void* xs = nullptr; long long ld_xs = 0;   // (B·T, ld_xs): channel c at column c
    const float* conv_w = nullptr;                   // (Di, K)
    const float* conv_b = nullptr;                   // (Di) or null
    float* conv_state = nullptr;                     // (B, Di, K-1), updated
    void* u = nullptr;                               // (B·T, Di) out: silu(conv)
    DType act = DType::F32;
    long long B = 0, T = 0, Di = 0, K = 0;
};
void mamba_conv_cuda(const MambaConvCudaParams& p, void* stream);

struct MambaScanCudaParams {
    const void* u = nullptr;                         // (B·T, Di)
    const void* dt = nullptr;                        // (B·T, Di): softplus'd unless dt_softplus
    const void* bc = nullptr; long long ld_bc = 0;   // (B·T, ld_bc): B at columns [0, N), C at [N, 2N)
    const void* z = nullptr; long long ld_z = 0;     // (B·T, ld_z) gate, or null (no gating)
    const float* A = nullptr;                        // (Di, N) = −exp(A_log)
    const float* Dskip = nullptr;                    // (Di)
    float* ssm_state = nullptr;                      // (B, Di, N), updated
    void* y = nullptr;                               // (B·T, Di) out
    DType act = DType::F32;
    bool dt_softplus = false;                        // apply softplus to dt in the kernel
    long long B = 0, T = 0, Di = 0, N = 0;           // N <= 256
};
void mamba_scan_cuda(const MambaScanCudaParams& p, void* stream);

// ---- formats (cuda/formats.cu): encode / decode of every format of cpp/formats.h, bit-identical
// to format_encode / format_decode on the CPU. `p` holds device pointers only; encode
// synchronizes `stream` at the end and throws std::invalid_argument for NaN/Inf in int / OVP
// input (OVP needs the scales given). The *_host_planes variants take x / y on the device and
// codes / scales / zeros / tensor scale on the host (staged through device buffers; default stream).
void format_encode_cuda(const FormatParams& p, void* stream);
void format_decode_cuda(const FormatParams& p, void* stream);
void format_encode_cuda_host_planes(const FormatParams& p);
void format_decode_cuda_host_planes(const FormatParams& p);

// ---- linear layers (cuda/gemm.cu): y = x·Wᵀ (+ b) of a QuantLinear on the device --------------
// The weights are uploaded once from a host QuantLinear, in its own format (float weights as
// f16/bf16, int8/int4/MXFP4/OVP4 codes packed for the device kernels — never dequantized to float
// in device memory), with its bias, activation quantizer and online Hadamard transform. The
// forward allocates nothing and does not synchronize, so it can be captured in a CUDA graph: the
// caller passes a workspace of cuda_linear_workspace_bytes(L, M) bytes (device memory, 256-byte
// aligned; a workspace sized for M serves every smaller M).
struct CudaLinear;  // opaque, defined in cuda/gemm.cu
struct CudaLinearDeleter {
    void operator()(CudaLinear* p) const noexcept;
};
using CudaLinearPtr = std::unique_ptr<CudaLinear, CudaLinearDeleter>;

// act: the dtype of x and y at forward time (F16, BF16 or F32). Throws std::invalid_argument for
// a weight × activation pair without a device kernel, std::runtime_error for CUDA errors
// (out of memory included).
CudaLinearPtr cuda_linear_upload(const QuantLinear& w, DType act);
std::size_t cuda_linear_workspace_bytes(const CudaLinear& L, long long M);
// x (M, K) and y (M, N) device, row-major, dtype `act`; y must not alias x.
void cuda_linear_forward(const CudaLinear& L, const void* x, long long M, void* y, void* workspace, void* stream);
std::string cuda_linear_kernel(const CudaLinear& L);   // "f16", "w4a16", "w8a8", ... as on the CPU
std::size_t cuda_linear_nbytes(const CudaLinear& L);   // device bytes held (weights, scales, bias)
// Testing: run every linear forward with the SIMT reference kernels instead of the tensor-core /
// GEMV ones (process-wide; not thread-safe against running forwards).
void cuda_linear_force_simt(bool on);

// Runs the f16/bf16 conversion helpers of common.h on the device over `n` f32 inputs and writes
// their bit patterns; tests compare them with the host results of the same helpers.
void convert_selftest(const float* x_host, std::size_t n, unsigned short* f16_host,
                      unsigned short* bf16_host);

}  // namespace quellm::cuda
