// cpu_features.h — run-time ISA detection, the QUELLM_ISA cap, and the thread count.
//
// Kernels dispatch on quellm::active_isa(): the best level the CPU supports, the OS enables
// (xgetbv) and this build compiled, capped by the QUELLM_ISA environment variable
// (scalar | avx2 | avx512) read at import, or by set_isa() at run time.
#pragma once

#include <string>
#include <vector>

namespace quellm {

enum class Isa : int { SCALAR = 0, AVX2 = 1, AVX512 = 2 };

struct CpuFeatures {
    bool avx2 = false, fma = false, f16c = false, bmi2 = false;
    bool avx512f = false, avx512bw = false, avx512vl = false, avx512dq = false;
    bool avx512vnni = false, avx512bf16 = false;
    bool os_avx = false, os_avx512 = false;  // the OS saves the YMM / ZMM+mask state (xgetbv)
};

const CpuFeatures& cpu_features();
const char* isa_name(Isa isa);
Isa parse_isa(const std::string& name);  // throws std::invalid_argument on an unknown name

Isa hardware_isa();         // best level this CPU + OS support
Isa compiled_isa();         // best level this build has code paths for
Isa max_isa();              // min(hardware, compiled)
Isa active_isa();           // the level kernels use now
Isa set_isa(Isa cap);       // cap the active level (clamped to max_isa()); returns the new level
std::vector<Isa> available_isas();  // SCALAR .. max_isa()

int num_threads();          // threads used by every OpenMP region in quellm
void set_num_threads(int n);  // n >= 1; n == 0 restores the default (omp_get_max_threads at load)

}  // namespace quellm
