// bindings_runtime_cuda.cpp — the GPU runtime (cuda/runtime.h) as quellm._core.GpuModel and
// quellm._core.GpuState; quellm.models.gpu wraps them in the CausalLM API. Without CUDA in the
// build nothing is bound here (quellm.models.gpu then raises a clear QuellmError).
//
// CUDA failures (no device, too old a device, out of memory) arrive as std::runtime_error and
// leave as RuntimeError; the Python layer turns them into QuellmError with the reason.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "bindings_util.h"
#include "common.h"
#include "runtime/llama.h"
#include "runtime/mamba.h"
#if defined(QUELLM_HAS_CUDA)
#include "runtime.h"
#endif

namespace py = pybind11;
using namespace quellm;

bool runtime_llama_of(const py::handle& o, const LlamaConfig** c, const LlamaWeights** w);  // bindings.cpp
bool runtime_mamba_of(const py::handle& o, const MambaConfig** c, const MambaWeights** w);

#if defined(QUELLM_HAS_CUDA)
namespace {

cuda::DType act_dtype(const std::string& name) {
    if (name == "float16") return cuda::DType::F16;
    if (name == "bfloat16") return cuda::DType::BF16;
    if (name == "float32") return cuda::DType::F32;
    throw std::invalid_argument("GPU activations must be 'float16', 'bfloat16' or 'float32', got '" + name + "'");
}

std::unique_ptr<cuda::GpuModel> make_gpu_model(const py::object& rt, const std::string& dtype, bool graphs) {
    cuda::RuntimeOptions opt;
    opt.act = act_dtype(dtype);
    opt.graphs = graphs;
    const LlamaConfig* lc = nullptr;
    const LlamaWeights* lw = nullptr;
    const MambaConfig* mc = nullptr;
    const MambaWeights* mw = nullptr;
    const bool is_llama = runtime_llama_of(rt, &lc, &lw);
    const bool is_mamba = !is_llama && runtime_mamba_of(rt, &mc, &mw);
    QUELLM_CHECK(is_llama || is_mamba, "GpuModel: expected a _core.LlamaModel or _core.MambaModel");
    py::gil_scoped_release release;
    return is_llama ? cuda::gpu_llama(*lc, *lw, opt) : cuda::gpu_mamba(*mc, *mw, opt);
}

py::array gpu_forward(cuda::GpuModel& m, const py::array& tokens_in, cuda::GpuState& st, bool all_logits) {
    auto tokens = py::array_t<int32_t, py::array::c_style | py::array::forcecast>::ensure(tokens_in);
    QUELLM_CHECK(tokens && tokens.ndim() == 2, "forward: tokens must be a 2-D integer array (batch, seq)");
    const int64_t B = tokens.shape(0), T = tokens.shape(1), V = m.vocab_size();
    py::array_t<float> logits = all_logits ? py::array_t<float>({B, T, V}) : py::array_t<float>({B, V});
    float* out = logits.mutable_data();
    const int32_t* tp = tokens.data();
    {
        py::gil_scoped_release release;
        m.forward(tp, B, T, st, all_logits, out);
    }
    return logits;
}

}  // namespace

void bind_runtime_cuda(py::module_& m) {
    py::class_<cuda::GpuState>(m, "GpuState", "Device state (KV caches or Mamba states) of B sequences.")
        .def_property_readonly("batch", &cuda::GpuState::batch)
        .def_property_readonly("capacity", &cuda::GpuState::capacity)
        .def_property_readonly("len", &cuda::GpuState::len)
        .def_property_readonly("nbytes", &cuda::GpuState::nbytes)
        .def("reset", &cuda::GpuState::reset)
        .def("truncate", &cuda::GpuState::truncate, py::arg("n"));

    py::class_<cuda::GpuModel>(m, "GpuModel",
        "A runtime model (_core.LlamaModel / _core.MambaModel) uploaded to the GPU; see quellm.models.gpu.")
        .def(py::init(&make_gpu_model), py::arg("runtime"), py::arg("dtype") = "float16", py::arg("graphs") = true)
        .def("new_state", &cuda::GpuModel::new_state, py::arg("batch"), py::arg("capacity"), py::keep_alive<0, 1>())
        .def("forward", &gpu_forward, py::arg("tokens"), py::arg("state"), py::arg("all_logits") = true,
             "Run tokens (B, T) through the model, advancing the state; f32 logits (B, T, V) or (B, V).")
        .def_property_readonly("vocab_size", &cuda::GpuModel::vocab_size)
        .def_property_readonly("dtype", [](const cuda::GpuModel& g) {
            return std::string(g.act() == cuda::DType::F16 ? "float16" : g.act() == cuda::DType::BF16 ? "bfloat16" : "float32");
        })
        .def_property("graphs", &cuda::GpuModel::graphs, &cuda::GpuModel::set_graphs)
        .def_property_readonly("graph_replays", &cuda::GpuModel::graph_replays)
        .def_property_readonly("weight_bytes", &cuda::GpuModel::weight_bytes)
        .def_property_readonly("linear_kernels", &cuda::GpuModel::linear_kernels)
        .def("set_profile", &cuda::GpuModel::set_profile, py::arg("on"))
        .def("profile_ms", &cuda::GpuModel::profile_ms)
        .def("reset_profile", &cuda::GpuModel::reset_profile)
        .def("mamba_state", [](const cuda::GpuModel& g, const cuda::GpuState& st, int64_t layer, int64_t b, int64_t Di,
                               int64_t K1, int64_t N) {
            py::array_t<float> conv({Di, K1}), ssm({Di, N});
            cuda::gpu_mamba_read_state(g, st, layer, b, Di, K1, N, conv.mutable_data(), ssm.mutable_data());
            return py::make_tuple(conv, ssm);
        }, py::arg("state"), py::arg("layer"), py::arg("seq"), py::arg("d_inner"), py::arg("k1"), py::arg("d_state"))
        .def("kv", [](const cuda::GpuModel& g, const cuda::GpuState& st, int64_t layer, int64_t b, bool values,
                      int64_t Hk, int64_t Hd) {
            py::array_t<float> out({st.len(), Hk, Hd});
            cuda::gpu_llama_read_kv(g, st, layer, b, values, Hk, Hd, out.mutable_data());
            return out;
        }, py::arg("state"), py::arg("layer"), py::arg("seq"), py::arg("values"), py::arg("n_kv"), py::arg("head_dim"));

    m.def("cuda_memory_info", [] {
        std::size_t f = 0, t = 0;
        cuda::memory_info(&f, &t);
        return py::make_tuple(f, t);
    }, "(free, total) device memory in bytes.");
    m.def("cuda_require_runtime_device", &cuda::require_runtime_device,
          "Raise RuntimeError with the reason unless the GPU runtime can run here.");
}
#else
void bind_runtime_cuda(py::module_&) {}
#endif
