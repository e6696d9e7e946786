// test_kernels.cpp — a plain C++ test of the kernels' scalar references and dispatched paths,
// so the C++ side can be built and debugged without Python (CMake: -DQUELLM_BUILD_TESTS=ON; ctest).
//
// Each scalar reference is checked against an independent loop or known values (a dense
// Hadamard matrix, a naive integer GEMM, hand-computed quantization), and each dispatched fast
// path against the reference at every ISA level this CPU runs and with 1, 2 and 3 threads:
// bit for bit where the header promises it (FWHT, integer GEMMs), to float rounding elsewhere.
// A tiny harness: CHECK records a failure and continues; main returns nonzero if any failed.
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <exception>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "common.h"
#include "formats_elem.h"
#include "cpu_features.h"
#include "fwht.h"
#include "gemm.h"
#include "gemm_hd.h"
#include "gemm_layout.h"
#include "matmul.h"
#include "quant_linear.h"
#include "runtime/kv_quant.h"
#include "runtime/ops.h"
#include "runtime_ops.h"  // cuda/: the GPU runtime's __host__ __device__ arithmetic

using namespace quellm;

namespace {

int g_checks = 0, g_failures = 0;
std::string g_context;

#define CHECK(cond, ...)                                                                            \
    do {                                                                                            \
        ++g_checks;                                                                                 \
        if (!(cond)) {                                                                              \
            ++g_failures;                                                                           \
            std::fprintf(stderr, "FAIL %s:%d [%s]: %s ", __FILE__, __LINE__, g_context.c_str(), #cond); \
            std::fprintf(stderr, __VA_ARGS__);                                                      \
            std::fprintf(stderr, "\n");                                                             \
        }                                                                                           \
    } while (0)

bool same_bits(float a, float b) { return std::memcmp(&a, &b, 4) == 0; }

// first index where a and b differ in their bits, or -1
int64_t first_diff(const std::vector<float>& a, const std::vector<float>& b) {
    if (a.size() != b.size()) return 0;
    for (size_t i = 0; i < a.size(); ++i)
        if (!same_bits(a[i], b[i])) return int64_t(i);
    return -1;
}

std::vector<float> randn(size_t n, uint32_t seed, float scale = 1.0f) {
    std::mt19937 rng(seed);
    std::normal_distribution<float> d(0.0f, scale);
    std::vector<float> v(n);
    for (auto& x : v) x = d(rng);
    return v;
}

std::vector<int> randint(size_t n, int lo, int hi, uint32_t seed) {
    std::mt19937 rng(seed);
    std::uniform_int_distribution<int> d(lo, hi);
    std::vector<int> v(n);
    for (auto& x : v) x = d(rng);
    return v;
}

// Run fn at every ISA level this CPU and build support, with 1, 2 and 3 threads.
template <typename F>
void for_each_isa_and_threads(F fn) {
    const Isa before = active_isa();
    const int threads_before = num_threads();
    for (Isa isa : available_isas()) {
        set_isa(isa);
        for (int t = 1; t <= 3; ++t) {
            set_num_threads(t);
            fn(isa, t);
        }
    }
    set_isa(before);
    set_num_threads(threads_before);
}

std::string where(Isa isa, int t) { return std::string(isa_name(isa)) + "/" + std::to_string(t) + "t"; }

// ---- FWHT -------------------------------------------------------------------------------------

// Paley construction I: a Hadamard matrix of order q + 1 for a prime q ≡ 3 (mod 4).
std::vector<int8_t> paley(int q) {
    auto chi = [q](int a) {
        a = ((a % q) + q) % q;
        if (a == 0) return 0;
        for (int x = 1; x < q; ++x)
            if (x * x % q == a) return 1;
        return -1;
    };
    const int n = q + 1;
    std::vector<int8_t> h(size_t(n * n));
    for (int i = 0; i < n; ++i)
        for (int j = 0; j < n; ++j) {
            int s;  // S = [[0, 1ᵀ], [-1, Q]], Q_ij = chi(i - j); H = I + S
            if (i == 0) s = j == 0 ? 0 : 1;
            else if (j == 0) s = -1;
            else s = chi(i - j);
            h[size_t(i * n + j)] = int8_t(s + (i == j ? 1 : 0));
        }
    return h;
}

void test_fwht() {
    g_context = "fwht";
    // the Paley matrix is a Hadamard matrix: H Hᵀ = n I
    const int m = 12;
    const auto hm = paley(11);
    bool orthogonal = true;
    for (int i = 0; i < m; ++i)
        for (int j = 0; j < m; ++j) {
            int dot = 0;
            for (int k = 0; k < m; ++k) dot += hm[size_t(i * m + k)] * hm[size_t(j * m + k)];
            orthogonal &= dot == (i == j ? m : 0);
        }
    CHECK(orthogonal, "Paley(11) is not a Hadamard matrix");

    // m < kFwhtGroupedMinM (28) takes the register-tiled mixing in the SIMD kernels, from it the tables
    // (fwht_simd.h); p = 4·W fuses H_p into either (AVX-512: p = 64, AVX2: p = 32)
    struct Case { int m; int64_t p; };
    for (Case c : {Case{1, 1}, Case{1, 2}, Case{1, 8}, Case{1, 64}, Case{12, 1}, Case{12, 4}, Case{12, 32},
                   Case{20, 16}, Case{44, 8}, Case{44, 64}, Case{60, 16}, Case{60, 32}, Case{108, 64}}) {
        const int64_t n = c.m * c.p, rows = 5;
        const auto hmc = c.m > 1 ? paley(c.m - 1) : std::vector<int8_t>();
        g_context = "fwht m=" + std::to_string(c.m) + " p=" + std::to_string(c.p);
        const auto x = randn(size_t(rows * n), uint32_t(n));
        const float scale = 1.0f / std::sqrt(float(n));
        std::vector<float> ref(x.size());
        FwhtParams p{x.data(), ref.data(), rows, n, c.p, c.m, c.m > 1 ? hmc.data() : nullptr, scale};
        fwht_ref(p);
        // dense H_n = H_m ⊗ H_p, index i = a·p + b, Sylvester H_p[b][d] = (-1)^popcount(b & d)
        double worst = 0.0;
        for (int64_t r = 0; r < rows; ++r)
            for (int64_t i = 0; i < n; ++i) {
                double acc = 0.0, size = 0.0;
                for (int64_t j = 0; j < n; ++j) {
                    const int64_t a = i / c.p, b = i % c.p, cc = j / c.p, d = j % c.p;
                    const int hmv = c.m > 1 ? hmc[size_t(a * c.m + cc)] : 1;
                    const int hpv = __builtin_popcountll(uint64_t(b & d)) % 2 ? -1 : 1;
                    acc += double(hmv * hpv) * x[size_t(r * n + j)];
                    size += std::fabs(x[size_t(r * n + j)]);
                }
                worst = std::max(worst, std::fabs(acc * scale - ref[size_t(r * n + i)]) / (size * scale));
            }
        CHECK(worst <= 1e-6, "fwht_ref vs dense Hadamard: relative error %g", worst);
        // in place equals out of place
        std::vector<float> inplace = x;
        FwhtParams pi{inplace.data(), inplace.data(), rows, n, c.p, c.m, p.hm, scale};
        fwht_ref(pi);
        CHECK(first_diff(inplace, ref) < 0, "in-place fwht_ref differs");
        for_each_isa_and_threads([&](Isa isa, int t) {
            std::vector<float> out(x.size());
            FwhtParams pd = p;
            pd.out = out.data();
            fwht(pd);
            const int64_t i = first_diff(out, ref);
            CHECK(i < 0, "%s: dispatched fwht differs from fwht_ref at %lld", where(isa, t).c_str(), (long long)i);
        });
    }
    g_context = "fwht errors";
    bool threw = false;
    std::vector<float> buf(12);
    try {
        fwht_ref(FwhtParams{buf.data(), buf.data(), 1, 12, 3, 4, nullptr, 1.0f});  // p not a power of two
    } catch (const std::invalid_argument&) {
        threw = true;
    }
    CHECK(threw, "fwht_check accepted p = 3");
}

// ---- integer GEMM -----------------------------------------------------------------------------

std::vector<uint8_t> pack_nibbles(const std::vector<int>& q, int64_t N, int64_t K) {
    std::vector<uint8_t> c(size_t(N * K / 2));
    for (int64_t n = 0; n < N; ++n)
        for (int64_t i = 0; i < K / 2; ++i)
            c[size_t(n * K / 2 + i)] = uint8_t((q[size_t(n * K + 2 * i)] & 0xF) | ((q[size_t(n * K + 2 * i + 1)] & 0xF) << 4));
    return c;
}

void test_int4_packing() {
    g_context = "int4 packing";
    // SPEC §3.7: [-8, 7, 3, -1] -> 0x78 0xF3
    const auto c = pack_nibbles({-8, 7, 3, -1}, 1, 4);
    CHECK(c[0] == 0x78 && c[1] == 0xF3, "got %02x %02x", c[0], c[1]);
    // repack -> unpack round trip, rows not a multiple of the 16-row tile
    const int64_t N = 19, K = 64, G = 32;
    const auto q = randint(size_t(N * K), -8, 7, 1);
    const auto codes = pack_nibbles(q, N, K);
    const auto scales = randn(size_t(N * K / G), 2);
    const IntPacked w = gemm_w4_repack(codes.data(), scales.data(), N, K, G);
    std::vector<uint8_t> back(codes.size());
    std::vector<float> sback(scales.size());
    gemm_int_unpack(w, back.data(), sback.data());
    CHECK(back == codes, "int4 repack/unpack round trip changed the codes");
    CHECK(first_diff(sback, scales) < 0, "int4 repack/unpack round trip changed the scales");
    const auto q8 = randint(size_t(N * K), -128, 127, 3);
    std::vector<int8_t> c8(q8.begin(), q8.end());
    const IntPacked w8 = gemm_w8_repack(c8.data(), scales.data(), N, K, G);
    std::vector<uint8_t> back8(c8.size());
    gemm_int_unpack(w8, back8.data(), sback.data());
    CHECK(std::memcmp(back8.data(), c8.data(), c8.size()) == 0, "int8 repack/unpack round trip changed the codes");
}

// naive y = Σ_g fma(acc_g, sa·sw, y) (+ b): the definition in gemm.h, from the unpacked codes
std::vector<float> naive_gemm(const std::vector<int>& qa, const std::vector<float>& sa, const std::vector<int>& qw,
                              const std::vector<float>& sw, const std::vector<float>& bias, int64_t M, int64_t N,
                              int64_t K, int64_t G) {
    std::vector<float> y(size_t(M * N));
    for (int64_t m = 0; m < M; ++m)
        for (int64_t n = 0; n < N; ++n) {
            float acc_y = 0.0f;
            for (int64_t g = 0; g < K / G; ++g) {
                int64_t acc = 0;
                for (int64_t k = g * G; k < (g + 1) * G; ++k) acc += int64_t(qa[size_t(m * K + k)]) * qw[size_t(n * K + k)];
                acc_y = std::fmaf(float(acc), sa[size_t(m)] * sw[size_t(n * (K / G) + g)], acc_y);
            }
            y[size_t(m * N + n)] = acc_y + bias[size_t(n)];
        }
    return y;
}

void test_gemm_int() {
    struct Case { int bits; int64_t M, N, K, G; };
    for (Case c : {Case{4, 1, 16, 64, 64}, Case{4, 3, 37, 128, 32}, Case{4, 9, 17, 256, 128}, Case{8, 1, 16, 64, 64},
                   Case{8, 5, 33, 128, 32}, Case{8, 17, 7, 96, 96}}) {
        g_context = "gemm_int w" + std::to_string(c.bits) + " M=" + std::to_string(c.M) + " N=" + std::to_string(c.N) +
                    " K=" + std::to_string(c.K) + " G=" + std::to_string(c.G);
        const int lim = 1 << (c.bits - 1);
        const auto qw = randint(size_t(c.N * c.K), -lim, lim - 1, uint32_t(c.N + c.K));
        const auto qa = randint(size_t(c.M * c.K), -127, 127, uint32_t(c.M));
        auto sw = randn(size_t(c.N * c.K / c.G), 7, 0.05f);
        auto sa = randn(size_t(c.M), 8, 0.5f);
        const auto bias = randn(size_t(c.N), 9);
        IntPacked w;
        if (c.bits == 4) {
            const auto codes = pack_nibbles(qw, c.N, c.K);
            w = gemm_w4_repack(codes.data(), sw.data(), c.N, c.K, c.G);
        } else {
            std::vector<int8_t> codes(qw.begin(), qw.end());
            w = gemm_w8_repack(codes.data(), sw.data(), c.N, c.K, c.G);
        }
        std::vector<int8_t> qa8(qa.begin(), qa.end());
        const auto want = naive_gemm(qa, sa, qw, sw, bias, c.M, c.N, c.K, c.G);
        std::vector<float> ref(want.size());
        GemmIntParams p{qa8.data(), sa.data(), &w, bias.data(), ref.data(), c.M};
        gemm_int_ref(p);
        int64_t i = first_diff(ref, want);
        CHECK(i < 0, "gemm_int_ref differs from the naive loop at %lld: %g vs %g", (long long)i, i < 0 ? 0.0 : ref[size_t(i)],
              i < 0 ? 0.0 : want[size_t(i)]);
        for_each_isa_and_threads([&](Isa isa, int t) {
            std::vector<float> y(want.size());
            GemmIntParams pd = p;
            pd.y = y.data();
            gemm_int(pd);
            const int64_t j = first_diff(y, ref);
            CHECK(j < 0, "%s: gemm_int differs from gemm_int_ref at %lld", where(isa, t).c_str(), (long long)j);
        });
    }
}

// MXFP8 activations (E4M3 · 2^9 as int32) × int4 / int8 weights in groups of 32: gemm_mx8_ref
// against the naive block sums, and every ISA / thread count against the reference.
void test_gemm_mx8() {
    struct Case { int bits; int64_t M, N, K; };
    for (Case c : {Case{4, 1, 16, 32}, Case{4, 3, 37, 128}, Case{4, 9, 17, 64}, Case{8, 1, 16, 96}, Case{8, 5, 33, 128}}) {
        g_context = "gemm_mx8 w" + std::to_string(c.bits) + " M=" + std::to_string(c.M) + " N=" + std::to_string(c.N) +
                    " K=" + std::to_string(c.K);
        const int lim = 1 << (c.bits - 1);
        const auto qw = randint(size_t(c.N * c.K), -lim, lim - 1, uint32_t(c.N + c.K));
        const auto qa = randint(size_t(c.M * c.K), -229376, 229376, uint32_t(c.M));
        const auto sw = randn(size_t(c.N * c.K / 32), 7, 0.05f);
        const auto sab = randn(size_t(c.M * c.K / 32), 8, 0.5f);
        const auto bias = randn(size_t(c.N), 9);
        IntPacked w;
        if (c.bits == 4) {
            const auto codes = pack_nibbles(qw, c.N, c.K);
            w = gemm_w4_repack(codes.data(), sw.data(), c.N, c.K, 32);
        } else {
            std::vector<int8_t> codes(qw.begin(), qw.end());
            w = gemm_w8_repack(codes.data(), sw.data(), c.N, c.K, 32);
        }
        const int64_t NB = c.K / 32;
        std::vector<float> want(size_t(c.M * c.N));
        for (int64_t m = 0; m < c.M; ++m)
            for (int64_t n = 0; n < c.N; ++n) {
                float y = 0.0f;
                for (int64_t b = 0; b < NB; ++b) {
                    int64_t acc = 0;
                    for (int64_t k = b * 32; k < (b + 1) * 32; ++k) acc += int64_t(qa[size_t(m * c.K + k)]) * qw[size_t(n * c.K + k)];
                    y = std::fmaf(float(acc), sab[size_t(m * NB + b)] * sw[size_t(n * NB + b)], y);
                }
                want[size_t(m * c.N + n)] = y + bias[size_t(n)];
            }
        std::vector<int32_t> qa32(qa.begin(), qa.end());
        std::vector<float> ref(want.size());
        GemmMx8Params p{qa32.data(), sab.data(), &w, bias.data(), ref.data(), c.M};
        gemm_mx8_ref(p);
        const int64_t i = first_diff(ref, want);
        CHECK(i < 0, "gemm_mx8_ref differs from the naive loop at %lld", (long long)i);
        for_each_isa_and_threads([&](Isa isa, int t) {
            std::vector<float> y(want.size());
            GemmMx8Params pd = p;
            pd.y = y.data();
            gemm_mx8(pd);
            const int64_t j = first_diff(y, ref);
            CHECK(j < 0, "%s: gemm_mx8 differs from gemm_mx8_ref at %lld", where(isa, t).c_str(), (long long)j);
        });
    }
}

// ---- activation quantizers --------------------------------------------------------------------

void test_quantize_rows() {
    g_context = "quantize_rows";
    // known values: max|x| = 2.54, qmax 127 -> s = 0.02; x / s rounds half to even
    const std::vector<float> x = {2.54f, -1.27f, 0.0f, 0.01f, 0.03f, -2.54f, 0.05f, 1.0f};
    std::vector<int8_t> q(x.size());
    float s = 0.0f;
    quantize_rows(x.data(), 1, int64_t(x.size()), 127, 1.0f, q.data(), &s);
    CHECK(same_bits(s, 2.54f / 127.0f), "scale %g", s);
    for (size_t k = 0; k < x.size(); ++k) {
        const float v = std::nearbyint(x[k] / s);
        CHECK(q[k] == int8_t(std::fmax(-127.0f, std::fmin(127.0f, v))), "q[%zu] = %d", k, q[k]);
    }
    CHECK(q[0] == 127 && q[5] == -127 && q[2] == 0, "extremes %d %d %d", q[0], q[5], q[2]);
    // int4 with clip 0.5: s = 0.5 * 2.54 / 7, values beyond the clip saturate at ±7
    quantize_rows(x.data(), 1, int64_t(x.size()), 7, 0.5f, q.data(), &s);
    CHECK(same_bits(s, (0.5f * 2.54f) / 7.0f) && q[0] == 7 && q[5] == -7, "int4 clip: s %g q %d %d", s, q[0], q[5]);
    // an all-zero row takes scale 1
    const std::vector<float> z(8, 0.0f);
    quantize_rows(z.data(), 1, 8, 127, 1.0f, q.data(), &s);
    CHECK(s == 1.0f, "zero row scale %g", s);
    // non-finite input throws
    std::vector<float> bad = x;
    bad[3] = NAN;
    bool threw = false;
    try {
        quantize_rows(bad.data(), 1, int64_t(bad.size()), 127, 1.0f, q.data(), &s);
    } catch (const std::invalid_argument&) {
        threw = true;
    }
    CHECK(threw, "NaN input was accepted");

    g_context = "quantize_rows_mxfp4";
    // values exactly representable as E2M1 × 2^shared decode back exactly: 0, ±0.5 .. ±6 times 2^e
    const float e2m1[8] = {0.0f, 0.5f, 1.0f, 1.5f, 2.0f, 3.0f, 4.0f, 6.0f};
    std::vector<float> xb(64);
    for (int i = 0; i < 64; ++i) xb[size_t(i)] = (i % 2 ? -1.0f : 1.0f) * e2m1[i % 8] * (i < 32 ? 0.25f : 1024.0f);
    std::vector<int8_t> qm(64);
    float sab[2];
    quantize_rows_mxfp4(xb.data(), 1, 64, qm.data(), sab);
    for (int i = 0; i < 64; ++i)
        CHECK(float(qm[size_t(i)]) * sab[i / 32] == xb[size_t(i)], "element %d: %d x %g != %g", i, qm[size_t(i)], sab[i / 32],
              xb[size_t(i)]);
}

// ---- f32 GEMM and weight-only GEMM ------------------------------------------------------------

void test_matmul() {
    // M = 40: the packed outer-product kernel, with partial row panels, column strips and K blocks
    for (const auto [M, K] : {std::pair<int64_t, int64_t>{1, 200}, {4, 200}, {13, 200}, {40, 600}}) {
        const int64_t N = 37;
        g_context = "matmul_f32 M=" + std::to_string(M);
        const auto x = randn(size_t(M * K), 1), w = randn(size_t(N * K), 2), b = randn(size_t(N), 3);
        std::vector<float> ref(size_t(M * N));
        MatmulParams p{x.data(), w.data(), b.data(), ref.data(), M, N, K, K, N};
        matmul_f32_ref(p);
        double worst = 0.0;
        for (int64_t m = 0; m < M; ++m)
            for (int64_t n = 0; n < N; ++n) {
                double acc = b[size_t(n)], size = std::fabs(b[size_t(n)]);
                for (int64_t k = 0; k < K; ++k) {
                    acc += double(x[size_t(m * K + k)]) * w[size_t(n * K + k)];
                    size += std::fabs(double(x[size_t(m * K + k)]) * w[size_t(n * K + k)]);
                }
                worst = std::max(worst, std::fabs(acc - ref[size_t(m * N + n)]) / size);
            }
        CHECK(worst <= 1e-5, "matmul_f32_ref vs a float64 loop: relative error %g", worst);
        for_each_isa_and_threads([&](Isa isa, int t) {
            std::vector<float> y(ref.size());
            MatmulParams pd = p;
            pd.y = y.data();
            matmul_f32(pd);
            double d = 0.0;
            for (size_t i = 0; i < y.size(); ++i) d = std::max(d, double(std::fabs(y[i] - ref[i])));
            CHECK(d <= 1e-4, "%s: matmul_f32 vs ref: max difference %g", where(isa, t).c_str(), d);
        });
    }
}

void test_quant_linear() {
    // int8 weights × int8 activations through QuantLinear equal the quantize_rows + naive GEMM
    // composition; weight-only int4 (asymmetric) equals a dequantize-then-float64 loop.
    const int64_t N = 40, K = 128, G = 32, M = 6;
    const auto x = randn(size_t(M * K), 11);
    const auto qw = randint(size_t(N * K), -127, 127, 12);
    std::vector<uint8_t> codes8(qw.size());
    for (size_t i = 0; i < qw.size(); ++i) codes8[i] = uint8_t(int8_t(qw[i]));
    const auto sw = randn(size_t(N * K / G), 13, 0.01f);
    const std::vector<float> nobias(size_t(N), 0.0f);

    g_context = "QuantLinear w8a8";
    QuantLinear ql = QuantLinear::from_int(8, codes8.data(), sw.data(), nullptr, N, K, G, AQuant::Int8, 1.0f);
    std::vector<int8_t> qa(size_t(M * K));
    std::vector<float> sa(static_cast<size_t>(M));
    quantize_rows(x.data(), M, K, 127, 1.0f, qa.data(), sa.data());
    const auto want = naive_gemm(std::vector<int>(qa.begin(), qa.end()), sa, qw, sw, nobias, M, N, K, G);
    for_each_isa_and_threads([&](Isa isa, int t) {
        std::vector<float> y(size_t(M * N));
        ql.forward(x.data(), M, y.data());
        const int64_t i = first_diff(y, want);
        CHECK(i < 0, "%s: forward differs from quantize_rows + naive GEMM at %lld", where(isa, t).c_str(), (long long)i);
    });

    g_context = "QuantLinear w4a16 asym";
    const auto u = randint(size_t(N * K), 0, 15, 14);
    const auto zeros_i = randint(size_t(N * K / G), 0, 15, 15);
    std::vector<float> zeros(zeros_i.begin(), zeros_i.end());
    std::vector<uint8_t> codes4(size_t(N * K / 2));
    for (int64_t n = 0; n < N; ++n)
        for (int64_t i = 0; i < K / 2; ++i)
            codes4[size_t(n * K / 2 + i)] = uint8_t(u[size_t(n * K + 2 * i)] | (u[size_t(n * K + 2 * i + 1)] << 4));
    QuantLinear wo = QuantLinear::from_int(4, codes4.data(), sw.data(), zeros.data(), N, K, G, AQuant::None, 1.0f);
    for (int64_t rows : {int64_t(1), M, int64_t(2 * kWfGemvRows + 3)}) {  // GEMV and dequantized-panel paths
        const auto xr = randn(size_t(rows * K), uint32_t(rows));
        for_each_isa_and_threads([&](Isa isa, int t) {
            std::vector<float> y(size_t(rows * N));
            wo.forward(xr.data(), rows, y.data());
            double worst = 0.0;
            for (int64_t m = 0; m < rows; ++m)
                for (int64_t n = 0; n < N; ++n) {
                    double acc = 0.0, size = 0.0;
                    for (int64_t k = 0; k < K; ++k) {
                        const double wv = (u[size_t(n * K + k)] - zeros[size_t(n * (K / G) + k / G)]) * double(sw[size_t(n * (K / G) + k / G)]);
                        acc += wv * xr[size_t(m * K + k)];
                        size += std::fabs(wv * xr[size_t(m * K + k)]);
                    }
                    worst = std::max(worst, std::fabs(acc - y[size_t(m * N + n)]) / std::max(size, 1e-30));
                }
            CHECK(worst <= 1e-5, "%s rows=%lld: relative error %g vs dequantize + float64 loop", where(isa, t).c_str(),
                  (long long)rows, worst);
        });
    }
}


// ---- GPU runtime arithmetic (cuda/runtime_ops.h) against the CPU runtime's functions ----------
// The CUDA kernels call exactly these helpers; here they run on the CPU.

// Attention of one query over keys [start, n) the way cuda/runtime_kernels.cu does it: key tiles
// of `tile` merged with SoftmaxAcc, optionally split into chunks of `chunk` positions whose
// partials are merged afterwards (decode).
std::vector<float> attn_emulate(const float* q, const float* K, const float* V, int64_t n, int64_t start, int64_t hd,
                                int64_t tile, int64_t chunk) {
    const float scale = 1.0f / std::sqrt(float(hd));
    struct Part {
        rt::SoftmaxAcc sa;
        std::vector<float> acc;
    };
    std::vector<Part> parts;
    for (int64_t c0 = 0; c0 < n; c0 += chunk) {
        Part pt;
        pt.acc.assign(static_cast<size_t>(hd), 0.0f);
        const int64_t lo = std::max(start, c0), hi = std::min(n, c0 + chunk);
        for (int64_t k0 = lo; k0 < hi; k0 += tile) {
            std::vector<float> s;
            float mt = -INFINITY;
            for (int64_t p = k0; p < std::min(hi, k0 + tile); ++p) {
                float a = 0.0f;
                for (int64_t d = 0; d < hd; ++d) a += q[d] * K[p * hd + d];
                s.push_back(a * scale);
                mt = std::max(mt, s.back());
            }
            float lt = 0.0f;
            for (float& v : s) lt += (v = std::exp(v - mt));
            float fa, fb;
            pt.sa.merge(mt, lt, &fa, &fb);
            for (int64_t d = 0; d < hd; ++d) {
                float o = 0.0f;
                for (size_t j = 0; j < s.size(); ++j) o += s[j] * V[(k0 + int64_t(j)) * hd + d];
                pt.acc[size_t(d)] = pt.acc[size_t(d)] * fa + o * fb;
            }
        }
        parts.push_back(pt);
    }
    std::vector<float> out(static_cast<size_t>(hd));
    for (int64_t d = 0; d < hd; ++d) {
        rt::SoftmaxAcc sa;
        float o = 0.0f;
        for (const Part& pt : parts) {
            float fa, fb;
            sa.merge(pt.sa.m, pt.sa.l, &fa, &fb);
            o = o * fa + pt.acc[size_t(d)] * fb;
        }
        out[size_t(d)] = o / sa.l;
    }
    return out;
}

void test_gpu_runtime_ops() {
    // RMSNorm scale.
    for (int64_t d : {1, 7, 64, 576}) {
        g_context = "rms_inv d=" + std::to_string(d);
        auto x = randn(static_cast<size_t>(d), uint32_t(d)), w = randn(static_cast<size_t>(d), uint32_t(d + 1));
        std::vector<float> want(static_cast<size_t>(d));
        rmsnorm(want.data(), x.data(), w.data(), d, 1e-5f);
        float ss = 0.0f;
        for (float v : x) ss += v * v;
        const float inv = rt::rms_inv(ss, d, 1e-5f);
        double err = 0;
        for (int64_t i = 0; i < d; ++i) err = std::max(err, double(std::fabs(x[size_t(i)] * inv * w[size_t(i)] - want[size_t(i)])));
        CHECK(err < 1e-5, "max err %g", err);
    }
    // RoPE pairs vs rope_rotate_half, positions up to 100k.
    for (int64_t hd : {2, 16, 64, 128}) {
        g_context = "rope_pair hd=" + std::to_string(hd);
        std::vector<float> f(static_cast<size_t>(hd / 2));
        for (int64_t i = 0; i < hd / 2; ++i) f[size_t(i)] = std::pow(10000.0f, -2.0f * float(i) / float(hd));
        for (int64_t pos : {0, 1, 5, 4095, 100000}) {
            auto v = randn(static_cast<size_t>(hd), uint32_t(hd + pos)), w = v;
            rope_rotate_half(v.data(), f.data(), hd, pos);
            for (int64_t i = 0; i < hd / 2; ++i) rt::rope_pair(&w[size_t(i)], &w[size_t(i + hd / 2)], pos, f[size_t(i)]);
            double err = 0;
            for (int64_t i = 0; i < hd; ++i) err = std::max(err, double(std::fabs(v[size_t(i)] - w[size_t(i)])));
            CHECK(err < 1e-6, "pos %lld: max err %g", (long long)pos, err);
        }
    }
    // In-place head FWHT (butterfly stages, then the scale) vs fwht_ref: bit for bit.
    for (int64_t n = 2; n <= 512; n *= 2) {
        g_context = "fwht_butterfly n=" + std::to_string(n);
        auto x = randn(static_cast<size_t>(n), uint32_t(n)), want = x, got = x;
        const float sc = float(1.0 / std::sqrt(double(n)));
        fwht_ref(FwhtParams{x.data(), want.data(), 1, n, n, 1, nullptr, sc});
        for (int64_t h = 1; h < n; h *= 2)
            for (int64_t j = 0; j < n / 2; ++j) rt::fwht_butterfly(got.data(), h, j);
        for (float& v : got) v *= sc;
        CHECK(first_diff(got, want) < 0, "first differing element %lld", (long long)first_diff(got, want));
    }
    // KV quantizer in parts (block min/max → params → one code per thread) vs kv_quant_row.
    for (int bits : {8, 4}) {
        for (float clip : {1.0f, 0.9f}) {
            for (int kind = 0; kind < 5; ++kind) {
                const int64_t n = 64;
                g_context = "kv_quant bits=" + std::to_string(bits) + " clip=" + std::to_string(clip) + " kind=" +
                            std::to_string(kind);
                auto x = randn(static_cast<size_t>(n), uint32_t(kind * 31 + bits));
                if (kind == 1) std::fill(x.begin(), x.end(), 0.0f);        // all zero
                if (kind == 2) x[5] = 300.0f;                              // outlier
                if (kind == 3) for (float& v : x) v = std::fabs(v);        // one-sided
                if (kind == 4) std::fill(x.begin(), x.end(), -2.5f);       // constant
                std::vector<uint8_t> want(static_cast<size_t>(n)), got(static_cast<size_t>(n), 0);
                float s = 0, z = 0;
                CHECK(kv_quant_row(x.data(), n, bits, clip, want.data(), &s, &z), "kv_quant_row failed");
                float mn = 0.0f, mx = 0.0f;
                for (int64_t i = n - 1; i >= 0; --i) {  // any order
                    mn = std::fmin(mn, x[size_t(i)]);
                    mx = std::fmax(mx, x[size_t(i)]);
                }
                const rt::KvQParams p = rt::kv_quant_params(mn, mx, bits, clip);
                CHECK(same_bits(p.s, s) && same_bits(p.z, z), "params (%g, %g) vs (%g, %g)", p.s, p.z, s, z);
                const int64_t rb = bits == 4 ? n / 2 : n;
                for (int64_t j = 0; j < rb; ++j)
                    got[size_t(j)] = bits == 8 ? rt::kv_quant_code(x[size_t(j)], p, 8)
                                               : uint8_t(rt::kv_quant_code(x[size_t(2 * j)], p, 4) |
                                                         (rt::kv_quant_code(x[size_t(2 * j + 1)], p, 4) << 4));
                CHECK(std::memcmp(got.data(), want.data(), size_t(rb)) == 0, "codes differ");
                std::vector<float> deq(static_cast<size_t>(n));
                kv_dequant_row(want.data(), n, bits, s, z, deq.data());
                bool same = true;
                for (int64_t i = 0; i < n; ++i) same = same && same_bits(rt::kv_dequant(want.data(), i, bits, s, z), deq[size_t(i)]);
                CHECK(same, "dequantized values differ");
            }
        }
    }
    // Sliding-window start, as llama.cpp's runtime computes it.
    g_context = "attn_window_start";
    for (int64_t pos : {0, 3, 100})
        for (int64_t w : {0, 1, 4, 200})
            CHECK(rt::attn_window_start(pos, w) == (w > 0 ? std::max<int64_t>(0, pos - w + 1) : 0), "pos %lld w %lld",
                  (long long)pos, (long long)w);
    // Tiled / split online softmax vs the plain softmax of the CPU runtime.
    for (int64_t n : {1, 5, 33, 100, 300}) {
        for (int64_t win : {0, 7}) {
            const int64_t hd = 16, start = rt::attn_window_start(n - 1, win);
            g_context = "attention n=" + std::to_string(n) + " window=" + std::to_string(win);
            auto q = randn(static_cast<size_t>(hd), 1), K = randn(static_cast<size_t>(n * hd), 2, 2.0f), V = randn(static_cast<size_t>(n * hd), 3);
            std::vector<float> sc(static_cast<size_t>(n - start));
            for (int64_t p = start; p < n; ++p) {
                float a = 0.0f;
                for (int64_t d = 0; d < hd; ++d) a += q[size_t(d)] * K[size_t(p * hd + d)];
                sc[size_t(p - start)] = a * (1.0f / std::sqrt(float(hd)));
            }
            softmax(sc.data(), n - start);
            std::vector<float> want(static_cast<size_t>(hd), 0.0f);
            for (int64_t p = start; p < n; ++p)
                for (int64_t d = 0; d < hd; ++d) want[size_t(d)] += sc[size_t(p - start)] * V[size_t(p * hd + d)];
            for (int64_t chunk : {n, int64_t(64), int64_t(16)}) {
                auto got = attn_emulate(q.data(), K.data(), V.data(), n, start, hd, 32, chunk);
                double err = 0;
                for (int64_t d = 0; d < hd; ++d) err = std::max(err, double(std::fabs(got[size_t(d)] - want[size_t(d)])));
                CHECK(err < 1e-5, "chunk %lld: max err %g", (long long)chunk, err);
            }
        }
    }
    g_context = "swiglu";
    for (float g : {-30.0f, -1.0f, 0.0f, 0.5f, 12.0f})
        CHECK(std::fabs(rt::swiglu(g, 1.5f) - silu(g) * 1.5f) <= 1e-6f * std::fabs(silu(g) * 1.5f) + 1e-30f, "g %g", g);
}

// ---- CUDA linear layer arithmetic (gemm_hd.h), run on the CPU -----------------------------------
//
// The device kernels (cuda/gemm*.cu) are built from these helpers; no GPU is needed to check them.

void test_gemm_hd_decode() {
    g_context = "gemm_hd decode";
    // Tables as written in gemm.h / formats.h (int4 two's complement, 2·E2M1, OliVe outliers).
    const int s4[16] = {0, 1, 2, 3, 4, 5, 6, 7, -8, -7, -6, -5, -4, -3, -2, -1};
    const int e2m1x2[16] = {0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12};
    const int outlier[16] = {0, 12, 16, 24, 32, 48, 64, 96, 0, -12, -16, -24, -32, -48, -64, -96};
    for (uint32_t nib = 0; nib < 16; ++nib) {
        CHECK(gemm_s4(nib) == s4[nib], "s4(%u) = %d", nib, gemm_s4(nib));
        CHECK(gemm_e2m1x2(nib) == e2m1x2[nib], "e2m1x2(%u) = %d", nib, gemm_e2m1x2(nib));
        CHECK(float(gemm_e2m1x2(nib)) == 2.0f * elem_value(nib, spec_e2m1()) || nib == 8, "e2m1 vs elem_value %u", nib);
        CHECK(gemm_ovp_outlier(nib) == outlier[nib], "ovp outlier(%u) = %d", nib, gemm_ovp_outlier(nib));
    }
    for (uint32_t byte = 0; byte < 256; ++byte) {
        const uint32_t a = byte & 15, b = byte >> 4;
        const int wa = a == 8 ? 0 : b == 8 ? outlier[a] : (a > 8 ? int(a) - 16 : int(a));
        const int wb = b == 8 ? 0 : a == 8 ? outlier[b] : (b > 8 ? int(b) - 16 : int(b));
        int ga, gb;
        gemm_ovp_pair(byte, ga, gb);
        CHECK(ga == wa && gb == wb, "ovp pair 0x%02x: (%d, %d) want (%d, %d)", byte, ga, gb, wa, wb);
    }
    // int4x4 → int8x4 for every 16-bit input
    int bad = 0;
    for (uint32_t v = 0; v < 65536; ++v) {
        const uint32_t got = gemm_s4x4_to_s8x4(v);
        for (int i = 0; i < 4; ++i) bad += int(int8_t(got >> (8 * i))) != gemm_s4((v >> (4 * i)) & 15);
    }
    CHECK(bad == 0, "s4x4_to_s8x4: %d wrong bytes", bad);
    // packed words = elementwise decode, for every code kind; dp4a = the plain dot
    const auto bytes = randint(64, 0, 255, 31);
    std::vector<uint8_t> row(bytes.begin(), bytes.end());
    for (WCode kind : {WCode::S8, WCode::S4, WCode::E2M1, WCode::OVP}) {
        const int64_t K = kind == WCode::S8 ? 64 : 128;
        for (int64_t k = 0; k < K; k += 4) {
            const uint32_t w = gemm_wcode_s8x4(kind, row.data(), k);
            for (int i = 0; i < 4; ++i)
                CHECK(int(int8_t(w >> (8 * i))) == gemm_wcode_at(kind, row.data(), k + i), "kind %d k %lld", int(kind),
                      (long long)(k + i));
        }
    }
    for (WCode kind : {WCode::S8, WCode::S4, WCode::E2M1, WCode::OVP}) {  // one 16-byte unit
        const int E = kind == WCode::S8 ? 16 : 32;
        const auto qv = randint(size_t(E), -127, 127, 32 + int(kind));
        std::vector<int8_t> qa(qv.begin(), qv.end());
        uint32_t wu[4], qu[8];
        std::memcpy(wu, row.data() + 16, 16);
        std::memcpy(qu, qa.data(), size_t(E));
        int32_t want = 5;
        for (int e = 0; e < E; ++e) want += qa[size_t(e)] * gemm_wcode_at(kind, row.data() + 16, e);
        CHECK(gemm_unit_dot(kind, wu, qu, 5) == want, "unit dot kind %d", int(kind));
    }
    CHECK(gemm_dp4a(gemm_pack_s8x4(-128, 127, 3, -4), gemm_pack_s8x4(-128, -128, 5, 7), 10) ==
              10 + 16384 - 16256 + 15 - 28, "dp4a");
    {  // weight-only GEMV unit decode = gemm_wf_code element by element
        uint32_t wu[4];
        std::memcpy(wu, row.data() + 32, 16);
        float c4[32], c8[16];
        gemm_wf_unit<4>(wu, 5, c4);
        gemm_wf_unit<8>(wu, 0, c8);
        int wrong = 0;
        for (int e = 0; e < 32; ++e) wrong += c4[e] != float(gemm_wf_code(4, row.data() + 32, e, 5));
        for (int e = 0; e < 16; ++e) wrong += c8[e] != float(gemm_wf_code(8, row.data() + 32, e, 0));
        CHECK(wrong == 0, "wf unit decode: %d wrong", wrong);
    }
    // weight-only codes: int4 unsigned nibble minus zero point, int8 signed
    const uint8_t wrow[2] = {0x3C, 0xF0};
    CHECK(gemm_wf_code(4, wrow, 0, 8) == 4 && gemm_wf_code(4, wrow, 1, 8) == -5 && gemm_wf_code(4, wrow, 3, 2) == 13,
          "wf int4");
    CHECK(gemm_wf_code(8, wrow, 1, 0) == -16, "wf int8");
}

void test_gemm_hd_quant() {
    g_context = "gemm_hd activation quantization";
    // gemm_act_quant against an independent float64 round-half-even of x / s
    auto rne = [](double v) {
        const double f = std::floor(v), r = v - f;
        return r > 0.5 || (r == 0.5 && std::fmod(f, 2.0) != 0.0) ? f + 1 : f;
    };
    const auto x = randn(4096, 41, 3.0f);
    for (int qmax : {127, 7}) {
        float amax = 0.0f;
        for (float v : x) amax = std::max(amax, std::fabs(v));
        const float s = gemm_act_scale(amax, 0.9f, qmax);
        CHECK(s == (0.9f * amax) / float(qmax), "scale");
        int bad = 0;
        for (float v : x) {
            const double q = std::min<double>(qmax, std::max<double>(-qmax, rne(double(v / s))));
            bad += gemm_act_quant(v, s, qmax) != int8_t(q);
        }
        CHECK(bad == 0, "qmax %d: %d values differ", qmax, bad);
        // ties go to even
        CHECK(gemm_act_quant(2.5f, 1.0f, qmax) == 2 && gemm_act_quant(-3.5f, 1.0f, qmax) == -4, "ties");
    }
    CHECK(gemm_act_scale(0.0f, 1.0f, 127) == 1.0f, "all-zero row scale");
    // MXFP4 block: the shared helpers equal quantize_rows_mxfp4 (which calls them) and decode
    // back within the E2M1 grid: |q·sa − x| <= half a quantum or saturated
    std::vector<int8_t> q(x.size());
    std::vector<float> sa(x.size() / 32);
    quantize_rows_mxfp4(x.data(), 1, int64_t(x.size()), q.data(), sa.data());
    int bad = 0;
    for (size_t b = 0; b < sa.size(); ++b) {
        float amax = 0.0f;
        for (int i = 0; i < 32; ++i) amax = std::max(amax, std::fabs(x[b * 32 + i]));
        const int shared = gemm_mx4_shared(amax);
        bad += !same_bits(gemm_mx4_scale(shared), sa[b]);
        for (int i = 0; i < 32; ++i) {
            bad += gemm_mx4_elem(x[b * 32 + i], shared) != q[b * 32 + i];
            const double err = std::fabs(double(q[b * 32 + i]) * sa[b] - x[b * 32 + i]);
            bad += !(err <= 2.0 * sa[b] + 1e-12 || std::abs(q[b * 32 + i]) == 12);  // quantum <= 4·sa at the top
        }
    }
    CHECK(bad == 0, "mxfp4 block helpers: %d mismatches", bad);
}

// PTX ISA fragment tables, transcribed as the documentation states them (row / col per element
// index i of a lane with groupID g and threadID_in_group t) — independent of gemm_hd.h's formulas.
void doc_k16_a(int lane, int i, int& r, int& c) {
    const int g = lane / 4, t = lane % 4;
    r = (i == 0 || i == 1 || i == 4 || i == 5) ? g : g + 8;
    c = i < 4 ? t * 2 + (i & 1) : t * 2 + (i & 1) + 8;
}
void doc_k16_b(int lane, int i, int& k, int& n) {
    const int g = lane / 4, t = lane % 4;
    k = i < 2 ? t * 2 + (i & 1) : t * 2 + (i & 1) + 8;
    n = g;
}
void doc_k32_a(int lane, int i, int& r, int& c) {
    const int g = lane / 4, t = lane % 4;
    r = (i < 4 || (i >= 8 && i < 12)) ? g : g + 8;
    c = i < 8 ? t * 4 + (i & 3) : t * 4 + (i & 3) + 16;
}
void doc_k32_b(int lane, int i, int& k, int& n) {
    const int g = lane / 4, t = lane % 4;
    k = i < 4 ? t * 4 + (i & 3) : t * 4 + (i & 3) + 16;
    n = g;
}
void doc_k64_a(int lane, int i, int& r, int& c) {
    const int g = lane / 4, t = lane % 4;
    r = (i < 8 || (i >= 16 && i < 24)) ? g : g + 8;
    c = i < 16 ? t * 8 + (i & 7) : t * 8 + (i & 7) + 32;
}
void doc_k64_b(int lane, int i, int& k, int& n) {
    const int g = lane / 4, t = lane % 4;
    k = i < 8 ? t * 8 + (i & 7) : t * 8 + (i & 7) + 32;
    n = g;
}
void doc_c(int lane, int i, int& r, int& c) {
    const int g = lane / 4, t = lane % 4;
    r = i < 2 ? g : g + 8;
    c = t * 2 + (i & 1);
}

// Emulated warp mma D = A·B + C over the documented layouts; A/B element e of lane l is
// get_a(l, e) / get_b(l, e) (already decoded to integers or floats).
template <typename T, typename GA, typename GB>
void emulate_mma(int kdim, void (*doc_a)(int, int, int&, int&), void (*doc_b)(int, int, int&, int&), int na, int nb,
                 GA get_a, GB get_b, T D[32][4]) {
    std::vector<T> A(size_t(16 * kdim)), B(size_t(kdim * 8));
    for (int l = 0; l < 32; ++l) {
        for (int i = 0; i < na; ++i) {
            int r, c;
            doc_a(l, i, r, c);
            A[size_t(r * kdim + c)] = get_a(l, i);
        }
        for (int i = 0; i < nb; ++i) {
            int k, n;
            doc_b(l, i, k, n);
            B[size_t(k * 8 + n)] = get_b(l, i);
        }
    }
    for (int l = 0; l < 32; ++l)
        for (int i = 0; i < 4; ++i) {
            int r, c;
            doc_c(l, i, r, c);
            T acc = 0;
            for (int k = 0; k < kdim; ++k) acc += A[size_t(r * kdim + k)] * B[size_t(k * 8 + c)];
            D[l][i] = acc;
        }
}

void test_gemm_hd_fragments() {
    g_context = "mma fragment layouts";
    int bad = 0;
    for (int l = 0; l < 32; ++l) {
        for (int i = 0; i < 8; ++i) {
            int r0, c0, r1, c1;
            mma_k16_a_rc(l, i, r0, c0);
            doc_k16_a(l, i, r1, c1);
            bad += r0 != r1 || c0 != c1;
        }
        for (int i = 0; i < 4; ++i) {
            int r0, c0, r1, c1;
            mma_k16_b_kn(l, i, r0, c0);
            doc_k16_b(l, i, r1, c1);
            bad += r0 != r1 || c0 != c1;
            mma_c_rc(l, i, r0, c0);
            doc_c(l, i, r1, c1);
            bad += r0 != r1 || c0 != c1;
        }
        for (int i = 0; i < 16; ++i) {
            int r0, c0, r1, c1;
            mma_k32_a_rc(l, i, r0, c0);
            doc_k32_a(l, i, r1, c1);
            bad += r0 != r1 || c0 != c1;
            mma_k64_b_kn(l, i, r0, c0);
            doc_k64_b(l, i, r1, c1);
            bad += r0 != r1 || c0 != c1;
        }
        for (int i = 0; i < 8; ++i) {
            int r0, c0, r1, c1;
            mma_k32_b_kn(l, i, r0, c0);
            doc_k32_b(l, i, r1, c1);
            bad += r0 != r1 || c0 != c1;
        }
        for (int i = 0; i < 32; ++i) {
            int r0, c0, r1, c1;
            mma_k64_a_rc(l, i, r0, c0);
            doc_k64_a(l, i, r1, c1);
            bad += r0 != r1 || c0 != c1;
        }
    }
    CHECK(bad == 0, "%d fragment positions differ from the PTX tables", bad);

    // Tile emulation: the kernels' fragment loaders (frag_*), a warp mma over the documented
    // layouts, against a plain product of the same tile. Activation rows past `rows` and weight
    // rows past N must read as zeros.
    const int64_t rows = 13, N = 6, ldq = 144;
    const auto qv = randint(size_t(16 * ldq), -127, 127, 51);
    std::vector<int8_t> q(qv.begin(), qv.end());
    const auto wv = randint(size_t(8 * 80), 0, 255, 52);
    std::vector<uint8_t> w(wv.begin(), wv.end());
    const int64_t ldw = 80;
    for (WCode kind : {WCode::S8, WCode::S4, WCode::E2M1, WCode::OVP}) {
        g_context = "tile emulation s8 mma, weight kind " + std::to_string(int(kind));
        const int64_t k0 = kind == WCode::S8 ? 32 : 96;
        uint32_t a[32][4], b[32][2];
        for (int l = 0; l < 32; ++l) {
            frag_a_s8(q.data(), ldq, 0, rows, k0, l, a[l]);
            frag_b_s8(kind, w.data(), ldw, 0, N, k0, l, b[l]);
        }
        int32_t D[32][4];
        emulate_mma<int32_t>(32, doc_k32_a, doc_k32_b, 16, 8,
                             [&](int l, int i) { return int32_t(int8_t(a[l][i / 4] >> (8 * (i % 4)))); },
                             [&](int l, int i) { return int32_t(int8_t(b[l][i / 4] >> (8 * (i % 4)))); }, D);
        int wrong = 0;
        for (int l = 0; l < 32; ++l)
            for (int i = 0; i < 4; ++i) {
                int r, c;
                mma_c_rc(l, i, r, c);
                int32_t want = 0;
                if (r < rows && c < N)
                    for (int64_t k = 0; k < 32; ++k)
                        want += int32_t(q[size_t(r * ldq + k0 + k)]) * gemm_wcode_at(kind, w.data() + c * ldw, k0 + k);
                wrong += D[l][i] != want;
            }
        CHECK(wrong == 0, "%d of 128 outputs differ", wrong);
    }
    {
        g_context = "tile emulation s4 mma (W4A4, sm80/sm89)";
        const auto q4v = randint(size_t(16 * ldq), -7, 7, 53);
        std::vector<int8_t> q4(q4v.begin(), q4v.end());
        const int64_t k0 = 64;
        uint32_t a[32][4], b[32][2];
        for (int l = 0; l < 32; ++l) {
            frag_a_s4(q4.data(), ldq, 0, rows, k0, l, a[l]);
            frag_b_s4(w.data(), ldw, 0, N, k0, l, b[l]);
        }
        auto nib = [](uint32_t reg, int e) { return int32_t(gemm_s4((reg >> (4 * e)) & 15)); };
        int32_t D[32][4];
        emulate_mma<int32_t>(64, doc_k64_a, doc_k64_b, 32, 16, [&](int l, int i) { return nib(a[l][i / 8], i % 8); },
                             [&](int l, int i) { return nib(b[l][i / 8], i % 8); }, D);
        int wrong = 0;
        for (int l = 0; l < 32; ++l)
            for (int i = 0; i < 4; ++i) {
                int r, c;
                mma_c_rc(l, i, r, c);
                int32_t want = 0;
                if (r < rows && c < N)
                    for (int64_t k = 0; k < 64; ++k)
                        want += int32_t(q4[size_t(r * ldq + k0 + k)]) * gemm_wcode_at(WCode::S4, w.data() + c * ldw, k0 + k);
                wrong += D[l][i] != want;
            }
        CHECK(wrong == 0, "%d of 128 outputs differ", wrong);
    }
    for (int variant = 0; variant < 4; ++variant) {  // f16 float weights; bf16 / f16 weight-only int4 / int8
        const bool bf16 = variant == 1;
        g_context = "tile emulation f16/bf16 mma, variant " + std::to_string(variant);
        const int64_t ldx = 40, k0 = 16, NG = 2, gi = 0;
        std::vector<uint16_t> xh(size_t(16 * ldx)), wh(size_t(8 * ldx));
        const auto xv = randint(xh.size(), -64, 64, 54), whv = randint(wh.size(), -64, 64, 55);
        for (size_t i = 0; i < xh.size(); ++i) xh[i] = bf16 ? f32_to_bf16(float(xv[i]) / 8) : f32_to_f16(float(xv[i]) / 8);
        for (size_t i = 0; i < wh.size(); ++i) wh[i] = f32_to_f16(float(whv[i]) / 4);
        const uint8_t zeros[16] = {8, 3, 8, 0, 15, 8, 2, 9, 8, 8, 8, 8, 8, 8, 8, 8};  // (N, NG)
        auto half = [&](uint32_t bits) { return bf16 ? bf16_to_f32(uint16_t(bits)) : f16_to_f32(uint16_t(bits)); };
        uint32_t a[32][4], b[32][2];
        for (int l = 0; l < 32; ++l) {
            frag_a_h(xh.data(), ldx, 0, rows, k0, l, a[l]);
            if (variant == 0)
                frag_b_h(wh.data(), ldx, 0, N, k0, l, b[l]);
            else
                frag_b_wf(variant == 3 ? 8 : 4, bf16, w.data(), ldw, zeros, NG, gi, 0, N, k0, l, b[l]);
        }
        float D[32][4];
        emulate_mma<float>(16, doc_k16_a, doc_k16_b, 8, 4, [&](int l, int i) { return half(a[l][i / 2] >> (16 * (i % 2))); },
                           [&](int l, int i) {
                               const uint32_t bits = b[l][i / 2] >> (16 * (i % 2));
                               return variant == 0 ? f16_to_f32(uint16_t(bits)) : half(bits);
                           }, D);
        int wrong = 0;
        for (int l = 0; l < 32; ++l)
            for (int i = 0; i < 4; ++i) {
                int r, c;
                mma_c_rc(l, i, r, c);
                double want = 0;  // small dyadic values: exact in f32
                if (r < rows && c < N)
                    for (int64_t k = 0; k < 16; ++k) {
                        const double xv2 = double(xv[size_t(r * ldx + k0 + k)]) / 8;
                        const double wv2 = variant == 0 ? double(whv[size_t(c * ldx + k0 + k)]) / 4
                                                        : double(gemm_wf_code(variant == 3 ? 8 : 4, w.data() + c * ldw, k0 + k,
                                                                              variant == 3 ? 0 : zeros[c * NG + gi]));
                        want += xv2 * wv2;
                    }
                wrong += double(D[l][i]) != want;
            }
        CHECK(wrong == 0, "%d of 128 outputs differ", wrong);
    }
}

// Shared-memory staging of the integer mma kernel: after every thread's fetch + put, the tiles
// hold the activations and the decoded weights (zeros past M / N), and the warp fragments read
// from them (warp tile wm, wn of 32 × 32) give the product of the global tile.
void test_gemm_hd_tiles() {
    const int64_t M = 70, N = 75, ldq = 128;
    const auto qv = randint(size_t(M * ldq), -127, 127, 71);
    std::vector<int8_t> q(qv.begin(), qv.end());
    const int64_t ldw = 128;
    const auto wv = randint(size_t(N * ldw), 0, 255, 72);
    std::vector<uint8_t> w(wv.begin(), wv.end());
    for (WCode kind : {WCode::S8, WCode::S4, WCode::E2M1, WCode::OVP}) {
        g_context = "gemm tiles, weight kind " + std::to_string(int(kind));
        const int64_t m0 = 64, n0 = 64, k0 = 96;  // the ragged corner block: 6 rows, 11 columns left
        std::vector<int8_t> sA(size_t(kTileBM * kTileLd), 99), sB(size_t(kTileBN * kTileLd), 99);
        for (int c = 0; c < kTileThreads; ++c) {
            uint32_t ra[4], rb[4];
            tile_a_fetch(q.data(), ldq, m0, M, k0, c, ra);
            tile_b_fetch(kind, w.data(), ldw, n0, N, k0, c, rb);
            tile_a_put(sA.data(), c, ra);
            tile_b_put(kind, sB.data(), c, rb);
        }
        int bad = 0;
        for (int r = 0; r < kTileBM; ++r)
            for (int k = 0; k < kTileBK; ++k) {
                const int want = m0 + r < M ? q[size_t((m0 + r) * ldq + k0 + k)] : 0;
                bad += sA[size_t(r * kTileLd + k)] != want;
            }
        for (int n = 0; n < kTileBN; ++n)
            for (int k = 0; k < kTileBK; ++k) {
                const int want = n0 + n < N ? gemm_wcode_at(kind, w.data() + (n0 + n) * ldw, k0 + k) : 0;
                bad += sB[size_t(n * kTileLd + k)] != want;
            }
        CHECK(bad == 0, "%d staged bytes differ", bad);
        // fragments of warp (wm, wn) = (1, 0), m-tile 1, n-tile 3, from shared memory
        const int wm = 1, wn = 0, mt = 1, nt = 3;
        uint32_t a[32][4], b[32][2];
        for (int l = 0; l < 32; ++l) {
            frag_a_s8(sA.data(), kTileLd, wm * 32 + mt * 16, kTileBM, 0, l, a[l]);
            frag_b_s8(WCode::S8, reinterpret_cast<const uint8_t*>(sB.data()), kTileLd, wn * 32 + nt * 8, kTileBN, 0, l, b[l]);
        }
        int32_t D[32][4];
        emulate_mma<int32_t>(32, doc_k32_a, doc_k32_b, 16, 8,
                             [&](int l, int i) { return int32_t(int8_t(a[l][i / 4] >> (8 * (i % 4)))); },
                             [&](int l, int i) { return int32_t(int8_t(b[l][i / 4] >> (8 * (i % 4)))); }, D);
        int wrong = 0;
        for (int l = 0; l < 32; ++l)
            for (int i = 0; i < 4; ++i) {
                int r, c;
                mma_c_rc(l, i, r, c);
                const int64_t gr = m0 + wm * 32 + mt * 16 + r, gc = n0 + wn * 32 + nt * 8 + c;
                int32_t want = 0;
                if (gr < M && gc < N)
                    for (int64_t k = 0; k < 32; ++k)
                        want += int32_t(q[size_t(gr * ldq + k0 + k)]) * gemm_wcode_at(kind, w.data() + gc * ldw, k0 + k);
                wrong += D[l][i] != want;
            }
        CHECK(wrong == 0, "%d of 128 outputs differ", wrong);
    }
}

// The same for the 16-bit tiles of the f16 / bf16 kernel: float weights and weight-only codes.
void test_gemm_hd_tiles_h() {
    const int64_t M = 70, N = 75, K = 128, G = 64, NG = K / G;
    const auto xv = randint(size_t(M * K), -200, 200, 81);
    std::vector<uint16_t> x(xv.size());
    for (size_t i = 0; i < x.size(); ++i) x[i] = f32_to_f16(float(xv[i]) / 16);
    const int64_t ldw = 128;
    const auto wv = randint(size_t(N * ldw), 0, 255, 82);
    std::vector<uint8_t> w(wv.begin(), wv.end());
    const auto zv = randint(size_t(N * NG), 0, 15, 83);
    std::vector<uint8_t> zeros(zv.begin(), zv.end());
    for (int variant = 0; variant < 3; ++variant) {  // bf16 int4, f16 int8, float (x as weights)
        const bool bf16 = variant == 0;
        const int bits = variant == 0 ? 4 : 8;
        g_context = "gemm 16-bit tiles, variant " + std::to_string(variant);
        const int64_t m0 = 64, n0 = 64, k0 = 96;
        std::vector<uint16_t> sA(size_t(kTileBM * kTileLdH), 0x7777), sB(size_t(kTileBN * kTileLdH), 0x7777);
        for (int c = 0; c < 2 * kTileThreads; ++c) {
            uint32_t ra[4], rb[4];
            tile_h_fetch(x.data(), K, m0, M, k0, c, ra);
            tile_h_put(sA.data(), c, ra);
            if (variant == 2) {
                tile_h_fetch(x.data(), K, n0, M, k0, c, rb);  // a (70, K) float weight matrix
                tile_h_put(sB.data(), c, rb);
            } else {
                tile_wf_fetch(bits, w.data(), ldw, zeros.data(), NG, G, n0, N, k0, c, rb);
                tile_wf_put(bits, bf16, sB.data(), c, rb);
            }
        }
        int bad = 0;
        auto val = [&](uint16_t h) { return bf16 && variant != 2 ? bf16_to_f32(h) : f16_to_f32(h); };
        for (int r = 0; r < kTileBM; ++r)
            for (int k = 0; k < kTileBK; ++k)
                bad += sA[size_t(r * kTileLdH + k)] != (m0 + r < M ? x[size_t((m0 + r) * K + k0 + k)] : 0);
        for (int n = 0; n < kTileBN; ++n)
            for (int k = 0; k < kTileBK; ++k) {
                float want;
                if (variant == 2)
                    want = n0 + n < M ? f16_to_f32(x[size_t((n0 + n) * K + k0 + k)]) : 0.0f;
                else
                    want = n0 + n < N ? float(gemm_wf_code(bits, w.data() + (n0 + n) * ldw, k0 + k,
                                                           bits == 4 ? zeros[size_t((n0 + n) * NG + (k0 + k) / G)] : 0))
                                      : 0.0f;
                bad += val(sB[size_t(n * kTileLdH + k)]) != want;
            }
        CHECK(bad == 0, "%d staged values differ", bad);
    }
}

// The whole integer tc kernel (gemm_int_tc_kernel) emulated on the CPU: every block's k-steps
// staged with tile_*_fetch / put, each warp's fragments read from the tiles, the mma emulated over
// the documented layouts, groups folded with tc_int_fold and outputs placed with tc_tile_rc —
// equal to QuantLinear::forward bit for bit, for every weight kind, per-token and MX activations.
std::vector<float> emulate_int_tc(WCode kind, const std::vector<int8_t>& q, int64_t ldq, const std::vector<float>& sa,
                                  int64_t sa_groups, const std::vector<uint8_t>& w, int64_t ldw,
                                  const std::vector<float>& scales, const float* bias, int64_t M, int64_t N, int64_t K,
                                  int64_t G) {
    std::vector<float> out(size_t(M * N), -1.0f);
    const int64_t nk = K / kTileBK, kpg = G / kTileBK, NG = K / G;
    std::vector<int8_t> sA(size_t(kTileBM * kTileLd)), sB(size_t(kTileBN * kTileLd));
    for (int64_t m0 = 0; m0 < M; m0 += kTileBM)
        for (int64_t n0 = 0; n0 < N; n0 += kTileBN) {
            static int32_t acc[4][32][2][4][4];
            static float y[4][32][2][4][4];
            std::memset(acc, 0, sizeof(acc));
            std::memset(y, 0, sizeof(y));
            for (int64_t kt = 0; kt < nk; ++kt) {
                for (int c = 0; c < kTileThreads; ++c) {
                    uint32_t ra[4], rb[4];
                    tile_a_fetch(q.data(), ldq, m0, M, kt * kTileBK, c, ra);
                    tile_b_fetch(kind, w.data(), ldw, n0, N, kt * kTileBK, c, rb);
                    tile_a_put(sA.data(), c, ra);
                    tile_b_put(kind, sB.data(), c, rb);
                }
                for (int warp = 0; warp < 4; ++warp) {
                    const int wm = warp >> 1, wn = warp & 1;
                    uint32_t af[32][2][4], bf[32][4][2];
                    for (int l = 0; l < 32; ++l) {
                        for (int mt = 0; mt < 2; ++mt) frag_a_s8(sA.data(), kTileLd, wm * 32 + mt * 16, kTileBM, 0, l, af[l][mt]);
                        for (int nt = 0; nt < 4; ++nt)
                            frag_b_s8(WCode::S8, reinterpret_cast<const uint8_t*>(sB.data()), kTileLd, wn * 32 + nt * 8,
                                      kTileBN, 0, l, bf[l][nt]);
                    }
                    for (int mt = 0; mt < 2; ++mt)
                        for (int nt = 0; nt < 4; ++nt) {
                            int32_t D[32][4];
                            emulate_mma<int32_t>(
                                32, doc_k32_a, doc_k32_b, 16, 8,
                                [&](int l, int i) { return int32_t(int8_t(af[l][mt][i / 4] >> (8 * (i % 4)))); },
                                [&](int l, int i) { return int32_t(int8_t(bf[l][nt][i / 4] >> (8 * (i % 4)))); }, D);
                            for (int l = 0; l < 32; ++l)
                                for (int i = 0; i < 4; ++i) acc[warp][l][mt][nt][i] += D[l][i];
                        }
                    if ((kt + 1) % kpg == 0)
                        for (int l = 0; l < 32; ++l)
                            tc_int_fold(acc[warp][l], y[warp][l], sa.data(), sa_groups, scales.data(), NG, kt / kpg, M, N,
                                        m0 + wm * 32, n0 + wn * 32, l);
                }
            }
            for (int warp = 0; warp < 4; ++warp)
                for (int l = 0; l < 32; ++l)
                    for (int mt = 0; mt < 2; ++mt)
                        for (int nt = 0; nt < 4; ++nt)
                            for (int i = 0; i < 4; ++i) {
                                int64_t r, c;
                                tc_tile_rc(m0 + (warp >> 1) * 32, n0 + (warp & 1) * 32, l, mt, nt, i, r, c);
                                if (r < M && c < N) out[size_t(r * N + c)] = gemm_epi_bias(y[warp][l][mt][nt][i], bias, c);
                            }
        }
    return out;
}

// The f16 / bf16 tc kernel (gemm_h_tc_kernel) emulated the same way, for float weights (WB 16)
// and weight-only int4 (asymmetric) / int8 codes. Small dyadic inputs keep every tile sum exact,
// so the emulation must equal a plain loop doing the same per-group fma(s, acc, y) exactly.
void test_gemm_hd_h_tc() {
    const int64_t M = 70, N = 75, K = 192, G = 64, NG = K / G;
    const auto xv = randint(size_t(M * K), -64, 64, 91);
    const auto fw = randint(size_t(N * K), -64, 64, 92);
    const auto cv = randint(size_t(N * 192), 0, 255, 93);
    const auto zv = randint(size_t(N * NG), 0, 15, 94);
    const auto sv = randn(size_t(N * NG), 95, 0.1f);
    for (int variant = 0; variant < 4; ++variant) {  // float f16, float bf16, wf int4 bf16, wf int8 f16
        const bool bf16 = variant == 1 || variant == 2;
        const int WB = variant < 2 ? 16 : variant == 2 ? 4 : 8;
        g_context = "h tc kernel emulation, variant " + std::to_string(variant);
        auto to_h = [&](float v) { return bf16 ? f32_to_bf16(v) : f32_to_f16(v); };
        auto from_h = [&](uint32_t h) { return bf16 ? bf16_to_f32(uint16_t(h)) : f16_to_f32(uint16_t(h)); };
        std::vector<uint16_t> x(size_t(M * K)), wf(size_t(N * K));
        for (size_t i = 0; i < x.size(); ++i) x[i] = to_h(float(xv[i]) / 16);
        for (size_t i = 0; i < wf.size(); ++i) wf[i] = to_h(float(fw[i]) / 8);
        const int64_t ldw = WB == 16 ? K : 192;  // elements (float) or bytes (codes); K = 192 is 16-byte aligned
        std::vector<uint8_t> codes(cv.begin(), cv.end());
        std::vector<uint8_t> zeros(zv.begin(), zv.end());
        const int64_t kG = WB == 16 ? K : G, kNG = K / kG, nk = K / kTileBK, kpg = kG / kTileBK;
        std::vector<uint16_t> sA(size_t(kTileBM * kTileLdH)), sB(size_t(kTileBN * kTileLdH));
        std::vector<float> out(size_t(M * N), -1.0f);
        for (int64_t m0 = 0; m0 < M; m0 += kTileBM)
            for (int64_t n0 = 0; n0 < N; n0 += kTileBN) {
                static float acc[4][32][2][4][4], y[4][32][2][4][4];
                std::memset(acc, 0, sizeof(acc));
                std::memset(y, 0, sizeof(y));
                for (int64_t kt = 0; kt < nk; ++kt) {
                    for (int c = 0; c < 2 * kTileThreads; ++c) {
                        uint32_t ra[4], rb[4];
                        tile_h_fetch(x.data(), K, m0, M, kt * kTileBK, c, ra);
                        tile_h_put(sA.data(), c, ra);
                        if (WB == 16) {
                            tile_h_fetch(wf.data(), ldw, n0, N, kt * kTileBK, c, rb);
                            tile_h_put(sB.data(), c, rb);
                        } else {
                            tile_wf_fetch(WB, codes.data(), ldw, zeros.data(), kNG, kG, n0, N, kt * kTileBK, c, rb);
                            tile_wf_put(WB, bf16, sB.data(), c, rb);
                        }
                    }
                    for (int warp = 0; warp < 4; ++warp) {
                        const int wm = warp >> 1, wn = warp & 1;
                        for (int kk = 0; kk < kTileBK; kk += 16) {
                            uint32_t af[32][2][4], bfr[32][4][2];
                            for (int l = 0; l < 32; ++l) {
                                for (int mt = 0; mt < 2; ++mt)
                                    frag_a_h(sA.data(), kTileLdH, wm * 32 + mt * 16, kTileBM, kk, l, af[l][mt]);
                                for (int nt = 0; nt < 4; ++nt)
                                    frag_b_h(sB.data(), kTileLdH, wn * 32 + nt * 8, kTileBN, kk, l, bfr[l][nt]);
                            }
                            for (int mt = 0; mt < 2; ++mt)
                                for (int nt = 0; nt < 4; ++nt) {
                                    float D[32][4];
                                    emulate_mma<float>(16, doc_k16_a, doc_k16_b, 8, 4,
                                                       [&](int l, int i) { return from_h(af[l][mt][i / 2] >> (16 * (i % 2))); },
                                                       [&](int l, int i) { return from_h(bfr[l][nt][i / 2] >> (16 * (i % 2))); }, D);
                                    for (int l = 0; l < 32; ++l)
                                        for (int i = 0; i < 4; ++i)
                                            (WB == 16 ? y : acc)[warp][l][mt][nt][i] += D[l][i];
                                }
                        }
                        if (WB != 16 && (kt + 1) % kpg == 0)
                            for (int l = 0; l < 32; ++l)
                                tc_wf_fold(acc[warp][l], y[warp][l], sv.data(), kNG, kt / kpg, N, n0 + wn * 32, l);
                    }
                }
                for (int warp = 0; warp < 4; ++warp)
                    for (int l = 0; l < 32; ++l)
                        for (int mt = 0; mt < 2; ++mt)
                            for (int nt = 0; nt < 4; ++nt)
                                for (int i = 0; i < 4; ++i) {
                                    int64_t r, c;
                                    tc_tile_rc(m0 + (warp >> 1) * 32, n0 + (warp & 1) * 32, l, mt, nt, i, r, c);
                                    if (r < M && c < N) out[size_t(r * N + c)] = y[warp][l][mt][nt][i];
                                }
            }
        int bad = 0;
        for (int64_t m = 0; m < M; ++m)
            for (int64_t n = 0; n < N; ++n) {
                float want = 0.0f;
                for (int64_t g = 0; g < kNG; ++g) {
                    double a = 0.0;  // exact
                    for (int64_t k = g * kG; k < (g + 1) * kG; ++k) {
                        const double wvv = WB == 16 ? double(from_h(wf[size_t(n * K + k)]))
                                                    : double(gemm_wf_code(WB, codes.data() + n * ldw, k,
                                                                          WB == 4 ? zeros[size_t(n * kNG + g)] : 0));
                        a += double(from_h(x[size_t(m * K + k)])) * wvv;
                    }
                    want = WB == 16 ? float(a) : fmaf(sv[size_t(n * kNG + g)], float(a), want);
                }
                bad += !same_bits(out[size_t(m * N + n)], want);
            }
        CHECK(bad == 0, "%d of %lld outputs differ", bad, (long long)(M * N));
    }
}

// The integer GEMV kernel emulated: lanes' unit dots (gemm_unit_dot on 16-byte units), the
// group walk of gemv_group_walk with the warp sum of each group, folded in order.
std::vector<float> emulate_int_gemv(WCode kind, const std::vector<int8_t>& q, int64_t ldq, const std::vector<float>& sa,
                                    int64_t sa_groups, const std::vector<uint8_t>& w, int64_t ldw,
                                    const std::vector<float>& scales, const float* bias, int64_t M, int64_t N, int64_t K,
                                    int64_t G) {
    const int E = kind == WCode::S8 ? 16 : 32;
    const int64_t units = K / E, U = G / E, NG = K / G;
    std::vector<float> out(size_t(M * N));
    for (int64_t n = 0; n < N; ++n)
        for (int64_t m = 0; m < M; ++m) {
            float y = 0.0f;
            int32_t carry = 0;
            for (int64_t base = 0; base < units; base += 32) {
                int32_t p[32] = {};
                for (int lane = 0; lane < 32; ++lane) {
                    const int64_t u = base + lane;
                    if (u >= units) continue;
                    uint32_t wu[4], qu[8];
                    std::memcpy(wu, w.data() + n * ldw + u * 16, 16);
                    std::memcpy(qu, q.data() + m * ldq + u * E, size_t(E));
                    p[lane] = gemm_unit_dot(kind, wu, qu, 0);
                }
                gemv_group_walk(base, units, U, [&](int64_t g, bool ends) {
                    for (int lane = 0; lane < 32; ++lane)
                        if (base + lane < units && (base + lane) / U == g) carry += p[lane];
                    if (ends) {
                        y = gemm_epi_group(carry, sa[size_t(m * sa_groups + (sa_groups > 1 ? g : 0))],
                                           scales[size_t(n * NG + g)], y);
                        carry = 0;
                    }
                });
            }
            out[size_t(m * N + n)] = gemm_epi_bias(y, bias, n);
        }
    return out;
}

// The device image of cuda_linear_upload (cuda/gemm_layout.h) read the way the SIMT reference
// kernels read it gives QuantLinear::forward: bit for bit for integer activations, to float
// rounding (of the weights in the activation dtype) for float and weight-only layers.
void test_gemm_layout() {
    using cuda::DType;
    using cuda::LinearImage;
    using cuda::LinearKind;
    const int64_t N = 21, M = 3;
    struct Case { const char* name; int kind; int bits; int64_t K, G; bool asym; AQuant a; };  // kind 0 f32, 1 int, 2 mx, 3 ovp
    const Case cases[] = {{"f32 odd K", 0, 32, 77, 0, false, AQuant::None}, {"w8a16 odd K", 1, 8, 77, 77, false, AQuant::None},
                          {"w4a16 sym", 1, 4, 96, 32, false, AQuant::None}, {"w4a16 asym", 1, 4, 96, 16, true, AQuant::None},
                          {"w4a16 asym K=34", 1, 4, 34, 34, true, AQuant::None},
                          {"w4a8", 1, 4, 96, 32, false, AQuant::Int8}, {"w8a4", 1, 8, 96, 48, false, AQuant::Int4},
                          {"wmx4amx4", 2, 4, 96, 32, false, AQuant::Mxfp4}, {"wovp4a4", 3, 4, 96, 96, false, AQuant::Int4}};
    for (const Case& c : cases) {
        const int64_t K = c.K, NG = c.G ? K / c.G : 1;
        const auto x = randn(size_t(M * K), 101);
        const auto wf = randn(size_t(N * K), 102);
        const auto cv = randint(size_t(N * K), c.bits == 8 ? -127 : 0, c.bits == 8 ? 127 : 255, 103);
        std::vector<uint8_t> codes(cv.size());
        for (size_t i = 0; i < cv.size(); ++i) codes[i] = uint8_t(cv[i]);
        const auto sc = randn(size_t(N * NG), 104, 0.05f);
        const auto zi = randint(size_t(N * NG), 0, 15, 105);
        const std::vector<float> zf(zi.begin(), zi.end());
        const auto bias = randn(size_t(N), 106);
        QuantLinear ql;
        if (c.kind == 0) {
            ql = QuantLinear::from_f32(wf.data(), N, K);
        } else if (c.kind == 2) {
            const auto e = randint(size_t(N * K / 32), 118, 130, 107);
            std::vector<uint8_t> e8(e.begin(), e.end());
            ql = QuantLinear::from_mx4(codes.data(), e8.data(), N, K, c.a);
        } else if (c.kind == 3) {
            const auto s = randn(size_t(N), 108, 0.01f);
            ql = QuantLinear::from_ovp4(codes.data(), s.data(), N, K, c.a, 0.9f);
        } else {
            ql = QuantLinear::from_int(c.bits, codes.data(), sc.data(), c.asym ? zf.data() : nullptr, N, K, c.G, c.a, 0.9f);
        }
        ql.set_bias(bias.data());
        std::vector<float> want(size_t(M * N));
        ql.forward(x.data(), M, want.data());
        for (DType act : {DType::F32, DType::F16, DType::BF16}) {
            g_context = std::string("device image ") + c.name + " act " + std::to_string(int(act));
            const LinearImage img = cuda::linear_image(ql, act);
            CHECK(img.ldw % (img.kind == LinearKind::Float ? (act == DType::F32 ? 8 : 16) : 16) == 0, "row padding");
            CHECK(img.name == (c.kind == 0 ? std::string(act == DType::F32 ? "f32" : act == DType::F16 ? "f16" : "bf16")
                                           : ql.kernel()), "name %s", img.name.c_str());
            double worst = 0.0;
            int bad = 0;
            for (int64_t m = 0; m < M; ++m) {
                std::vector<int8_t> q(static_cast<size_t>(K));
                std::vector<float> sa(static_cast<size_t>(K / 32 + 1));
                if (img.kind == LinearKind::Int) {
                    const float* r = x.data() + m * K;
                    if (c.a == AQuant::Mxfp4) {
                        for (int64_t b = 0; b < K / 32; ++b) {
                            float amax = 0.0f;
                            for (int i = 0; i < 32; ++i) amax = std::max(amax, std::fabs(r[b * 32 + i]));
                            const int sh = gemm_mx4_shared(amax);
                            sa[size_t(b)] = gemm_mx4_scale(sh);
                            for (int i = 0; i < 32; ++i) q[size_t(b * 32 + i)] = gemm_mx4_elem(r[b * 32 + i], sh);
                        }
                    } else {
                        const int qmax = c.a == AQuant::Int8 ? 127 : 7;
                        float amax = 0.0f;
                        for (int64_t k = 0; k < K; ++k) amax = std::max(amax, std::fabs(r[k]));
                        sa[0] = gemm_act_scale(amax, ql.a_clip, qmax);
                        for (int64_t k = 0; k < K; ++k) q[size_t(k)] = gemm_act_quant(r[k], sa[0], qmax);
                    }
                }
                for (int64_t n = 0; n < N; ++n) {
                    const uint8_t* row = img.w.data() + n * img.ldw * (img.kind == LinearKind::Float ? (act == DType::F32 ? 4 : 2) : 1);
                    float y = 0.0f;
                    double yd = 0.0, size = 0.0;
                    for (int64_t g = 0; g < img.NG; ++g) {
                        if (img.kind == LinearKind::Int) {
                            int32_t acc = 0;
                            for (int64_t k = g * img.G; k < (g + 1) * img.G; ++k) acc += q[size_t(k)] * gemm_wcode_at(img.wcode, row, k);
                            y = gemm_epi_group(acc, sa[size_t(c.a == AQuant::Mxfp4 ? g : 0)], img.scales[size_t(n * img.NG + g)], y);
                        } else {
                            for (int64_t k = g * img.G; k < (g + 1) * img.G; ++k) {
                                double wv;
                                if (img.kind == LinearKind::Float) {  // element size 4 (f32) or 2: read only that
                                    if (act == DType::F32) {
                                        float f;
                                        std::memcpy(&f, row + k * 4, 4);
                                        wv = f;
                                    } else {
                                        uint16_t h;
                                        std::memcpy(&h, row + k * 2, 2);
                                        wv = act == DType::F16 ? f16_to_f32(h) : bf16_to_f32(h);
                                    }
                                } else {
                                    const int z = img.wbits == 4 ? img.zeros[size_t(n * img.NG + g)] : 0;
                                    wv = double(gemm_wf_code(img.wbits, row, k, z)) * img.scales[size_t(n * img.NG + g)];
                                }
                                yd += wv * x[size_t(m * K + k)];
                                size += std::fabs(wv * x[size_t(m * K + k)]);
                            }
                        }
                    }
                    if (img.kind == LinearKind::Int) {
                        bad += !same_bits(gemm_epi_bias(y, bias.data(), n), want[size_t(m * N + n)]);
                    } else {
                        worst = std::max(worst, std::fabs(yd + bias[size_t(n)] - want[size_t(m * N + n)]) / std::max(size, 1e-30));
                    }
                }
            }
            const double tol = img.kind == LinearKind::Float && act != DType::F32 ? (act == DType::F16 ? 1e-3 : 8e-3) : 1e-5;
            CHECK(bad == 0 && worst <= tol, "%d integer outputs differ, worst relative error %g", bad, worst);
        }
    }
    // Activation formats the device kernels do not have yet are refused at upload, not run wrong.
    g_context = "device image refuses CPU-only activations";
    for (AQuant a : {AQuant::Mxfp8, AQuant::Ovp4}) {
        const auto codes = randint(size_t(16 * 32), 0, 255, 109);
        std::vector<uint8_t> c8(codes.begin(), codes.end());
        const auto sc = randn(size_t(16 * 2), 110, 0.05f);  // N = 16 rows × K/G = 2 groups
        const QuantLinear ql = QuantLinear::from_int(4, c8.data(), sc.data(), nullptr, 16, 64, 32, a, 1.0f);
        bool threw = false;
        try {
            (void)cuda::linear_image(ql, cuda::DType::F16);
        } catch (const std::invalid_argument&) {
            threw = true;
        }
        CHECK(threw, "linear_image accepted activation format %d", int(a));
    }
}

// The integer device pipeline emulated on the CPU with the helpers the kernels run (canonical
// codes from export_int, per-token / MX quantization, per-group exact sums folded by
// gemm_epi_group, bias) equals QuantLinear::forward bit for bit, for every integer pair.
int64_t ldw_pad(int64_t rowbytes) { return (rowbytes + 15) / 16 * 16; }

void test_gemm_hd_pipeline() {
    struct Case { const char* name; int bits; int kind; AQuant a; int64_t G; int64_t K; };  // kind 0 int, 1 mxfp4, 2 ovp4
    // K = 192: one GEMV iteration; K = 1536: groups of 3 and 48 / 96 units straddle the iterations' 32 lanes
    const Case cases[] = {{"w8a8", 8, 0, AQuant::Int8, 64, 192},  {"w4a8", 4, 0, AQuant::Int8, 32, 192},
                          {"w4a4", 4, 0, AQuant::Int4, 192, 192}, {"w8a4", 8, 0, AQuant::Int4, 16, 192},
                          {"w4amx4", 4, 0, AQuant::Mxfp4, 32, 192}, {"w8amx4", 8, 0, AQuant::Mxfp4, 32, 192},
                          {"wmx4amx4", 4, 1, AQuant::Mxfp4, 32, 192}, {"wmx4a8", 4, 1, AQuant::Int8, 32, 192},
                          {"wovp4a8", 4, 2, AQuant::Int8, 192, 192},   {"wovp4a4", 4, 2, AQuant::Int4, 192, 192},
                          {"w4a8 g96", 4, 0, AQuant::Int8, 96, 1536}, {"w8a8 g48", 8, 0, AQuant::Int8, 48, 1536},
                          {"w8a8 per-channel", 8, 0, AQuant::Int8, 1536, 1536},
                          {"wovp4a8 K1536", 4, 2, AQuant::Int8, 1536, 1536}};
    for (const Case& c : cases) {
        const int64_t N = 75, K = c.K, M = 70;  // two block rows and columns of the tc kernel, ragged
        auto x = randn(size_t(M * K), 61);
        x[7] *= 30.0f;
        const auto bias = randn(size_t(N), 62);
        g_context = std::string("device pipeline emulation ") + c.name;
        const int64_t rb = c.bits == 4 ? K / 2 : K;
        const auto cv = randint(size_t(N * rb), c.bits == 8 ? -127 : 0, c.bits == 8 ? 127 : 255, 63);
        std::vector<uint8_t> codes(cv.size());
        for (size_t i = 0; i < cv.size(); ++i) codes[i] = uint8_t(cv[i]);
        const float clip = c.a == AQuant::Int4 ? 0.9f : 1.0f;
        QuantLinear ql;
        if (c.kind == 1) {
            const auto sc = randint(size_t(N * K / 32), 115, 130, 64);
            std::vector<uint8_t> sc8(sc.begin(), sc.end());
            ql = QuantLinear::from_mx4(codes.data(), sc8.data(), N, K, c.a);
        } else if (c.kind == 2) {
            const auto s = randn(size_t(N), 65, 0.01f);
            ql = QuantLinear::from_ovp4(codes.data(), s.data(), N, K, c.a, clip);
        } else {
            const auto s = randn(size_t(N * (K / c.G)), 66, 0.01f);
            ql = QuantLinear::from_int(c.bits, codes.data(), s.data(), nullptr, N, K, c.G, c.a, clip);
        }
        ql.set_bias(bias.data());
        std::vector<float> want(size_t(M * N));
        ql.forward(x.data(), M, want.data());

        std::vector<uint8_t> ec;
        std::vector<float> es, ez;
        ql.export_int(ec, es, ez);
        const WCode kind = c.kind == 1 ? WCode::E2M1 : c.kind == 2 ? WCode::OVP : c.bits == 4 ? WCode::S4 : WCode::S8;
        const int64_t G = ql.group, NG = K / G;
        std::vector<int8_t> q(size_t(M * K));
        const bool mx = c.a == AQuant::Mxfp4;
        std::vector<float> sa(size_t(M * (mx ? K / 32 : 1)));
        for (int64_t m = 0; m < M; ++m) {
            const float* r = x.data() + m * K;
            if (mx) {
                for (int64_t b = 0; b < K / 32; ++b) {
                    float amax = 0.0f;
                    for (int i = 0; i < 32; ++i) amax = std::max(amax, std::fabs(r[b * 32 + i]));
                    const int sh = gemm_mx4_shared(amax);
                    sa[size_t(m * (K / 32) + b)] = gemm_mx4_scale(sh);
                    for (int i = 0; i < 32; ++i) q[size_t(m * K + b * 32 + i)] = gemm_mx4_elem(r[b * 32 + i], sh);
                }
            } else {
                const int qmax = c.a == AQuant::Int8 ? 127 : 7;
                float amax = 0.0f;
                for (int64_t k = 0; k < K; ++k) amax = std::max(amax, std::fabs(r[k]));
                sa[size_t(m)] = gemm_act_scale(amax, clip, qmax);
                for (int64_t k = 0; k < K; ++k) q[size_t(m * K + k)] = gemm_act_quant(r[k], sa[size_t(m)], qmax);
            }
        }
        std::vector<float> got(size_t(M * N));
        for (int64_t m = 0; m < M; ++m)
            for (int64_t n = 0; n < N; ++n) {
                float y = 0.0f;
                for (int64_t g = 0; g < NG; ++g) {
                    int32_t acc = 0;
                    for (int64_t k = g * G; k < (g + 1) * G; k += 4)  // the dp4a step of the kernels
                        acc = gemm_dp4a(gemm_ld_u32(q.data() + m * K + k), gemm_wcode_s8x4(kind, ec.data() + n * rb, k), acc);
                    y = gemm_epi_group(acc, sa[size_t(m * (mx ? K / 32 : 1) + (mx ? g : 0))], es[size_t(n * NG + g)], y);
                }
                got[size_t(m * N + n)] = gemm_epi_bias(y, bias.data(), n);
            }
        const int64_t i = first_diff(got, want);
        CHECK(i < 0, "differs from QuantLinear::forward at %lld: %g vs %g", (long long)i, i < 0 ? 0.0 : got[size_t(i)],
              i < 0 ? 0.0 : want[size_t(i)]);
        if (G % kTileBK == 0) {  // the shared-memory tensor-core kernel, block by block
            std::vector<uint8_t> wpad(size_t(N * ldw_pad(rb)), 0);
            for (int64_t n = 0; n < N; ++n) std::memcpy(wpad.data() + n * ldw_pad(rb), ec.data() + n * rb, size_t(rb));
            const auto tc = emulate_int_tc(kind, q, K, sa, mx ? K / 32 : 1, wpad, ldw_pad(rb), es, bias.data(), M, N, K, G);
            const int64_t j = first_diff(tc, want);
            CHECK(j < 0, "tc kernel emulation differs from QuantLinear::forward at %lld", (long long)j);
        }
        if (G % (kind == WCode::S8 ? 16 : 32) == 0) {  // the GEMV kernel
            std::vector<uint8_t> wpad(size_t(N * ldw_pad(rb)), 0);
            for (int64_t n = 0; n < N; ++n) std::memcpy(wpad.data() + n * ldw_pad(rb), ec.data() + n * rb, size_t(rb));
            const auto gv = emulate_int_gemv(kind, q, K, sa, mx ? K / 32 : 1, wpad, ldw_pad(rb), es, bias.data(), M, N, K, G);
            const int64_t j = first_diff(gv, want);
            CHECK(j < 0, "GEMV kernel emulation differs from QuantLinear::forward at %lld", (long long)j);
        }
    }
}

}  // namespace

int main() {
    std::printf("quellm kernel tests: ISA levels");
    for (Isa isa : available_isas()) std::printf(" %s", isa_name(isa));
    std::printf(" (hardware %s)\n", isa_name(hardware_isa()));
    const struct {
        const char* name;
        void (*fn)();
    } tests[] = {{"fwht", test_fwht},           {"int4_packing", test_int4_packing}, {"gemm_int", test_gemm_int},
                 {"gemm_mx8", test_gemm_mx8},
                 {"quantize_rows", test_quantize_rows}, {"matmul_f32", test_matmul},  {"quant_linear", test_quant_linear},
                 {"gpu_runtime_ops", test_gpu_runtime_ops},
                 {"gemm_hd_decode", test_gemm_hd_decode}, {"gemm_hd_quant", test_gemm_hd_quant},
                 {"gemm_hd_frags", test_gemm_hd_fragments}, {"gemm_hd_tiles", test_gemm_hd_tiles},
                 {"gemm_hd_tiles_h", test_gemm_hd_tiles_h},
                 {"gemm_hd_h_tc", test_gemm_hd_h_tc}, {"gemm_layout", test_gemm_layout}, {"gemm_hd_pipeline", test_gemm_hd_pipeline}};
    for (const auto& t : tests) {
        const int before = g_failures;
        try {
            t.fn();
        } catch (const std::exception& e) {
            ++g_failures;
            std::fprintf(stderr, "FAIL %s: exception: %s\n", t.name, e.what());
        }
        std::printf("%-14s %s\n", t.name, g_failures == before ? "ok" : "FAILED");
    }
    std::printf("%d checks, %d failures\n", g_checks, g_failures);
    return g_failures ? 1 : 0;
}
