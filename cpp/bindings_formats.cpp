// bindings_formats.cpp — Python bindings of the formats kernels (part of quellm._core):
// format_names / format_info (the traits table), format_encode / format_decode (CPU: scalar
// reference or dispatched), format_encode_cuda / format_decode_cuda (device input / output,
// host codes and scales). Arrays are the canonical planes of formats.h; python/quellm/formats.py
// allocates them and checks shapes first, this file checks dtypes and sizes again.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cmath>
#include <string>
#include <vector>

#include "bindings_util.h"
#include "common.h"
#include "formats.h"
#if defined(QUELLM_HAS_CUDA)
#include "cuda_api.h"
#endif

namespace py = pybind11;
using namespace quellm;

namespace {

const char* scale_dtype_name(ScaleDtype d) { return d == ScaleDtype::F32 ? "f32" : d == ScaleDtype::E8M0 ? "e8m0" : "e4m3"; }
const char* gran_name(ScaleGran g) { return g == ScaleGran::BLOCK ? "block" : g == ScaleGran::ROW ? "row" : "tensor"; }

ScaleGran gran_from(const std::string& g) {
    if (g == "block" || g == "group") return ScaleGran::BLOCK;
    if (g == "row") return ScaleGran::ROW;
    if (g == "tensor") return ScaleGran::TENSOR;
    throw std::invalid_argument("granularity must be block, row or tensor, got " + g);
}

// Parameters of a call; the buffers are filled in by the caller.
FormatParams make_params(const std::string& name, int64_t rows, int64_t K, const py::dict& kw) {
    FormatParams p;
    p.type = format_type(name.c_str());
    p.rows = rows;
    p.K = K;
    const FormatTraits& tr = format_traits(p.type);
    p.gran = tr.scale_gran;
    p.block = tr.block_size;
    for (auto item : kw) {
        const std::string k = py::str(item.first);
        const py::handle v = item.second;
        if (k == "sym") p.sym = v.cast<bool>();
        else if (k == "narrow") p.narrow = v.cast<bool>();
        else if (k == "granularity") p.gran = gran_from(v.cast<std::string>());
        else if (k == "block" || k == "group") { if (!v.is_none()) p.block = v.cast<int64_t>(); }
        else if (k == "clip") p.clip = v.cast<float>();
        else if (k == "keep_larger") p.keep_larger = v.cast<bool>();
        else if (k == "rna") p.rna = v.cast<bool>();
        else if (k == "mantissa_bits") p.mantissa_bits = v.cast<int>();
        else if (k == "scales_given") p.scales_given = v.cast<bool>();
        else if (k == "tensor_scale_given") p.tensor_scale_given = v.cast<bool>();
        else throw std::invalid_argument(name + ": unknown format parameter '" + k + "'");
    }
    format_check(p, false);
    return p;
}

template <typename T>
T* plane(const py::object& o, int64_t n, const char* what, const std::string& fmt) {
    QUELLM_CHECK(!o.is_none(), fmt, ": missing ", what);
    py::array a = py::array::ensure(o);
    QUELLM_CHECK(a && py::isinstance<py::array_t<T>>(a) && (a.flags() & py::array::c_style), fmt, ": ", what,
                 " must be a C-contiguous ", std::string(py::str(py::dtype::of<T>())), " array");
    QUELLM_CHECK(a.size() == n, fmt, ": ", what, " has ", a.size(), " entries, expected ", n);
    QUELLM_CHECK(a.writeable(), fmt, ": ", what, " is read-only");
    return static_cast<T*>(a.mutable_data());
}

// Points p's code / scale / zero / tensor-scale buffers at the numpy planes.
void bind_planes(FormatParams& p, const py::object& codes, const py::object& scales, const py::object& zeros,
                 const py::object& tensor_scale) {
    const FormatTraits& tr = format_traits(p.type);
    const std::string nm = tr.name;
    p.codes = plane<uint8_t>(codes, format_code_bytes(p), "codes", nm);
    const int64_t ns = format_n_scales(p);
    if (tr.scale_dtype == ScaleDtype::F32) p.scales = plane<float>(scales, ns, "scales", nm);
    else p.scales = plane<uint8_t>(scales, ns, "scales", nm);
    if (std::string(tr.family) == "int" && !p.sym) p.zeros = plane<float>(zeros, ns, "zeros", nm);
    if (std::string(tr.family) == "nvfp4") p.tensor_scale = plane<float>(tensor_scale, 1, "tensor_scale", nm);
}

std::pair<int64_t, int64_t> matrix_shape(const py::array& a, const char* what) {
    QUELLM_CHECK(a.ndim() == 2, what, " must be 2-D (rows, K), got ", a.ndim(), " dimensions");
    return {a.shape(0), a.shape(1)};
}

}  // namespace

void bind_formats(py::module_& m) {
    m.def("format_names", [] {
        std::vector<std::string> out;
        for (int t = 0; t < QUELLM_TYPE_COUNT; ++t) out.emplace_back(format_traits(FormatType(t)).name);
        return out;
    }, "Names of the formats in the C++ traits table (FormatType order).");
    m.def("format_info", [](const std::string& name) {
        const FormatTraits& tr = format_traits(format_type(name.c_str()));
        py::dict d;
        d["name"] = tr.name;
        d["family"] = tr.family;
        d["element_bits"] = tr.element_bits;
        d["block_size"] = tr.block_size ? py::object(py::int_(tr.block_size)) : py::object(py::none());
        d["bytes_per_block"] = tr.bytes_per_block ? py::object(py::int_(tr.bytes_per_block)) : py::object(py::none());
        d["scale_dtype"] = scale_dtype_name(tr.scale_dtype);
        d["scale_granularity"] = gran_name(tr.scale_gran);
        d["align"] = tr.align;
        return d;
    }, py::arg("name"), "One row of the C++ traits table (default parameters), as a dict.");

    m.def("format_encode", [](const std::string& name, const py::array& x, py::object codes, py::object scales,
                              py::object zeros, py::object tensor_scale, bool ref, const py::dict& params) {
        const float* xp = f32_data(x, "x");
        const auto [rows, K] = matrix_shape(x, "x");
        FormatParams p = make_params(name, rows, K, params);
        bind_planes(p, codes, scales, zeros, tensor_scale);
        p.x = xp;
        py::gil_scoped_release release;
        if (ref) format_encode_ref(p);
        else format_encode(p);
    }, py::arg("name"), py::arg("x"), py::arg("codes"), py::arg("scales"), py::arg("zeros") = py::none(),
       py::arg("tensor_scale") = py::none(), py::arg("ref") = false, py::arg("params") = py::dict(),
       "Encode x (rows, K) float32 into the preallocated planes (formats.h layout). ref: the scalar reference.");

    m.def("ovp_search_scales", [](const std::string& name, const py::array& x, const std::vector<int>& ks,
                                  bool keep_larger) {
        const float* xp = f32_data(x, "x");
        const auto [rows, K] = matrix_shape(x, "x");
        const FormatType type = format_type(name.c_str());
        QUELLM_CHECK(type == QUELLM_TYPE_OVP4 || type == QUELLM_TYPE_OVP4_FLINT || type == QUELLM_TYPE_OVP8,
                     "ovp_search_scales: ", name, " is not an OVP format");
        QUELLM_CHECK(!ks.empty(), "ovp_search_scales: no candidates");
        for (int64_t i = 0; i < rows * K; ++i)
            QUELLM_CHECK(std::isfinite(xp[i]), name, ": input contains NaN or Inf, which this format cannot encode");
        py::array_t<float> s(rows);
        py::array_t<double> mse(rows);
        float* sp = s.mutable_data();
        double* ep = mse.mutable_data();
        {
            py::gil_scoped_release release;
            ovp_search_scales(type, xp, rows, K, ks.data(), int(ks.size()), keep_larger, sp, ep);
        }
        return py::make_tuple(s, mse);
    }, py::arg("name"), py::arg("x"), py::arg("ks"), py::arg("keep_larger") = false,
       "OliVe's scale search per row of x (rows, K) float32 over the candidates ks: (scales f32, mse f64).");

    m.def("format_decode", [](const std::string& name, py::array& y, py::object codes, py::object scales,
                              py::object zeros, py::object tensor_scale, bool ref, const py::dict& params) {
        float* yp = f32_mutable(y, "y");
        const auto [rows, K] = matrix_shape(y, "y");
        FormatParams p = make_params(name, rows, K, params);
        bind_planes(p, codes, scales, zeros, tensor_scale);
        p.y = yp;
        py::gil_scoped_release release;
        if (ref) format_decode_ref(p);
        else format_decode(p);
    }, py::arg("name"), py::arg("y"), py::arg("codes"), py::arg("scales"), py::arg("zeros") = py::none(),
       py::arg("tensor_scale") = py::none(), py::arg("ref") = false, py::arg("params") = py::dict(),
       "Decode the planes into y (rows, K) float32.");

#if defined(QUELLM_HAS_CUDA)
    // Device x / y (a float32 device pointer of rows·K elements); host planes, staged through
    // device buffers here. Encode synchronizes (it reports NaN / range errors as ValueError).
    m.def("format_encode_cuda", [](const std::string& name, uintptr_t x, int64_t rows, int64_t K, py::object codes,
                                   py::object scales, py::object zeros, py::object tensor_scale, const py::dict& params) {
        FormatParams p = make_params(name, rows, K, params);
        bind_planes(p, codes, scales, zeros, tensor_scale);
        p.x = reinterpret_cast<const float*>(x);
        py::gil_scoped_release release;
        cuda::format_encode_cuda_host_planes(p);
    }, py::arg("name"), py::arg("x"), py::arg("rows"), py::arg("K"), py::arg("codes"), py::arg("scales"),
       py::arg("zeros") = py::none(), py::arg("tensor_scale") = py::none(), py::arg("params") = py::dict());
    m.def("format_decode_cuda", [](const std::string& name, uintptr_t y, int64_t rows, int64_t K, py::object codes,
                                   py::object scales, py::object zeros, py::object tensor_scale, const py::dict& params) {
        FormatParams p = make_params(name, rows, K, params);
        bind_planes(p, codes, scales, zeros, tensor_scale);
        p.y = reinterpret_cast<float*>(y);
        py::gil_scoped_release release;
        cuda::format_decode_cuda_host_planes(p);
    }, py::arg("name"), py::arg("y"), py::arg("rows"), py::arg("K"), py::arg("codes"), py::arg("scales"),
       py::arg("zeros") = py::none(), py::arg("tensor_scale") = py::none(), py::arg("params") = py::dict());
#endif
}
