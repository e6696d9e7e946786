// common.h — macros and helpers shared by every quellm translation unit (host and nvcc).
//
// * QUELLM_CHECK(cond, msg...) throws std::invalid_argument("file:line: msg") — becomes ValueError
//   in Python. The library never calls exit()/abort().
// * QUELLM_HD marks small arithmetic helpers __host__ __device__ under nvcc so CPU tests exercise
//   the same code the CUDA kernels run.
// * Helpers here have internal linkage (QUELLM_INLINE = static inline): per-ISA translation units
//   are compiled with -mavx2 / -mavx512f, and an inline function with external linkage could be
//   merged by the linker into an AVX-512 copy that the scalar path then calls on an older CPU.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <sstream>
#include <stdexcept>
#include <string>

#if defined(__CUDACC__)
#define QUELLM_HD __host__ __device__
#else
#define QUELLM_HD
#endif
#define QUELLM_INLINE static inline

namespace quellm {

namespace detail {
inline void append_all(std::ostringstream&) {}
template <typename T, typename... Rest>
void append_all(std::ostringstream& os, const T& v, const Rest&... rest) {
    os << v;
    append_all(os, rest...);
}
template <typename... Args>
[[noreturn]] void throw_invalid(const char* file, int line, const Args&... args) {
    std::ostringstream os;
    const char* base = std::strrchr(file, '/');
    os << (base ? base + 1 : file) << ":" << line << ": ";
    append_all(os, args...);
    throw std::invalid_argument(os.str());
}
}  // namespace detail

#define QUELLM_CHECK(cond, ...)                                                     \
    do {                                                                            \
        if (!(cond)) ::quellm::detail::throw_invalid(__FILE__, __LINE__, __VA_ARGS__); \
    } while (0)

QUELLM_HD QUELLM_INLINE int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// ---- f16 / bf16 <-> f32, bit-exact, round to nearest even -----------------------------------
QUELLM_HD QUELLM_INLINE float bits_to_f32(uint32_t u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}
QUELLM_HD QUELLM_INLINE uint32_t f32_to_bits(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

QUELLM_HD QUELLM_INLINE float bf16_to_f32(uint16_t h) { return bits_to_f32(uint32_t(h) << 16); }

QUELLM_HD QUELLM_INLINE uint16_t f32_to_bf16(float f) {
    uint32_t u = f32_to_bits(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return uint16_t((u >> 16) | 0x40u);  // quiet NaN
    u += 0x7fffu + ((u >> 16) & 1u);                                            // RNE
    return uint16_t(u >> 16);
}

QUELLM_HD QUELLM_INLINE float f16_to_f32(uint16_t h) {
    const uint32_t sign = uint32_t(h & 0x8000u) << 16;
    const uint32_t exp = (h >> 10) & 0x1fu;
    const uint32_t man = h & 0x3ffu;
    if (exp == 0x1f) return bits_to_f32(sign | 0x7f800000u | (man << 13));  // inf / nan
    if (exp != 0) return bits_to_f32(sign | ((exp + 112u) << 23) | (man << 13));
    if (man == 0) return bits_to_f32(sign);
    // subnormal: value = man * 2^-24
    float v = float(man) * 5.9604644775390625e-08f;
    return sign ? -v : v;
}

QUELLM_HD QUELLM_INLINE uint16_t f32_to_f16(float f) {
    uint32_t u = f32_to_bits(f);
    const uint16_t sign = uint16_t((u >> 16) & 0x8000u);
    u &= 0x7fffffffu;
    if (u > 0x7f800000u) return uint16_t(sign | 0x7e00u);      // NaN
    if (u >= 0x477ff000u) return uint16_t(sign | 0x7c00u);     // rounds to inf (>= 65520)
    if (u >= 0x38800000u) {                                    // normal f16 (>= 2^-14)
        uint32_t r = u + 0xfffu + ((u >> 13) & 1u) - (112u << 23);
        return uint16_t(sign | (r >> 13));
    }
    // subnormal or zero: scale so the f16 subnormal unit 2^-24 becomes 1, round to even.
    float a = bits_to_f32(u) * 16777216.0f;  // exact (power of two)
    uint32_t q = uint32_t(a);
    float frac = a - float(q);
    if (frac > 0.5f || (frac == 0.5f && (q & 1u))) ++q;
    return uint16_t(sign | q);
}

}  // namespace quellm
