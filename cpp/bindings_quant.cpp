// bindings_quant.cpp — low-bit GEMM kernels and QuantLinear (part of quellm._core).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <memory>

#include "bindings_util.h"
#include "common.h"
#include "formats.h"
#include "gemm.h"
#include "quant_linear.h"

namespace py = pybind11;
using namespace quellm;

namespace {

AQuant parse_aquant(const std::string& a) {
    if (a == "none") return AQuant::None;
    if (a == "int8") return AQuant::Int8;
    if (a == "int4") return AQuant::Int4;
    if (a == "mxfp4") return AQuant::Mxfp4;
    if (a == "mxfp8") return AQuant::Mxfp8;
    if (a == "ovp4") return AQuant::Ovp4;
    QUELLM_CHECK(false, "QuantLinear: activation format must be 'none', 'int8', 'int4', 'mxfp4', 'mxfp8' or 'ovp4', "
                 "got '", a, "'");
    return AQuant::None;
}

std::string aquant_name(AQuant a) {
    switch (a) {
        case AQuant::None: return "none";
        case AQuant::Int8: return "int8";
        case AQuant::Int4: return "int4";
        case AQuant::Mxfp4: return "mxfp4";
        case AQuant::Mxfp8: return "mxfp8";
        case AQuant::Ovp4: return "ovp4";
    }
    return "?";
}

std::shared_ptr<IntPacked> repack(const py::array& codes_in, const py::array& scales_in, int bits) {
    const char* who = bits == 4 ? "gemm_w4_repack" : "gemm_w8_repack";
    const float* sp = f32_data(scales_in, "scales");
    QUELLM_CHECK(codes_in.ndim() == 2 && scales_in.ndim() == 2 && scales_in.shape(0) == codes_in.shape(0), who,
                 ": codes must be 2-D (N, K", bits == 4 ? "/2" : "", ") and scales (N, K/G)");
    const int64_t N = codes_in.shape(0), K = codes_in.shape(1) * (bits == 4 ? 2 : 1), NG = scales_in.shape(1);
    QUELLM_CHECK(NG >= 1 && K % NG == 0, who, ": ", NG, " groups do not divide K = ", K);
    if (bits == 4) {
        auto codes = py::array_t<uint8_t, py::array::c_style>::ensure(codes_in);
        QUELLM_CHECK(codes, who, ": codes must be uint8");
        return std::make_shared<IntPacked>(gemm_w4_repack(codes.data(), sp, N, K, K / NG));
    }
    auto codes = py::array_t<int8_t, py::array::c_style>::ensure(codes_in);
    QUELLM_CHECK(codes, who, ": codes must be int8");
    return std::make_shared<IntPacked>(gemm_w8_repack(codes.data(), sp, N, K, K / NG));
}

}  // namespace

void bind_quant(py::module_& m) {
    // ---- integer kernels ----------------------------------------------------------------------
    py::class_<IntPacked, std::shared_ptr<IntPacked>>(m, "IntPacked",
        "int4/int8 weights (N, K) with per-group f32 scales, repacked for the integer GEMM kernels.")
        .def_readonly("bits", &IntPacked::bits)
        .def_readonly("e2m1", &IntPacked::e2m1)
        .def_readonly("ovp", &IntPacked::ovp)
        .def_readonly("N", &IntPacked::N)
        .def_readonly("K", &IntPacked::K)
        .def_readonly("G", &IntPacked::G)
        .def_property_readonly("nbytes", &IntPacked::nbytes)
        .def("unpack", [](const IntPacked& w) {
            py::array codes = w.bits == 4 ? py::array(py::array_t<uint8_t>({w.N, w.K / 2}))
                                          : py::array(py::array_t<int8_t>({w.N, w.K}));
            py::array_t<float> scales({w.N, w.K / w.G});
            gemm_int_unpack(w, static_cast<uint8_t*>(codes.mutable_data()), scales.mutable_data());
            return py::make_tuple(codes, scales);
        }, "The canonical (codes, scales (N, K/G)) this was packed from.");
    m.def("gemm_w4_repack", [](const py::array& c, const py::array& s) { return repack(c, s, 4); },
          py::arg("codes"), py::arg("scales"), "int4 codes (N, K/2) uint8 (element 2i low nibble) + scales (N, K/G).");
    m.def("gemm_w8_repack", [](const py::array& c, const py::array& s) { return repack(c, s, 8); },
          py::arg("codes"), py::arg("scales"), "int8 codes (N, K) + scales (N, K/G).");
    m.def("quantize_rows", [](const py::array& x, int qmax, float clip) {
        const float* xp = f32_data(x, "x");
        QUELLM_CHECK(x.ndim() == 2, "quantize_rows: x must be 2-D");
        const int64_t M = x.shape(0), K = x.shape(1);
        py::array_t<int8_t> q({M, K});
        py::array_t<float> s(M);
        {
            py::gil_scoped_release release;
            quantize_rows(xp, M, K, qmax, clip, q.mutable_data(), s.mutable_data());
        }
        return py::make_tuple(q, s);
    }, py::arg("x"), py::arg("qmax") = 127, py::arg("clip") = 1.0f,
       "Per-row symmetric: s = clip·absmax/qmax (1 for a zero row), q = clamp(rne(x/s), -qmax, qmax).");
    m.def("gemm_mx4_repack", [](const py::array& codes_in, const py::array& scales_in) {
        auto codes = py::array_t<uint8_t, py::array::c_style>::ensure(codes_in);
        auto scales = py::array_t<uint8_t, py::array::c_style>::ensure(scales_in);
        QUELLM_CHECK(codes && scales && codes.ndim() == 2 && scales.ndim() == 2 && scales.shape(0) == codes.shape(0) &&
                         scales.shape(1) * 16 == codes.shape(1),
                     "gemm_mx4_repack: codes (N, K/2) and E8M0 scale codes (N, K/32), uint8");
        return std::make_shared<IntPacked>(gemm_mx4_repack(codes.data(), scales.data(), codes.shape(0), 2 * codes.shape(1)));
    }, py::arg("codes"), py::arg("scales"), "MXFP4 weights: E2M1 codes (N, K/2) + E8M0 scale codes (N, K/32).");
    m.def("gemm_ovp4_repack", [](const py::array& codes_in, const py::array& scales_in) {
        auto codes = py::array_t<uint8_t, py::array::c_style>::ensure(codes_in);
        const float* sp = f32_data(scales_in, "scales");
        QUELLM_CHECK(codes && codes.ndim() == 2 && scales_in.ndim() == 1 && scales_in.shape(0) == codes.shape(0),
                     "gemm_ovp4_repack: codes (N, K/2) uint8 and scales (N,) float32");
        return std::make_shared<IntPacked>(gemm_ovp4_repack(codes.data(), sp, codes.shape(0), 2 * codes.shape(1)));
    }, py::arg("codes"), py::arg("scales"), "OliVe OVP4 (int4 normal type) pair codes (N, K/2) + row scales (N,).");
    m.def("quantize_rows_mxfp4", [](const py::array& x) {
        const float* xp = f32_data(x, "x");
        QUELLM_CHECK(x.ndim() == 2, "quantize_rows_mxfp4: x must be 2-D");
        const int64_t M = x.shape(0), K = x.shape(1);
        QUELLM_CHECK(K % 32 == 0, "quantize_rows_mxfp4: K = ", K, " is not a multiple of 32");
        py::array_t<int8_t> q({M, K});
        py::array_t<float> s({M, K / 32});
        quantize_rows_mxfp4(xp, M, K, q.mutable_data(), s.mutable_data());
        return py::make_tuple(q, s);
    }, py::arg("x"), "MXFP4 per 32-block: q = 2·E2M1 value (int8), s = 2^shared / 2 (M, K/32).");
    m.def("quantize_rows_mxfp8", [](const py::array& x) {
        const float* xp = f32_data(x, "x");
        QUELLM_CHECK(x.ndim() == 2, "quantize_rows_mxfp8: x must be 2-D");
        const int64_t M = x.shape(0), K = x.shape(1);
        QUELLM_CHECK(K % 32 == 0, "quantize_rows_mxfp8: K = ", K, " is not a multiple of 32");
        py::array_t<int32_t> q({M, K});
        py::array_t<float> s({M, K / 32});
        quantize_rows_mxfp8(xp, M, K, q.mutable_data(), s.mutable_data());
        return py::make_tuple(q, s);
    }, py::arg("x"), "MXFP8 (E4M3) per 32-block: q = E4M3 value · 2^9 (int32), s = 2^shared · 2^-9 (M, K/32).");
    m.def("quantize_rows_ovp4", [](const py::array& x) {
        const float* xp = f32_data(x, "x");
        QUELLM_CHECK(x.ndim() == 2, "quantize_rows_ovp4: x must be 2-D");
        const int64_t M = x.shape(0), K = x.shape(1);
        py::array_t<int8_t> q({M, K});
        py::array_t<float> s({M});
        {
            py::gil_scoped_release release;
            quantize_rows_ovp4(xp, M, K, q.mutable_data(), s.mutable_data());
        }
        return py::make_tuple(q, s);
    }, py::arg("x"), "OliVe OVP4 per row (searched scale): q = decoded pair values as integers (int8), s (M,).");
    m.attr("OVP_ACT_SEARCH_K") = py::cast(std::vector<int>(std::begin(kOvpActSearchK), std::end(kOvpActSearchK)));
    m.def("gemm_mx8", [](const py::array& qa_in, const py::array& sa_in, const IntPacked& w, const py::object& b, bool ref) {
        auto qa = py::array_t<int32_t, py::array::c_style>::ensure(qa_in);
        QUELLM_CHECK(qa && qa.ndim() == 2 && qa.shape(1) == w.K, "gemm_mx8: qa must be int32 (M, ", w.K, ")");
        const float* sa = f32_data(sa_in, "sa");
        QUELLM_CHECK(sa_in.ndim() == 2 && sa_in.shape(0) == qa.shape(0) && sa_in.shape(1) == w.K / 32,
                     "gemm_mx8: sa must be (M, K/32)");
        py::array bias;
        const float* bp = f32_optional(b, bias, "b", w.N);
        py::array_t<float> y({qa.shape(0), w.N});
        GemmMx8Params p{qa.data(), sa, &w, bp, y.mutable_data(), qa.shape(0)};
        {
            py::gil_scoped_release release;
            if (ref) gemm_mx8_ref(p); else gemm_mx8(p);
        }
        return y;
    }, py::arg("qa"), py::arg("sa"), py::arg("w"), py::arg("b") = py::none(), py::arg("ref") = false,
          "Integer weights (groups of 32) × MXFP8 activations; ref=True runs the scalar reference.");
    m.def("gemm_int", [](const py::array& qa_in, const py::array& sa_in, const IntPacked& w, const py::object& b, bool ref) {
        auto qa = py::array_t<int8_t, py::array::c_style>::ensure(qa_in);
        QUELLM_CHECK(qa && qa.ndim() == 2 && qa.shape(1) == w.K, "gemm_int: qa must be int8 (M, ", w.K, ")");
        const float* sa = f32_data(sa_in, "sa");
        const int64_t groups = sa_in.ndim() == 2 ? sa_in.shape(1) : 1;
        QUELLM_CHECK((sa_in.ndim() == 1 || (sa_in.ndim() == 2 && groups == w.K / w.G)) && sa_in.shape(0) == qa.shape(0),
                     "gemm_int: sa must be (M,) or (M, K/G)");
        py::array bias;
        const float* bp = f32_optional(b, bias, "b", w.N);
        py::array_t<float> y({qa.shape(0), w.N});
        GemmIntParams p{qa.data(), sa, &w, bp, y.mutable_data(), qa.shape(0), groups};
        {
            py::gil_scoped_release release;
            if (ref) gemm_int_ref(p); else gemm_int(p);
        }
        return y;
    }, py::arg("qa"), py::arg("sa"), py::arg("w"), py::arg("b") = py::none(), py::arg("ref") = false,
       "y = (qa · sa) @ (qw · sw)ᵀ (+ b) with exact int32 accumulation per group.");

    // ---- QuantLinear ----------------------------------------------------------------------------
    py::class_<QuantLinear, std::shared_ptr<QuantLinear>>(m, "QuantLinear",
        "Quantized linear layer: transform → activation quantizer → low-bit GEMM → epilogue.")
        .def_static("from_f32", [](const py::array& w) {
            const float* wp = f32_data(w, "weight");
            QUELLM_CHECK(w.ndim() == 2, "QuantLinear: weight must be 2-D (out, in)");
            return std::make_shared<QuantLinear>(QuantLinear::from_f32(wp, w.shape(0), w.shape(1)));
        }, py::arg("weight"))
        .def_static("from_int", [](int bits, const py::array& codes_in, const py::array& scales_in, const py::object& zeros_in,
                                   const std::string& a_format, float a_clip) {
            QUELLM_CHECK(bits == 4 || bits == 8, "QuantLinear: weight bits must be 4 or 8, got ", bits);
            auto codes = carray<uint8_t>::ensure(codes_in);
            QUELLM_CHECK(codes && codes.ndim() == 2 && (codes_in.dtype().itemsize() == 1),
                         "QuantLinear: codes must be a 2-D uint8/int8 array");
            const float* sp = f32_data(scales_in, "scales");
            const int64_t N = codes.shape(0), K = codes.shape(1) * (bits == 4 ? 2 : 1);
            QUELLM_CHECK(scales_in.ndim() == 2 && scales_in.shape(0) == N && scales_in.shape(1) >= 1,
                         "QuantLinear: scales must be (out, in/group)");
            const int64_t NG = scales_in.shape(1);
            QUELLM_CHECK(K % NG == 0, "QuantLinear: ", NG, " groups do not divide in_features = ", K);
            const float* zp = nullptr;
            py::array zeros;
            if (!zeros_in.is_none()) {
                zeros = py::array::ensure(zeros_in);
                zp = f32_data(zeros, "zeros");
                QUELLM_CHECK(zeros.ndim() == 2 && zeros.shape(0) == N && zeros.shape(1) == NG,
                             "QuantLinear: zeros must have the shape of scales");
            }
            return std::make_shared<QuantLinear>(
                QuantLinear::from_int(bits, codes.data(), sp, zp, N, K, K / NG, parse_aquant(a_format), a_clip));
        }, py::arg("bits"), py::arg("codes"), py::arg("scales"), py::arg("zeros") = py::none(),
           py::arg("a_format") = "none", py::arg("a_clip") = 1.0f)
        .def_static("from_mx4", [](const py::array& codes_in, const py::array& scales_in, const std::string& a_format) {
            auto codes = py::array_t<uint8_t, py::array::c_style>::ensure(codes_in);
            auto scales = py::array_t<uint8_t, py::array::c_style>::ensure(scales_in);
            QUELLM_CHECK(codes && scales && codes.ndim() == 2 && scales.ndim() == 2 && scales.shape(0) == codes.shape(0) &&
                             scales.shape(1) * 16 == codes.shape(1),
                         "QuantLinear: MXFP4 codes (out, in/2) and E8M0 scale codes (out, in/32), uint8");
            return std::make_shared<QuantLinear>(QuantLinear::from_mx4(codes.data(), scales.data(), codes.shape(0),
                                                                       2 * codes.shape(1), parse_aquant(a_format)));
        }, py::arg("codes"), py::arg("scales"), py::arg("a_format"))
        .def_static("from_ovp4", [](const py::array& codes_in, const py::array& scales_in, const std::string& a_format,
                                    float a_clip) {
            auto codes = py::array_t<uint8_t, py::array::c_style>::ensure(codes_in);
            const float* sp = f32_data(scales_in, "scales");
            QUELLM_CHECK(codes && codes.ndim() == 2 && scales_in.ndim() == 2 && scales_in.shape(0) == codes.shape(0) &&
                             scales_in.shape(1) == 1,
                         "QuantLinear: OVP4 pair codes (out, in/2) uint8 and scales (out, 1) float32");
            return std::make_shared<QuantLinear>(QuantLinear::from_ovp4(codes.data(), sp, codes.shape(0),
                                                                        2 * codes.shape(1), parse_aquant(a_format), a_clip));
        }, py::arg("codes"), py::arg("scales"), py::arg("a_format"), py::arg("a_clip") = 1.0f)
        .def("set_bias", [](QuantLinear& q, const py::object& b) {
            py::array hold;
            q.set_bias(f32_optional(b, hold, "bias", q.N));
        }, py::arg("bias"))
        .def("set_activation", [](QuantLinear& q, const std::string& a, float clip) { q.set_activation(parse_aquant(a), clip); },
             py::arg("a_format"), py::arg("clip") = 1.0f)
        .def("set_hadamard", [](QuantLinear& q, int64_t m, const py::object& hm) {
            HadamardSpec h;
            if (m > 0) {
                QUELLM_CHECK(q.K % m == 0, "QuantLinear: Hadamard factor ", m, " does not divide in_features ", q.K);
                h.m = int(m);
                h.p = q.K / m;
                if (m > 1) {
                    QUELLM_CHECK(!hm.is_none(), "QuantLinear: the factor H_m is required for m = ", m);
                    auto a = carray<int8_t>::ensure(hm);
                    QUELLM_CHECK(a && a.ndim() == 2 && a.shape(0) == m && a.shape(1) == m, "QuantLinear: hm must be (m, m)");
                    h.hm.assign(a.data(), a.data() + m * m);
                }
            }
            q.set_hadamard(std::move(h));
        }, py::arg("m"), py::arg("hm") = py::none(), "Rotate inputs by H_K/√K (m = 0: no transform).")
        .def("forward", [](const QuantLinear& q, const py::object& xo) {
            // (..., K) of any real dtype -> (..., N) float32. Converting here rather than in Python
            // keeps a batch-1 call's fixed cost near a microsecond (a GEMV takes only a few).
            auto x = py::array_t<float, py::array::c_style | py::array::forcecast>::ensure(xo);
            if (!x) {
                PyErr_Clear();
                QUELLM_CHECK(false, "QuantLinear: input must be a real array (..., ", q.K, "), got ",
                             std::string(py::str(py::type::of(xo).attr("__name__"))));
            }
            std::vector<py::ssize_t> shape(x.shape(), x.shape() + x.ndim());
            if (x.ndim() == 0 || shape.back() != q.K) {
                std::string got = "(";
                for (size_t i = 0; i < shape.size(); ++i) got += (i ? ", " : "") + std::to_string(shape[i]);
                QUELLM_CHECK(false, "QuantLinear: input must have shape (..., ", q.K, "), got ",
                             got + (shape.size() == 1 ? ",)" : ")"));
            }
            const int64_t M = x.size() / q.K;
            shape.back() = q.N;
            py::array_t<float> y(shape);
            {
                py::gil_scoped_release release;
                q.forward(x.data(), M, y.mutable_data());
            }
            return y;
        }, py::arg("x"), "(..., in_features) -> (..., out_features) float32; other dtypes are converted.")
        .def_readonly("out_features", &QuantLinear::N)
        .def_readonly("in_features", &QuantLinear::K)
        .def_readonly("w_bits", &QuantLinear::w_bits)
        .def_readonly("w_mxfp4", &QuantLinear::w_mxfp4)
        .def_readonly("w_ovp4", &QuantLinear::w_ovp4)
        .def_readonly("group", &QuantLinear::group)
        .def_readonly("a_clip", &QuantLinear::a_clip)
        .def_property_readonly("a_format", [](const QuantLinear& q) { return aquant_name(q.aq); })
        .def_property_readonly("hadamard_m", [](const QuantLinear& q) { return q.hadamard.m; })
        .def_property_readonly("kernel", &QuantLinear::kernel)
        .def_property_readonly("nbytes", &QuantLinear::nbytes)
        .def_property_readonly("bias", [](const QuantLinear& q) -> py::object {
            if (!q.has_bias()) return py::none();
            return py::array_t<float>(q.N, q.bias().data());
        })
        .def("export", [](const QuantLinear& q) -> py::tuple {
            if (q.w_bits == 32) return py::make_tuple(py::array_t<float>({q.N, q.K}, q.f32_weight().data()));
            std::vector<uint8_t> c;
            std::vector<float> s, z;
            q.export_int(c, s, z);
            const int64_t NG = q.K / q.group;
            py::array codes = q.w_bits == 4 ? py::array(py::array_t<uint8_t>({q.N, q.K / 2}, c.data()))
                                            : py::array(py::array_t<int8_t>({q.N, q.K}, reinterpret_cast<int8_t*>(c.data())));
            py::object zeros = z.empty() ? py::object(py::none()) : py::object(py::array_t<float>({q.N, NG}, z.data()));
            return py::make_tuple(codes, py::array_t<float>({q.N, NG}, s.data()), zeros);
        }, "Canonical weights: (w,) for f32, else (codes, scales, zeros or None).");
}
