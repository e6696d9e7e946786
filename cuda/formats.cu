// formats.cu — CUDA encoders / decoders of every format in cpp/formats.h, bit-identical to the
// CPU references: the element arithmetic is the QUELLM_HD helpers of cpp/formats_elem.h, and
// this file is compiled with --fmad=false (CMakeLists.txt) so every float op rounds once.
//
// Version 1 (this file), per call:
//   unit_stats_kernel   one thread block per scale unit (int group / row / tensor, MX / NVFP4 /
//                       BFP block): max |x| as bits (>= 0x7F800000: NaN/Inf present), min, max
//   int_scales_kernel   one thread per unit: data-derived int scales and zero points
//   nvfp4_amax_kernel   atomicMax of the finite block maxima (the tensor scale), if not given
//   encode_kernel       one thread per group of codes that fills whole bytes (2 elements for
//                       4-bit, 4 for 6-bit, 1 for 8-bit; an OVP pair)
//   decode_kernel       the same grid, writing floats; NaN written as 0x7FC00000 like numpy
// NaN/Inf in int and OVP input is reported as std::invalid_argument after a synchronize.
#include <algorithm>
#include <cstdint>
#include <string>

#include "common.cuh"
#include "cuda_api.h"
#include "formats.h"
#include "formats_elem.h"

namespace quellm {
ElemSpec mx_elem_spec(FormatType t, int* emax);  // cpp/formats_mx.cpp
}

namespace quellm::cuda {

namespace {

enum Family { INT = 0, OVP, MX, NVFP4, BFP };

Family family_of(FormatType t) {
    const std::string f = format_traits(t).family;
    return f == "int" ? INT : f == "ovp" ? OVP : f == "mx" ? MX : f == "nvfp4" ? NVFP4 : BFP;
}

// Everything a kernel needs, by value.
struct Args {
    FormatParams p;
    Family fam;
    int bits;             // element bits
    int chunk;            // elements per thread
    int64_t blen;         // elements per scale unit
    ElemSpec spec;        // MX float element (bits == 0: MXINT8)
    int emax;
    float qmin, qmax;     // int
    const OvpTables* ovp; // device
    const uint32_t* am;   // (units) max |x| bits
    const float* mn;      // (units)
    const float* mx;      // (units)
    unsigned long long* err;  // [0] first non-finite element + 1, [1] first range overflow unit + 1
    unsigned int* ts_bits;    // nvfp4 tensor amax bits
};

__device__ __forceinline__ void note_error(unsigned long long* slot, int64_t where) {
    atomicMin(slot, static_cast<unsigned long long>(where) + 1ull);
}

__global__ void unit_stats_kernel(const float* x, int64_t blen, uint32_t* am, float* mn, float* mx) {
    __shared__ uint32_t s_am[256];
    __shared__ float s_mn[256], s_mx[256];
    const float* xu = x + int64_t(blockIdx.x) * blen;
    uint32_t a = 0;
    float lo = INFINITY, hi = -INFINITY;
    for (int64_t i = threadIdx.x; i < blen; i += blockDim.x) {
        const float v = xu[i];
        a = max(a, f32_to_bits(v) & 0x7FFFFFFFu);
        lo = fminf(lo, v);
        hi = fmaxf(hi, v);
    }
    s_am[threadIdx.x] = a;
    s_mn[threadIdx.x] = lo;
    s_mx[threadIdx.x] = hi;
    __syncthreads();
    for (int h = blockDim.x / 2; h > 0; h /= 2) {
        if (int(threadIdx.x) < h) {
            s_am[threadIdx.x] = max(s_am[threadIdx.x], s_am[threadIdx.x + h]);
            s_mn[threadIdx.x] = fminf(s_mn[threadIdx.x], s_mn[threadIdx.x + h]);
            s_mx[threadIdx.x] = fmaxf(s_mx[threadIdx.x], s_mx[threadIdx.x + h]);
        }
        __syncthreads();
    }
    if (threadIdx.x == 0) {
        am[blockIdx.x] = s_am[0];
        mn[blockIdx.x] = s_mn[0];
        mx[blockIdx.x] = s_mx[0];
    }
}

__global__ void int_scales_kernel(Args a, int64_t units) {
    const int64_t u = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
    if (u >= units || !f32_bits_finite(a.am[u])) return;  // non-finite: reported by encode_kernel
    float* s = static_cast<float*>(a.p.scales);
    if (a.p.sym) {
        s[u] = int_scale_sym(bits_to_f32(a.am[u]), a.p.clip, int(a.qmax));
    } else if (!int_scale_asym(a.mn[u], a.mx[u], a.p.clip, int(a.qmax), &s[u], &a.p.zeros[u])) {
        note_error(a.err + 1, u);
    }
}

__global__ void nvfp4_amax_kernel(Args a, int64_t units) {
    const int64_t u = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
    if (u < units && f32_bits_finite(a.am[u])) atomicMax(a.ts_bits, a.am[u]);
}

__global__ void encode_kernel(Args a, int64_t chunks) {
    const int64_t t = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
    if (t >= chunks) return;
    const FormatParams& p = a.p;
    const int64_t e0 = t * a.chunk, u = e0 / a.blen;
    const float* x = p.x + e0;
    uint32_t c[4] = {0, 0, 0, 0};
    if (a.fam == INT || a.fam == OVP) {
        for (int i = 0; i < a.chunk; ++i)
            if (!f32_bits_finite(f32_to_bits(x[i]))) note_error(a.err, e0 + i);
        const float* s = static_cast<const float*>(p.scales);
        if (a.fam == INT) {
            const int64_t su = p.gran == ScaleGran::TENSOR ? 0 : u;
            for (int i = 0; i < a.chunk; ++i)
                c[i] = int_encode(x[i], s[su], p.sym ? 0.0f : p.zeros[su], a.qmin, a.qmax, (1u << a.bits) - 1u);
        } else {
            const int64_t r = e0 / p.K;
            ovp_encode_pair(*a.ovp, x[0], x[1], s[p.gran == ScaleGran::TENSOR ? 0 : r], p.keep_larger, &c[0], &c[1]);
        }
    } else {
        const uint32_t am = a.am[u];
        uint8_t* sc = static_cast<uint8_t*>(p.scales);
        const bool first = e0 % a.blen == 0;
        if (!f32_bits_finite(am)) {
            if (first) sc[u] = a.fam == NVFP4 ? 0x7F : 0xFF;
        } else if (a.fam == MX) {
            const int shared = mx_shared(am, a.emax);
            if (first) sc[u] = uint8_t(shared + 127);
            for (int i = 0; i < a.chunk; ++i)
                c[i] = a.spec.bits ? elem_encode(f32_to_bits(x[i]), a.spec, shared, p.rna)
                                   : mxint8_encode(f32_to_bits(x[i]), shared, p.rna);
        } else if (a.fam == BFP) {
            const int e = block_exponent(am);
            if (first) sc[u] = uint8_t(e + 127);
            for (int i = 0; i < a.chunk; ++i) c[i] = bfp_encode(f32_to_bits(x[i]), e, a.bits, p.rna);
        } else {  // NVFP4
            float d;
            const uint32_t sb = nvfp4_block_scale(bits_to_f32(am), p.tensor_scale[0], &d);
            if (first) sc[u] = uint8_t(sb);
            for (int i = 0; i < a.chunk; ++i) c[i] = nvfp4_encode(x[i], d, p.rna);
        }
    }
    // Bytes of this chunk: elements e0 .. e0 + chunk − 1 of row-major codes.
    uint8_t* out = p.codes + e0 * a.bits / 8;
    if (a.bits == 8) {
        for (int i = 0; i < a.chunk; ++i) out[i] = uint8_t(c[i]);
    } else if (a.bits == 4) {
        out[0] = uint8_t(c[0] | (c[1] << 4));
    } else {
        pack6(c, out);
    }
}

__global__ void decode_kernel(Args a, int64_t chunks) {
    const int64_t t = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
    if (t >= chunks) return;
    const FormatParams& p = a.p;
    const int64_t e0 = t * a.chunk, u = e0 / a.blen;
    const uint8_t* in = p.codes + e0 * a.bits / 8;
    uint32_t c[4];
    if (a.bits == 8) {
        for (int i = 0; i < a.chunk; ++i) c[i] = in[i];
    } else if (a.bits == 4) {
        c[0] = in[0] & 0xFu;
        c[1] = uint32_t(in[0] >> 4);
    } else {
        unpack6(in, c);
    }
    float y[4];
    if (a.fam == INT) {
        const float* s = static_cast<const float*>(p.scales);
        const int64_t su = p.gran == ScaleGran::TENSOR ? 0 : u;
        for (int i = 0; i < a.chunk; ++i) y[i] = int_value(c[i], a.bits, p.sym, p.sym ? 0.0f : p.zeros[su]) * s[su];
    } else if (a.fam == OVP) {
        const float* s = static_cast<const float*>(p.scales);
        ovp_decode_pair(*a.ovp, c[0], c[1], s[p.gran == ScaleGran::TENSOR ? 0 : e0 / p.K], &y[0], &y[1]);
    } else {
        const uint32_t sc = static_cast<const uint8_t*>(p.scales)[u];
        for (int i = 0; i < a.chunk; ++i) {
            if (a.fam == MX)
                y[i] = (a.spec.bits ? elem_value(c[i], a.spec) : float(int8_t(uint8_t(c[i]))) / 64.0f) * e8m0_value(sc);
            else if (a.fam == BFP)
                y[i] = bfp_value(c[i], sc, a.bits);
            else
                y[i] = (elem_value(c[i], spec_e2m1()) * elem_value(sc, spec_e4m3())) * p.tensor_scale[0];
        }
    }
    for (int i = 0; i < a.chunk; ++i) p.y[e0 + i] = isnan(y[i]) ? bits_to_f32(kF32NaNBits) : y[i];
}

Args make_args(const FormatParams& p) {
    Args a{};
    a.p = p;
    a.fam = family_of(p.type);
    a.bits = format_element_bits(p);
    a.chunk = a.fam == OVP ? 2 : a.bits == 4 ? 2 : a.bits == 6 ? 4 : 1;
    a.blen = format_block_len(p);
    a.spec = mx_elem_spec(p.type, &a.emax);
    a.qmax = float(p.sym ? (1 << (a.bits - 1)) - 1 : (1 << a.bits) - 1);
    a.qmin = p.sym ? (p.narrow ? -a.qmax : -a.qmax - 1.0f) : 0.0f;
    return a;
}

unsigned grid_for(int64_t n, int threads) {
    const int64_t g = ceil_div(n, threads);
    QUELLM_CHECK(g <= 0x7fffffff, "formats cuda: tensor too large");
    return unsigned(std::max<int64_t>(g, 1));
}

}  // namespace

void format_encode_cuda(const FormatParams& p, void* stream_ptr) {
    format_check(p);
    if (p.rows == 0) return;
    cudaStream_t stream = static_cast<cudaStream_t>(stream_ptr);
    Args a = make_args(p);
    const char* nm = format_traits(p.type).name;
    QUELLM_CHECK(a.fam != OVP || p.scales_given, nm, ": the CUDA encoder needs the scales (search in formats.py)");
    const int64_t n = p.rows * p.K, units = n / a.blen, chunks = n / a.chunk;
    DeviceBuffer<uint32_t> am{size_t(units)};
    DeviceBuffer<float> mn{size_t(units)}, mx{size_t(units)};
    DeviceBuffer<unsigned long long> err(2);
    DeviceBuffer<unsigned int> ts_bits(1);
    DeviceBuffer<OvpTables> ovp(1);
    const unsigned long long none[2] = {~0ull, ~0ull};
    CUDA_CHECK(cudaMemcpyAsync(err.ptr, none, sizeof(none), cudaMemcpyHostToDevice, stream));
    a.am = am.ptr;
    a.mn = mn.ptr;
    a.mx = mx.ptr;
    a.err = err.ptr;
    a.ts_bits = ts_bits.ptr;
    if (a.fam == OVP) {
        CUDA_CHECK(cudaMemcpyAsync(ovp.ptr, &ovp_tables(p.type), sizeof(OvpTables), cudaMemcpyHostToDevice, stream));
        a.ovp = ovp.ptr;
    }
    const bool need_stats = a.fam != OVP && !(a.fam == INT && p.scales_given);
    if (need_stats) {
        const int th = a.blen >= 256 ? 256 : a.blen >= 64 ? 64 : 32;
        QUELLM_CHECK(units <= 0x7fffffff, nm, ": too many blocks");
        unit_stats_kernel<<<unsigned(units), th, 0, stream>>>(p.x, a.blen, am.ptr, mn.ptr, mx.ptr);
        CUDA_CHECK_LAUNCH();
    }
    if (a.fam == INT && !p.scales_given) {
        int_scales_kernel<<<grid_for(units, 256), 256, 0, stream>>>(a, units);
        CUDA_CHECK_LAUNCH();
    }
    if (a.fam == NVFP4 && !p.tensor_scale_given) {
        CUDA_CHECK(cudaMemsetAsync(ts_bits.ptr, 0, sizeof(unsigned int), stream));
        nvfp4_amax_kernel<<<grid_for(units, 256), 256, 0, stream>>>(a, units);
        CUDA_CHECK_LAUNCH();
        unsigned int bits = 0;
        CUDA_CHECK(cudaMemcpyAsync(&bits, ts_bits.ptr, sizeof(bits), cudaMemcpyDeviceToHost, stream));
        CUDA_CHECK(cudaStreamSynchronize(stream));
        const float ts = nvfp4_tensor_scale(bits_to_f32(bits));
        CUDA_CHECK(cudaMemcpyAsync(p.tensor_scale, &ts, sizeof(ts), cudaMemcpyHostToDevice, stream));
        CUDA_CHECK(cudaStreamSynchronize(stream));  // ts is a stack variable
    }
    encode_kernel<<<grid_for(chunks, 256), 256, 0, stream>>>(a, chunks);
    CUDA_CHECK_LAUNCH();
    unsigned long long e[2];
    CUDA_CHECK(cudaMemcpyAsync(e, err.ptr, sizeof(e), cudaMemcpyDeviceToHost, stream));
    CUDA_CHECK(cudaStreamSynchronize(stream));
    QUELLM_CHECK(e[0] == ~0ull, nm, ": input contains NaN or Inf, which this format cannot encode (row ",
                 int64_t(e[0] - 1) / p.K, ")");
    QUELLM_CHECK(e[1] == ~0ull, nm, ": value range exceeds float32");
}

void format_decode_cuda(const FormatParams& p, void* stream_ptr) {
    format_check(p);
    if (p.rows == 0) return;
    cudaStream_t stream = static_cast<cudaStream_t>(stream_ptr);
    Args a = make_args(p);
    DeviceBuffer<OvpTables> ovp(1);
    if (a.fam == OVP) {
        CUDA_CHECK(cudaMemcpyAsync(ovp.ptr, &ovp_tables(p.type), sizeof(OvpTables), cudaMemcpyHostToDevice, stream));
        a.ovp = ovp.ptr;
    }
    const int64_t chunks = p.rows * p.K / a.chunk;
    decode_kernel<<<grid_for(chunks, 256), 256, 0, stream>>>(a, chunks);
    CUDA_CHECK_LAUNCH();
    CUDA_CHECK(cudaStreamSynchronize(stream));  // the OVP table buffer is freed on return
}

// ---- host planes: stage codes / scales / zeros / tensor scale through device buffers ---------

namespace {
struct Staged {
    DeviceBuffer<uint8_t> codes, scales;
    DeviceBuffer<float> zeros, ts;
    size_t ncode, nscale_bytes, nzero, nts;
    explicit Staged(const FormatParams& p)
        : codes(size_t(format_code_bytes(p))),
          scales(size_t(format_n_scales(p)) * (format_traits(p.type).scale_dtype == ScaleDtype::F32 ? 4 : 1)),
          zeros(p.zeros ? size_t(format_n_scales(p)) : 0),
          ts(p.tensor_scale ? 1 : 0),
          ncode(size_t(format_code_bytes(p))),
          nscale_bytes(size_t(format_n_scales(p)) * (format_traits(p.type).scale_dtype == ScaleDtype::F32 ? 4 : 1)),
          nzero(p.zeros ? size_t(format_n_scales(p)) : 0),
          nts(p.tensor_scale ? 1 : 0) {}
    FormatParams on_device(const FormatParams& p) const {
        FormatParams d = p;
        d.codes = codes.ptr;
        d.scales = scales.ptr;
        d.zeros = p.zeros ? zeros.ptr : nullptr;
        d.tensor_scale = p.tensor_scale ? ts.ptr : nullptr;
        return d;
    }
    void to_device(const FormatParams& p, bool with_codes) {
        if (with_codes) CUDA_CHECK(cudaMemcpy(codes.ptr, p.codes, ncode, cudaMemcpyHostToDevice));
        CUDA_CHECK(cudaMemcpy(scales.ptr, p.scales, nscale_bytes, cudaMemcpyHostToDevice));
        if (nzero) CUDA_CHECK(cudaMemcpy(zeros.ptr, p.zeros, nzero * 4, cudaMemcpyHostToDevice));
        if (nts) CUDA_CHECK(cudaMemcpy(ts.ptr, p.tensor_scale, 4, cudaMemcpyHostToDevice));
    }
    void to_host(const FormatParams& p) {
        CUDA_CHECK(cudaMemcpy(p.codes, codes.ptr, ncode, cudaMemcpyDeviceToHost));
        CUDA_CHECK(cudaMemcpy(p.scales, scales.ptr, nscale_bytes, cudaMemcpyDeviceToHost));
        if (nzero) CUDA_CHECK(cudaMemcpy(p.zeros, zeros.ptr, nzero * 4, cudaMemcpyDeviceToHost));
        if (nts) CUDA_CHECK(cudaMemcpy(p.tensor_scale, ts.ptr, 4, cudaMemcpyDeviceToHost));
    }
};
}  // namespace

void format_encode_cuda_host_planes(const FormatParams& p) {
    format_check(p);
    if (p.rows == 0) return;
    Staged st(p);
    st.to_device(p, false);  // given scales / zeros / tensor scale (harmless otherwise)
    format_encode_cuda(st.on_device(p), nullptr);
    st.to_host(p);
}

void format_decode_cuda_host_planes(const FormatParams& p) {
    format_check(p);
    if (p.rows == 0) return;
    Staged st(p);
    st.to_device(p, true);
    format_decode_cuda(st.on_device(p), nullptr);
}

}  // namespace quellm::cuda
