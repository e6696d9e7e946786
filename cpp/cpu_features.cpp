// cpu_features.cpp — cpuid/xgetbv detection, the ISA cap and the thread count.
#include "cpu_features.h"

#include <omp.h>

#include <atomic>
#include <cstdlib>
#include <stdexcept>

#if defined(QUELLM_X86_PATHS)
#include <cpuid.h>
#endif

namespace quellm {

namespace {

#if defined(QUELLM_X86_PATHS)
uint64_t read_xcr0() {
    uint32_t eax, edx;
    __asm__ volatile("xgetbv" : "=a"(eax), "=d"(edx) : "c"(0));
    return (uint64_t(edx) << 32) | eax;
}
#endif

CpuFeatures detect() {
    CpuFeatures f;
#if defined(QUELLM_X86_PATHS)
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d)) return f;
    const bool osxsave = (c >> 27) & 1;
    f.fma = (c >> 12) & 1;
    f.f16c = (c >> 29) & 1;
    const bool avx = (c >> 28) & 1;
    if (osxsave && avx) {
        const uint64_t xcr0 = read_xcr0();
        f.os_avx = (xcr0 & 0x6) == 0x6;            // SSE + AVX state
        f.os_avx512 = f.os_avx && (xcr0 & 0xe0) == 0xe0;  // opmask + ZMM_Hi256 + Hi16_ZMM
    }
    if (__get_cpuid_max(0, nullptr) >= 7) {
        __cpuid_count(7, 0, a, b, c, d);
        f.avx2 = (b >> 5) & 1;
        f.bmi2 = (b >> 8) & 1;
        f.avx512f = (b >> 16) & 1;
        f.avx512dq = (b >> 17) & 1;
        f.avx512bw = (b >> 30) & 1;
        f.avx512vl = (b >> 31) & 1;
        f.avx512vnni = (c >> 11) & 1;
        __cpuid_count(7, 1, a, b, c, d);
        f.avx512bf16 = (a >> 5) & 1;
    }
#endif
    return f;
}

Isa detect_hardware_isa(const CpuFeatures& f) {
    if (!f.os_avx || !f.avx2 || !f.fma || !f.f16c || !f.bmi2) return Isa::SCALAR;
    if (f.os_avx512 && f.avx512f && f.avx512bw && f.avx512vl && f.avx512dq && f.avx512vnni)
        return Isa::AVX512;
    return Isa::AVX2;
}

Isa min_isa(Isa a, Isa b) { return int(a) < int(b) ? a : b; }

Isa initial_isa() {
    Isa isa = max_isa();
    if (const char* env = std::getenv("QUELLM_ISA")) {
        if (*env) {
            try {
                isa = min_isa(isa, parse_isa(env));
            } catch (const std::invalid_argument&) {
                // An unknown value must not make `import quellm` fail; Python reports it in info().
            }
        }
    }
    return isa;
}

std::atomic<int> g_isa{-1};
std::atomic<int> g_threads{0};

}  // namespace

const CpuFeatures& cpu_features() {
    static const CpuFeatures f = detect();
    return f;
}

const char* isa_name(Isa isa) {
    switch (isa) {
        case Isa::SCALAR: return "scalar";
        case Isa::AVX2: return "avx2";
        case Isa::AVX512: return "avx512";
    }
    return "?";
}

Isa parse_isa(const std::string& name) {
    if (name == "scalar") return Isa::SCALAR;
    if (name == "avx2") return Isa::AVX2;
    if (name == "avx512") return Isa::AVX512;
    throw std::invalid_argument("unknown ISA '" + name + "': expected scalar, avx2 or avx512");
}

Isa hardware_isa() {
    static const Isa isa = detect_hardware_isa(cpu_features());
    return isa;
}

Isa compiled_isa() {
#if defined(QUELLM_X86_PATHS)
    return Isa::AVX512;
#else
    return Isa::SCALAR;
#endif
}

Isa max_isa() { return min_isa(hardware_isa(), compiled_isa()); }

Isa active_isa() {
    int v = g_isa.load(std::memory_order_relaxed);
    if (v < 0) {
        v = int(initial_isa());
        g_isa.store(v, std::memory_order_relaxed);
    }
    return Isa(v);
}

Isa set_isa(Isa cap) {
    const Isa isa = min_isa(cap, max_isa());
    g_isa.store(int(isa), std::memory_order_relaxed);
    return isa;
}

std::vector<Isa> available_isas() {
    std::vector<Isa> out;
    for (int i = 0; i <= int(max_isa()); ++i) out.push_back(Isa(i));
    return out;
}

int num_threads() {
    const int n = g_threads.load(std::memory_order_relaxed);
    return n > 0 ? n : omp_get_max_threads();
}

void set_num_threads(int n) {
    if (n < 0) throw std::invalid_argument("set_num_threads: n must be >= 1 (or 0 for the default), got " + std::to_string(n));
    g_threads.store(n, std::memory_order_relaxed);
}

}  // namespace quellm
