// fwht.cu — CUDA Walsh–Hadamard transform, same definition as cpp/fwht.h:
//     out[r, :] = scale · (H_m ⊗ H_p) · x[r, :],   n = m · p
//
// Version 1 (this file): one thread block per row, the row held in shared memory.
//   load (f32/f16/bf16 → f32) → H_p butterflies on each of the m sub-rows, two stages per
//   __syncthreads (radix 4) → H_m mixing while storing (fwht_mix_dot, the helper the CPU
//   reference uses) with the scale, converting to the output dtype.
// Rows larger than the shared memory of one block (n = 65536 in f32 on sm_90) are first split
// by a global-memory butterfly pass across halves (H_2 ⊗ H_{n/2}), repeatedly, into a f32
// scratch buffer, then transformed as independent shorter rows.
#include <algorithm>
#include <cstdint>

#include "common.cuh"
#include "cuda_api.h"
#include "fwht.h"

namespace quellm::cuda {

namespace {

struct RowArgs {
    const void* x;
    void* out;
    DType xt, ot;
    int64_t n, p;
    int m;
    const int8_t* hm;  // device
    float scale;
};

__global__ void fwht_row_kernel(RowArgs a) {
    extern __shared__ float s[];  // (m, p) — the row
    const int64_t row = blockIdx.x;
    const int64_t n = a.n, p = a.p;
    const int64_t base = row * n;
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x) s[i] = load_as_f32(a.x, base + i, a.xt);
    __syncthreads();
    // H_p on each sub-row: radix-4 steps (strides h and 2h), then a final radix-2 if needed.
    int64_t h = 1;
    for (; 4 * h <= p; h *= 4) {
        const int64_t quads = n / 4;
        for (int64_t q = threadIdx.x; q < quads; q += blockDim.x) {
            const int64_t sub = q / (p / 4), k = q % (p / 4);
            const int64_t j = sub * p + (k / h) * 4 * h + (k % h);
            float v0 = s[j], v1 = s[j + h], v2 = s[j + 2 * h], v3 = s[j + 3 * h];
            fwht_bfly(v0, v1);
            fwht_bfly(v2, v3);
            fwht_bfly(v0, v2);
            fwht_bfly(v1, v3);
            s[j] = v0; s[j + h] = v1; s[j + 2 * h] = v2; s[j + 3 * h] = v3;
        }
        __syncthreads();
    }
    if (h < p) {
        const int64_t pairs = n / 2;
        for (int64_t q = threadIdx.x; q < pairs; q += blockDim.x) {
            const int64_t sub = q / (p / 2), k = q % (p / 2);
            const int64_t j = sub * p + (k / h) * 2 * h + (k % h);
            fwht_bfly(s[j], s[j + h]);
        }
        __syncthreads();
    }
    // H_m mixing (a no-op copy for m = 1), scale, convert, store.
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x) {
        const int64_t aa = i / p, b = i % p;
        const float v = a.m == 1 ? s[i] : fwht_mix_dot(a.hm + aa * a.m, s + b, p, a.m);
        store_from_f32(a.out, base + i, v * a.scale, a.ot);
    }
}

// One butterfly stage across the two halves of every row (stride half = n/2), into f32 dst.
__global__ void fwht_split_kernel(const void* x, DType xt, float* dst, int64_t rows, int64_t n) {
    const int64_t half = n / 2;
    const int64_t total = rows * half;
    for (int64_t t = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; t < total;
         t += int64_t(gridDim.x) * blockDim.x) {
        const int64_t r = t / half, j = t % half;
        float u = load_as_f32(x, r * n + j, xt), v = load_as_f32(x, r * n + j + half, xt);
        fwht_bfly(u, v);
        dst[r * n + j] = u;
        dst[r * n + j + half] = v;
    }
}

}  // namespace

void fwht_cuda(const FwhtCudaParams& prm, void* stream_ptr) {
    QUELLM_CHECK(prm.rows >= 0 && prm.n >= 1 && prm.m >= 1 && prm.p >= 1 && prm.n == prm.m * prm.p,
                 "fwht_cuda: inconsistent sizes n=", prm.n, " m=", prm.m, " p=", prm.p);
    QUELLM_CHECK((prm.p & (prm.p - 1)) == 0, "fwht_cuda: p must be a power of two, got ", prm.p);
    QUELLM_CHECK(prm.m == 1 || prm.hm != nullptr || prm.hm_device != nullptr, "fwht_cuda: H_m required for m = ", prm.m);
    if (prm.rows == 0) return;
    cudaStream_t stream = static_cast<cudaStream_t>(stream_ptr);
    int dev = 0, max_smem = 0;
    CUDA_CHECK(cudaGetDevice(&dev));
    CUDA_CHECK(cudaDeviceGetAttribute(&max_smem, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev));

    int8_t* hm_dev = nullptr;  // per-call copy of the host H_m, freed at the end
    if (prm.m > 1 && !prm.hm_device) {
        CUDA_CHECK(cudaMallocAsync(reinterpret_cast<void**>(&hm_dev), size_t(prm.m) * prm.m, stream));
        CUDA_CHECK(cudaMemcpyAsync(hm_dev, prm.hm, size_t(prm.m) * prm.m, cudaMemcpyHostToDevice, stream));
    }
    const int8_t* hm_use = prm.hm_device ? reinterpret_cast<const int8_t*>(prm.hm_device) : hm_dev;
    RowArgs a{prm.x, prm.out, prm.x_dtype, prm.out_dtype, prm.n, prm.p, prm.m, hm_use, prm.scale};
    int64_t rows = prm.rows;
    float* scratch = nullptr;
    // Split rows that do not fit in one block's shared memory: H_2 across halves, repeatedly.
    while (a.n * int64_t(sizeof(float)) > max_smem) {
        QUELLM_CHECK(a.p >= 2, "fwht_cuda: row of ", a.n, " elements does not fit in shared memory");
        if (!scratch)
            CUDA_CHECK(cudaMallocAsync(reinterpret_cast<void**>(&scratch), size_t(prm.rows) * prm.n * sizeof(float), stream));
        const int64_t total = rows * (a.n / 2);
        const int blocks = int(std::min<int64_t>(ceil_div(total, 256), 65535));
        fwht_split_kernel<<<blocks, 256, 0, stream>>>(a.x, a.xt, scratch, rows, a.n);
        CUDA_CHECK_LAUNCH();
        // H_2 ⊗ (H_m ⊗ H_{p/2}) reorders the factors; valid because only m = 1 rows are this large.
        QUELLM_CHECK(a.m == 1, "fwht_cuda: rows with m > 1 must fit in shared memory (n = ", a.n, ")");
        a.x = scratch;
        a.xt = DType::F32;
        a.n /= 2;
        a.p /= 2;
        rows *= 2;
    }
    const size_t smem = size_t(a.n) * sizeof(float);
    if (smem > 48 * 1024)
        CUDA_CHECK(cudaFuncSetAttribute(fwht_row_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)));
    const int threads = int(std::min<int64_t>(1024, std::max<int64_t>(32, a.n / 4)));
    QUELLM_CHECK(rows <= 0x7fffffff, "fwht_cuda: too many rows");
    fwht_row_kernel<<<unsigned(rows), threads, smem, stream>>>(a);
    CUDA_CHECK_LAUNCH();
    if (scratch) CUDA_CHECK(cudaFreeAsync(scratch, stream));
    if (hm_dev) CUDA_CHECK(cudaFreeAsync(hm_dev, stream));
}

}  // namespace quellm::cuda
