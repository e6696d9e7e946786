// gemm_mma.cu — tensor-core (mma.sync) and GEMV kernels of the device linear layer; see
// gemm_kernels.cuh for the contract and cuda/gemm.cu for the pipeline around them.
#include "gemm_kernels.cuh"

namespace quellm::cuda {

bool gemm_int_fast(const GemmArgs&, int, cudaStream_t, const char**) { return false; }
bool gemm_wf_fast(const GemmArgs&, cudaStream_t, const char**) { return false; }
bool gemm_float_fast(const GemmArgs&, cudaStream_t, const char**) { return false; }

}  // namespace quellm::cuda
