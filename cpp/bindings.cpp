// bindings.cpp — the only file that includes pybind11: quellm._core.
//
// Arguments are validated here, at the boundary, with messages that name the argument;
// std::invalid_argument thrown anywhere in the core becomes ValueError. Long kernels release
// the GIL.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <omp.h>

#include "common.h"
#include "cpu_features.h"
#if defined(QUELLM_HAS_CUDA)
#include "cuda_api.h"
#endif

namespace py = pybind11;
using namespace quellm;

namespace {

template <typename T>
using carray = py::array_t<T, py::array::c_style | py::array::forcecast>;

py::dict cpu_dict() {
    const CpuFeatures& f = cpu_features();
    py::dict d;
    d["avx2"] = f.avx2;
    d["fma"] = f.fma;
    d["f16c"] = f.f16c;
    d["bmi2"] = f.bmi2;
    d["avx512f"] = f.avx512f;
    d["avx512bw"] = f.avx512bw;
    d["avx512vl"] = f.avx512vl;
    d["avx512dq"] = f.avx512dq;
    d["avx512vnni"] = f.avx512vnni;
    d["avx512bf16"] = f.avx512bf16;
    d["os_avx"] = f.os_avx;
    d["os_avx512"] = f.os_avx512;
    return d;
}

std::vector<std::string> isa_names(const std::vector<Isa>& v) {
    std::vector<std::string> out;
    for (Isa i : v) out.emplace_back(isa_name(i));
    return out;
}

py::dict cuda_dict() {
    py::dict d;
#if defined(QUELLM_HAS_CUDA)
    const cuda::DeviceInfo info = cuda::device_info();
    d["compiled"] = true;
    d["available"] = info.available;
    d["reason"] = info.reason;
    d["device_count"] = info.device_count;
    d["runtime_version"] = info.runtime_version;
    d["driver_version"] = info.driver_version;
    d["device_name"] = info.name;
    d["compute_capability"] = py::make_tuple(info.cc_major, info.cc_minor);
    d["total_memory"] = info.total_memory;
#else
    d["compiled"] = false;
    d["available"] = false;
    d["reason"] = "quellm was built without CUDA (QUELLM_CUDA=OFF or no nvcc at build time)";
#endif
    return d;
}

// Elementwise conversion through the host+device helpers of common.h.
template <typename Out, typename In, Out (*F)(In)>
py::array_t<Out> map_array(carray<In> x) {
    py::array_t<Out> out(std::vector<py::ssize_t>(x.shape(), x.shape() + x.ndim()));
    const In* src = x.data();
    Out* dst = out.mutable_data();
    const py::ssize_t n = x.size();
    for (py::ssize_t i = 0; i < n; ++i) dst[i] = F(src[i]);
    return out;
}

}  // namespace

PYBIND11_MODULE(_core, m) {
    m.doc() = "quellm's compiled kernels and runtime (private; use the quellm package)";
    m.attr("__version__") = QUELLM_VERSION;
#if defined(QUELLM_HAS_CUDA)
    m.attr("HAS_CUDA") = true;
#else
    m.attr("HAS_CUDA") = false;
#endif

    // ---- ISA and threads -------------------------------------------------------------------
    m.def("cpu_features", &cpu_dict, "CPU feature flags found by cpuid/xgetbv.");
    m.def("hardware_isa", [] { return std::string(isa_name(hardware_isa())); },
          "Best ISA level this CPU and OS support.");
    m.def("compiled_isas", [] {
        std::vector<Isa> v;
        for (int i = 0; i <= int(compiled_isa()); ++i) v.push_back(Isa(i));
        return isa_names(v);
    }, "ISA levels this build has code paths for.");
    m.def("isa_levels", [] { return isa_names(available_isas()); },
          "ISA levels usable here (compiled and supported), lowest first.");
    m.def("active_isa", [] { return std::string(isa_name(active_isa())); },
          "ISA level the kernels use now.");
    m.def("set_isa", [](const std::string& name) {
        return std::string(isa_name(set_isa(parse_isa(name))));
    }, py::arg("name"),
       "Cap the ISA level ('scalar', 'avx2', 'avx512'); clamped to what is usable. Returns the level in use.");
    m.def("num_threads", &num_threads, "Threads used by quellm's OpenMP kernels.");
    m.def("set_num_threads", [](int n) {
        if (n < 1) throw std::invalid_argument("set_num_threads: n must be >= 1, got " + std::to_string(n));
        set_num_threads(n);
    }, py::arg("n"), "Set the number of threads quellm's kernels use.");
    m.def("openmp_version", [] { return int(_OPENMP); });

    // ---- CUDA ---------------------------------------------------------------------------------
    m.def("cuda_info", &cuda_dict, "CUDA build and device information.");
#if defined(QUELLM_HAS_CUDA)
    m.def("cuda_convert_selftest", [](carray<float> x) {
        py::array_t<uint16_t> f16(x.size()), bf16(x.size());
        cuda::convert_selftest(x.data(), size_t(x.size()), f16.mutable_data(), bf16.mutable_data());
        return py::make_tuple(f16, bf16);
    }, py::arg("x"));
#endif

    // ---- f16 / bf16 conversions (the helpers every kernel uses for half-precision I/O) -------
    m.def("f32_to_f16_bits", &map_array<uint16_t, float, f32_to_f16>, py::arg("x"),
          "Round f32 to IEEE f16 (RNE); returns the bit patterns as uint16.");
    m.def("f32_to_bf16_bits", &map_array<uint16_t, float, f32_to_bf16>, py::arg("x"),
          "Round f32 to bfloat16 (RNE, NaN stays NaN); returns the bit patterns as uint16.");
    m.def("f16_bits_to_f32", &map_array<float, uint16_t, f16_to_f32>, py::arg("bits"));
    m.def("bf16_bits_to_f32", &map_array<float, uint16_t, bf16_to_f32>, py::arg("bits"));
}
