// runtime_kernels.cu — the GPU runtime's own kernels (everything that is not a linear layer or the
// Mamba conv/scan): embedding gather, residual add + RMSNorm, RoPE + Hadamard + KV-cache append
// (quantizing to int8/int4 in place), tiled causal GQA attention with an optional split over the
// cache (decode) and its merge, SwiGLU, and small copies. Activations are f16/bf16 in memory and
// f32 in registers; the per-element arithmetic is in runtime_ops.h, shared with the CPU tests.
#include <algorithm>
#include <cmath>

#include "runtime/ops.h"
#include "runtime_internal.cuh"
#include "runtime_ops.h"

namespace quellm::cuda {

namespace {

constexpr int kWarp = 32;

__device__ __forceinline__ float warp_sum(float v) {
    for (int o = kWarp / 2; o > 0; o /= 2) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}
__device__ __forceinline__ float warp_max(float v) {
    for (int o = kWarp / 2; o > 0; o /= 2) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}
// Block-wide reduction (blockDim.x a multiple of 32, <= 1024); every thread gets the result.
// `identity` fills the lanes of the last step that have no warp behind them.
template <class Op>
__device__ float block_reduce(float v, Op op, float identity, float* scratch /* >= 33 floats */) {
    const int lane = threadIdx.x % kWarp, warp = threadIdx.x / kWarp, nw = blockDim.x / kWarp;
    for (int o = kWarp / 2; o > 0; o /= 2) v = op(v, __shfl_xor_sync(0xffffffffu, v, o));
    __syncthreads();  // scratch may still be read by a previous reduction
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    if (warp == 0) {
        float w = lane < nw ? scratch[lane] : identity;
        for (int o = kWarp / 2; o > 0; o /= 2) w = op(w, __shfl_xor_sync(0xffffffffu, w, o));
        if (lane == 0) scratch[32] = w;
    }
    __syncthreads();
    return scratch[32];
}
struct OpSum {
    __device__ float operator()(float a, float b) const { return a + b; }
};
struct OpMin {
    __device__ float operator()(float a, float b) const { return fminf(a, b); }
};
struct OpMax {
    __device__ float operator()(float a, float b) const { return fmaxf(a, b); }
};

unsigned grid_for(int64_t n, int threads) {
    const int64_t b = ceil_div(n, threads);
    return unsigned(std::min<int64_t>(std::max<int64_t>(b, 1), int64_t(1) << 20));
}

// ---- embedding ------------------------------------------------------------------------------
__global__ void embed_kernel(const int32_t* tokens, const void* table, DType tdt, int64_t D, float* x) {
    const int64_t r = blockIdx.x;
    const int64_t tok = tokens[r];
    for (int64_t d = threadIdx.x; d < D; d += blockDim.x) x[r * D + d] = load_as_f32(table, tok * D + d, tdt);
}

// ---- residual add + RMSNorm -----------------------------------------------------------------
__global__ void add_rmsnorm_kernel(float* x, const void* y, DType act, const float* w, int64_t D, float eps, void* h,
                                   DType hdt, int64_t T, bool last_only) {
    __shared__ float scratch[33];
    const int64_t r = blockIdx.x;
    float* xr = x + r * D;
    float ss = 0.0f;
    for (int64_t d = threadIdx.x; d < D; d += blockDim.x) {
        float v = xr[d];
        if (y) {
            v += load_as_f32(y, r * D + d, act);
            xr[d] = v;
        }
        ss += v * v;
    }
    if (!h || (last_only && r % T != T - 1)) return;  // uniform over the block
    ss = block_reduce(ss, OpSum{}, 0.0f, scratch);
    const float inv = rt::rms_inv(ss, D, eps);
    const int64_t o = last_only ? r / T : r;
    for (int64_t d = threadIdx.x; d < D; d += blockDim.x) store_from_f32(h, o * D + d, xr[d] * inv * w[d], hdt);
}

// ---- RoPE + Hadamard + KV append ----------------------------------------------------------------
constexpr int kMaxHd = 512;
constexpr int kRopeThreads = 128;

__global__ void rope_store_kernel(void* q, const void* k, const void* v, DType act, const float* inv_freq,
                                  const int32_t* lens, int64_t T, KvShape kv, KvLayer cache, int* err) {
    __shared__ float vec[kMaxHd];
    __shared__ float scratch[33];
    __shared__ rt::KvQParams qp;
    const int64_t r = blockIdx.x, slot = blockIdx.y, Hd = kv.Hd, half = Hd / 2;
    const int64_t b = r / T, pos = lens[b] + r % T;
    const int kind = slot < kv.H ? 0 : slot < kv.H + kv.Hk ? 1 : 2;  // q, k, v
    const int64_t head = kind == 0 ? slot : kind == 1 ? slot - kv.H : slot - kv.H - kv.Hk;
    const void* src = kind == 0 ? q : kind == 1 ? k : v;
    const int64_t nh = kind == 0 ? kv.H : kv.Hk;
    const int64_t off = (r * nh + head) * Hd;
    for (int64_t d = threadIdx.x; d < Hd; d += blockDim.x) vec[d] = load_as_f32(src, off + d, act);
    __syncthreads();
    if (kind != 2) {
        for (int64_t i = threadIdx.x; i < half; i += blockDim.x) rt::rope_pair(&vec[i], &vec[i + half], pos, inv_freq[i]);
        __syncthreads();
    }
    if (kv.hadamard) {
        for (int64_t h = 1; h < Hd; h *= 2) {
            for (int64_t j = threadIdx.x; j < half; j += blockDim.x) rt::fwht_butterfly(vec, h, j);
            __syncthreads();
        }
        const float sc = float(1.0 / sqrt(double(Hd)));
        for (int64_t d = threadIdx.x; d < Hd; d += blockDim.x) vec[d] *= sc;
        __syncthreads();
    }
    if (kind == 0) {
        for (int64_t d = threadIdx.x; d < Hd; d += blockDim.x) store_from_f32(q, off + d, vec[d], act);
        return;
    }
    const int64_t row = (b * kv.S + pos) * kv.Hk + head;
    void* dst = kind == 1 ? cache.k : cache.v;
    if (kv.bits == 0) {
        for (int64_t d = threadIdx.x; d < Hd; d += blockDim.x) store_from_f32(dst, row * Hd + d, vec[d], act);
        return;
    }
    // kv_quant_row in parallel: order-free min / max and finiteness, then one code per value.
    float mn = 0.0f, mx = 0.0f, bad = 0.0f;
    for (int64_t d = threadIdx.x; d < Hd; d += blockDim.x) {
        const float x = vec[d];
        bad = x - x == 0.0f ? bad : 1.0f;
        mn = fminf(mn, x);
        mx = fmaxf(mx, x);
    }
    mn = block_reduce(mn, OpMin{}, INFINITY, scratch);
    mx = block_reduce(mx, OpMax{}, -INFINITY, scratch);
    bad = block_reduce(bad, OpMax{}, 0.0f, scratch);
    if (threadIdx.x == 0) {
        qp = rt::kv_quant_params(mn, mx, kv.bits, kv.clip);
        float* prm = (kind == 1 ? cache.kp : cache.vp) + 2 * row;
        prm[0] = qp.s;
        prm[1] = qp.z;
        if (bad != 0.0f) *err = 1;
    }
    __syncthreads();
    uint8_t* codes = static_cast<uint8_t*>(dst) + row * kv.row_bytes();
    if (kv.bits == 8) {
        for (int64_t d = threadIdx.x; d < Hd; d += blockDim.x) codes[d] = rt::kv_quant_code(vec[d], qp, 8);
    } else {
        for (int64_t j = threadIdx.x; j < half; j += blockDim.x)
            codes[j] = uint8_t(rt::kv_quant_code(vec[2 * j], qp, 4) | (rt::kv_quant_code(vec[2 * j + 1], qp, 4) << 4));
    }
}

// ---- attention --------------------------------------------------------------------------------
// Block = (query tile of TQ tokens × the `group` query heads of one KV head) × one key split.
// Key tiles of kKT positions are dequantized into shared memory (f32) once per block and used
// by every query row; each warp owns rows r = warp, warp + 4, …: lane j scores key j of the tile,
// the tile's softmax is merged into the row's running (max, sum) (rt::SoftmaxAcc), and lanes
// own head dimensions for the weighted sum of values.
constexpr int kKT = 32;
constexpr int kAttnThreads = 128;
constexpr int kAttnWarps = kAttnThreads / kWarp;

struct AttnArgs {
    const void* q;
    DType act;
    const int32_t* lens;
    int64_t T;
    KvShape kv;
    KvLayer c;
    int nsplit;
    int64_t chunk;      // key positions per split
    int TQ, R;          // tokens per tile, rows per block (TQ · group)
    float* partial;     // nsplit > 1: (nsplit, N·H, Hd + 2) = m, l, Σ p·v
    void* att;          // nsplit == 1: (N, H·Hd)
};

std::size_t attn_smem_floats(int R, int64_t Hd) {
    return std::size_t(R) * Hd * 2 + std::size_t(kKT) * (Hd + 1) * 2 + std::size_t(R) * 2 + kAttnWarps * kKT;
}

__device__ __forceinline__ float load_kv(const void* base, const float* prm, const KvShape& kv, DType act, int64_t row,
                                         int64_t d) {
    if (kv.bits == 0) return load_as_f32(base, row * kv.Hd + d, act);
    return rt::kv_dequant(static_cast<const uint8_t*>(base) + row * kv.row_bytes(), d, kv.bits, prm[2 * row],
                          prm[2 * row + 1]);
}

// Rotate a head row back (H/√Hd is its own inverse) with the threads of one warp.
__device__ void warp_fwht(float* row, int64_t Hd, int lane) {
    for (int64_t h = 1; h < Hd; h *= 2) {
        for (int64_t j = lane; j < Hd / 2; j += kWarp) rt::fwht_butterfly(row, h, j);
        __syncwarp();
    }
}

__global__ void attention_kernel(AttnArgs a) {
    extern __shared__ float sm[];
    const KvShape& kv = a.kv;
    const int64_t Hd = kv.Hd, group = kv.H / kv.Hk, ld = Hd + 1;
    float* Qs = sm;                       // (R, Hd)
    float* Acc = Qs + a.R * Hd;           // (R, Hd)
    float* Ks = Acc + a.R * Hd;           // (KT, Hd + 1)
    float* Vs = Ks + kKT * ld;            // (KT, Hd + 1)
    float* Ms = Vs + kKT * ld;            // (R)
    float* Ls = Ms + a.R;                 // (R)
    float* Ps = Ls + a.R;                 // (warps, KT)
    const int lane = threadIdx.x % kWarp, warp = threadIdx.x / kWarp;
    const int64_t b = blockIdx.y / kv.Hk, kvh = blockIdx.y % kv.Hk, z = blockIdx.z;
    const int64_t t0 = int64_t(blockIdx.x) * a.TQ, t1 = min(a.T, t0 + a.TQ);  // tokens [t0, t1)
    const int64_t len = a.lens[b], N = kv.B * a.T;
    const float scale = 1.0f / sqrtf(float(Hd));

    for (int64_t i = threadIdx.x; i < int64_t(a.R) * Hd; i += blockDim.x) {
        const int64_t r = i / Hd, d = i % Hd, t = t0 + r / group, h = kvh * group + r % group;
        Qs[i] = t < t1 ? load_as_f32(a.q, ((b * a.T + t) * kv.H + h) * Hd + d, a.act) : 0.0f;
        Acc[i] = 0.0f;
    }
    for (int64_t r = threadIdx.x; r < a.R; r += blockDim.x) {
        Ms[r] = -INFINITY;
        Ls[r] = 0.0f;
    }
    int64_t lo = rt::attn_window_start(len + t0, kv.window), hi = len + t1;  // keys [lo, hi)
    if (a.nsplit > 1) {
        lo = max(lo, z * a.chunk);
        hi = min(hi, (z + 1) * a.chunk);
    }
    const void* kb = a.c.k;
    const void* vb = a.c.v;
    for (int64_t k0 = lo; k0 < hi; k0 += kKT) {
        __syncthreads();  // the previous tile is no longer read
        for (int64_t i = threadIdx.x; i < int64_t(kKT) * Hd; i += blockDim.x) {
            const int64_t j = i / Hd, d = i % Hd, p = k0 + j;
            float kx = 0.0f, vx = 0.0f;
            if (p < hi) {
                const int64_t row = (b * kv.S + p) * kv.Hk + kvh;
                kx = load_kv(kb, a.c.kp, kv, a.act, row, d);
                vx = load_kv(vb, a.c.vp, kv, a.act, row, d);
            }
            Ks[j * ld + d] = kx;
            Vs[j * ld + d] = vx;
        }
        __syncthreads();
        for (int r = warp; r < a.R; r += kAttnWarps) {
            const int64_t t = t0 + r / group;
            if (t >= t1) continue;  // uniform over the warp
            const int64_t pos = len + t, start = rt::attn_window_start(pos, kv.window);
            const int64_t p = k0 + lane;
            const bool valid = p < hi && p >= start && p <= pos;
            float s = -INFINITY;
            if (valid) {
                float acc = 0.0f;
                const float* qr = Qs + int64_t(r) * Hd;
                const float* kr = Ks + int64_t(lane) * ld;
                for (int64_t d = 0; d < Hd; ++d) acc += qr[d] * kr[d];
                s = acc * scale;
            }
            const float mt = warp_max(s);
            if (mt == -INFINITY) continue;  // no key of this tile for this row (uniform)
            const float pj = valid ? expf(s - mt) : 0.0f;
            const float lt = warp_sum(pj);
            Ps[warp * kKT + lane] = pj;
            rt::SoftmaxAcc sa;
            sa.m = Ms[r];
            sa.l = Ls[r];
            float fa, fb;
            sa.merge(mt, lt, &fa, &fb);
            __syncwarp();
            float* accr = Acc + int64_t(r) * Hd;
            for (int64_t d = lane; d < Hd; d += kWarp) {
                float o = 0.0f;
                for (int j = 0; j < kKT; ++j) o += Ps[warp * kKT + j] * Vs[j * ld + d];
                accr[d] = accr[d] * fa + o * fb;
            }
            if (lane == 0) {
                Ms[r] = sa.m;
                Ls[r] = sa.l;
            }
            __syncwarp();
        }
    }
    __syncthreads();
    // Epilogue: rows of this block → the output (normalised, rotated back) or the split's partial.
    const float hs = float(1.0 / sqrt(double(Hd)));
    for (int r = warp; r < a.R; r += kAttnWarps) {
        const int64_t t = t0 + r / group, h = kvh * group + r % group;
        if (t >= t1) continue;
        const int64_t qrow = (b * a.T + t) * kv.H + h;  // = query row · H + head
        float* accr = Acc + int64_t(r) * Hd;
        if (a.nsplit > 1) {
            float* dst = a.partial + (z * N * kv.H + qrow) * (Hd + 2);
            if (lane == 0) {
                dst[0] = Ms[r];
                dst[1] = Ls[r];
            }
            for (int64_t d = lane; d < Hd; d += kWarp) dst[2 + d] = accr[d];
            continue;
        }
        const float inv = Ls[r] > 0.0f ? 1.0f / Ls[r] : 0.0f;
        for (int64_t d = lane; d < Hd; d += kWarp) accr[d] *= inv;
        __syncwarp();
        if (kv.hadamard) warp_fwht(accr, Hd, lane);
        for (int64_t d = lane; d < Hd; d += kWarp)
            store_from_f32(a.att, qrow * Hd + d, kv.hadamard ? accr[d] * hs : accr[d], a.act);
    }
}

// Merge the nsplit partials of each (query row, head), normalise, rotate back, store.
__global__ void attention_merge_kernel(const float* partial, int nsplit, int64_t NH, int64_t Hd, bool hadamard,
                                       void* att, DType act) {
    __shared__ float row[kMaxHd];
    const int64_t qh = blockIdx.x;
    float l = 0.0f;
    for (int64_t d = threadIdx.x; d < Hd; d += blockDim.x) {
        rt::SoftmaxAcc sa;
        float o = 0.0f;
        for (int z = 0; z < nsplit; ++z) {
            const float* p = partial + (z * NH + qh) * (Hd + 2);
            float fa, fb;
            sa.merge(p[0], p[1], &fa, &fb);
            o = o * fa + p[2 + d] * fb;
        }
        l = sa.l;
        row[d] = l > 0.0f ? o / l : 0.0f;
    }
    __syncthreads();
    if (hadamard) {
        for (int64_t h = 1; h < Hd; h *= 2) {
            for (int64_t j = threadIdx.x; j < Hd / 2; j += blockDim.x) rt::fwht_butterfly(row, h, j);
            __syncthreads();
        }
    }
    const float hs = hadamard ? float(1.0 / sqrt(double(Hd))) : 1.0f;
    for (int64_t d = threadIdx.x; d < Hd; d += blockDim.x) store_from_f32(att, qh * Hd + d, row[d] * hs, act);
}

// ---- element-wise -----------------------------------------------------------------------------
__global__ void swiglu_kernel(void* g, const void* u, int64_t n, DType act) {
    for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
        store_from_f32(g, i, rt::swiglu(load_as_f32(g, i, act), load_as_f32(u, i, act)), act);
}

__global__ void copy_cols_kernel(const void* src, int64_t ld, int64_t col0, int64_t ncols, void* dst, int64_t n,
                                 DType act) {
    for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
        const int64_t r = i / ncols, c = i % ncols;
        store_from_f32(dst, i, load_as_f32(src, r * ld + col0 + c, act), act);
    }
}

__global__ void to_f32_kernel(const void* in, DType act, int64_t n, float* out) {
    for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
        out[i] = load_as_f32(in, i, act);
}

__global__ void advance_kernel(int32_t* lens, int64_t B, int64_t T) {
    const int64_t b = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
    if (b < B) lens[b] += int32_t(T);
}

}  // namespace

// ---- launchers --------------------------------------------------------------------------------
void launch_embed(const int32_t* tokens, const void* table, DType tdt, int64_t N, int64_t D, float* x, cudaStream_t s) {
    if (N == 0) return;
    embed_kernel<<<unsigned(N), 128, 0, s>>>(tokens, table, tdt, D, x);
    CUDA_CHECK_LAUNCH();
}

void launch_add_rmsnorm(float* x, const void* y, DType act, const float* w, int64_t N, int64_t D, float eps, void* h,
                        DType hdt, int64_t T, bool last_only, cudaStream_t s) {
    if (N == 0) return;
    add_rmsnorm_kernel<<<unsigned(N), 256, 0, s>>>(x, y, act, w, D, eps, h, hdt, T, last_only);
    CUDA_CHECK_LAUNCH();
}

void launch_rope_store(void* q, const void* k, const void* v, DType act, const float* inv_freq, const int32_t* lens,
                       int64_t T, const KvShape& kv, const KvLayer& cache, int* err, cudaStream_t s) {
    QUELLM_CHECK(kv.Hd <= kMaxHd && kv.Hd % 2 == 0, "GPU runtime: head_dim must be even and <= ", kMaxHd);
    const int64_t N = kv.B * T;
    if (N == 0) return;
    const dim3 grid(unsigned(N), unsigned(kv.H + 2 * kv.Hk));
    // One thread per rotation pair (a multiple of 32 for the block reductions), at most 128.
    const int threads = int(std::clamp<int64_t>(ceil_div(kv.Hd / 2, kWarp) * kWarp, kWarp, kRopeThreads));
    rope_store_kernel<<<grid, threads, 0, s>>>(q, k, v, act, inv_freq, lens, T, kv, cache, err);
    CUDA_CHECK_LAUNCH();
}

namespace {
// Rows per attention block: the `group` query heads of a KV head × TQ tokens (about 16 rows).
void attn_tile(int64_t T, int64_t group, int* TQ, int* R) {
    const int64_t tq = T == 1 ? 1 : std::max<int64_t>(1, std::min<int64_t>(T, 16 / group));
    *TQ = int(tq);
    *R = int(tq * group);
}
}  // namespace

int attention_splits(int64_t S, int64_t B, int64_t Hk) {
    // Enough blocks for the whole GPU at batch 1, and at least 64 positions per split.
    const int64_t want = ceil_div(264, std::max<int64_t>(1, B * Hk));
    return int(std::clamp<int64_t>(std::min<int64_t>(want, ceil_div(S, 64)), 1, 64));
}

void launch_attention(const void* q, DType act, const int32_t* lens, int64_t T, const KvShape& kv, const KvLayer& cache,
                      int nsplit, float* partial, void* att, cudaStream_t s) {
    QUELLM_CHECK(kv.Hd <= kMaxHd, "GPU runtime: head_dim must be <= ", kMaxHd);
    QUELLM_CHECK(nsplit == 1 || partial != nullptr, "launch_attention: split without a partial buffer");
    const int64_t N = kv.B * T;
    if (N == 0) return;
    AttnArgs a{q, act, lens, T, kv, cache, nsplit, ceil_div(kv.S, nsplit), 0, 0, partial, att};
    attn_tile(T, kv.H / kv.Hk, &a.TQ, &a.R);
    const std::size_t smem = attn_smem_floats(a.R, kv.Hd) * sizeof(float);
    static std::size_t opted = 48 * 1024;  // largest dynamic shared memory requested so far
    if (smem > opted) {
        CUDA_CHECK(cudaFuncSetAttribute(attention_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)));
        opted = smem;
    }
    const dim3 grid(unsigned(ceil_div(T, a.TQ)), unsigned(kv.B * kv.Hk), unsigned(nsplit));
    attention_kernel<<<grid, kAttnThreads, smem, s>>>(a);
    CUDA_CHECK_LAUNCH();
    if (nsplit > 1) {
        attention_merge_kernel<<<unsigned(N * kv.H), 64, 0, s>>>(partial, nsplit, N * kv.H, kv.Hd, kv.hadamard, att, act);
        CUDA_CHECK_LAUNCH();
    }
}

void launch_swiglu(void* g, const void* u, int64_t n, DType act, cudaStream_t s) {
    if (n == 0) return;
    swiglu_kernel<<<grid_for(n, 256), 256, 0, s>>>(g, u, n, act);
    CUDA_CHECK_LAUNCH();
}

void launch_copy_cols(const void* src, int64_t ld, int64_t col0, int64_t ncols, void* dst, int64_t N, DType act,
                      cudaStream_t s) {
    if (N * ncols == 0) return;
    copy_cols_kernel<<<grid_for(N * ncols, 256), 256, 0, s>>>(src, ld, col0, ncols, dst, N * ncols, act);
    CUDA_CHECK_LAUNCH();
}

void launch_to_f32(const void* in, DType act, int64_t n, float* out, cudaStream_t s) {
    if (n == 0) return;
    to_f32_kernel<<<grid_for(n, 256), 256, 0, s>>>(in, act, n, out);
    CUDA_CHECK_LAUNCH();
}

void launch_advance(int32_t* lens, int64_t B, int64_t T, cudaStream_t s) {
    if (B == 0) return;
    advance_kernel<<<grid_for(B, 128), 128, 0, s>>>(lens, B, T);
    CUDA_CHECK_LAUNCH();
}

}  // namespace quellm::cuda
