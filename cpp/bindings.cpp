// bindings.cpp — the only file that includes pybind11: quellm._core.
//
// Arguments are validated here, at the boundary, with messages that name the argument;
// std::invalid_argument thrown anywhere in the core becomes quellm.errors.QuellmError (a
// ValueError). Long kernels release the GIL.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <omp.h>

#include <algorithm>

#include "bindings_util.h"
#include "common.h"
#include "cpu_features.h"
#include "fwht.h"
#include "gemm.h"
#include "matmul.h"
#include "runtime/llama.h"
#include "runtime/mamba.h"
#include "quant_linear.h"
#include "runtime/observe.h"
#if defined(QUELLM_HAS_CUDA)
#include "cuda_api.h"
#endif

namespace py = pybind11;
using namespace quellm;

// Kernel families bound in their own files (bindings_<family>.cpp).
void bind_formats(py::module_& m);
void bind_quant(py::module_& m);
void bind_runtime_cuda(py::module_& m);  // bindings_runtime_cuda.cpp (empty without CUDA)

namespace {

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

void fwht_binding(const py::array& x, py::array& out, int64_t m, const py::object& hm, float scale, bool ref) {
    const float* xp = f32_data(x, "x");
    float* op = f32_mutable(out, "out");
    QUELLM_CHECK(x.ndim() >= 1, "fwht: x must have at least one dimension");
    QUELLM_CHECK(out.ndim() == x.ndim() && std::equal(x.shape(), x.shape() + x.ndim(), out.shape()),
                 "fwht: out must have the shape of x");
    const int64_t n = x.shape(x.ndim() - 1);
    QUELLM_CHECK(m >= 1 && n % m == 0, "fwht: n = ", n, " is not a multiple of m = ", m);
    FwhtParams p{};
    p.x = xp;
    p.out = op;
    p.n = n;
    p.m = int(m);
    p.p = n / m;
    p.rows = n ? int64_t(x.size()) / n : 0;
    p.scale = scale;
    py::array_t<int8_t, py::array::c_style | py::array::forcecast> hm_arr;
    if (m > 1) {
        QUELLM_CHECK(!hm.is_none(), "fwht: the factor H_m is required for m = ", m);
        hm_arr = py::array_t<int8_t, py::array::c_style | py::array::forcecast>::ensure(hm);
        QUELLM_CHECK(hm_arr && hm_arr.ndim() == 2 && hm_arr.shape(0) == m && hm_arr.shape(1) == m,
                     "fwht: hm must have shape (", m, ", ", m, ")");
        p.hm = hm_arr.data();
    }
    if (n == 0) return;
    py::gil_scoped_release release;
    if (ref)
        fwht_ref(p);
    else
        fwht(p);
}

// ---- runtimes ----------------------------------------------------------------------------------
// Looks up float32 tensors by their Hugging Face names, checks shapes, and keeps a reference to
// each array so the runtime can point into it.
struct WeightTable {
    const py::dict& tensors;
    std::vector<py::object>& keep;
    const char* who;

    const float* operator()(const std::string& name, const std::vector<int64_t>& shape, bool required = true) {
        if (!tensors.contains(name.c_str())) {
            QUELLM_CHECK(!required, who, ": tensor '", name, "' is missing");
            return nullptr;
        }
        py::array a = py::array::ensure(tensors[name.c_str()]);
        const float* p = f32_data(a, name.c_str());
        QUELLM_CHECK(size_t(a.ndim()) == shape.size() && std::equal(shape.begin(), shape.end(), a.shape()),
                     who, ": tensor '", name, "' has the wrong shape");
        keep.push_back(a);
        return p;
    }
    // A linear layer: float32 `<pre>.weight` (+ optional `.bias`), or a QuantLinear object under
    // `<pre>.weight` that carries its own bias.
    Linear linear(const std::string& pre, int64_t out, int64_t in) {
        Linear l;
        const std::string wname = pre + ".weight";
        if (tensors.contains(wname.c_str()) && py::isinstance<QuantLinear>(tensors[wname.c_str()])) {
            py::object o = tensors[wname.c_str()];
            const QuantLinear& q = o.cast<const QuantLinear&>();
            QUELLM_CHECK(q.N == out && q.K == in, who, ": quantized linear '", pre, "' is (", q.N, ", ", q.K,
                         "), expected (", out, ", ", in, ")");
            QUELLM_CHECK(!tensors.contains((pre + ".bias").c_str()), who, ": quantized linear '", pre,
                         "' carries its bias; drop the separate '", pre, ".bias' tensor");
            keep.push_back(o);
            l.q = &q;
            l.out = out;
            l.in = in;
            return l;
        }
        l.w = (*this)(pre + ".weight", {out, in});
        l.b = (*this)(pre + ".bias", {out}, false);
        l.out = out;
        l.in = in;
        return l;
    }
};

py::array_t<float> kv_read(const KVCache& c, int64_t layer, bool values) {
    QUELLM_CHECK(layer >= 0 && layer < c.n_layers, "KVCache: layer ", layer, " out of range [0, ", c.n_layers, ")");
    py::array_t<float> out({c.len, c.n_kv, c.hd});
    std::vector<float> row(size_t(c.len * c.hd));
    for (int64_t h = 0; h < c.n_kv; ++h) {
        c.read(layer, h, 0, c.len, values, row.data());
        for (int64_t p = 0; p < c.len; ++p)
            std::copy_n(row.data() + p * c.hd, c.hd, out.mutable_data() + (p * c.n_kv + h) * c.hd);
    }
    return out;
}

// The model holds references to the numpy arrays it points into, so weights are never copied
// (f32 memory-mapped checkpoints are used in place) and outlive the model.
template <typename State>
std::vector<State*> checked_states(const std::vector<State*>& states, int64_t B) {
    QUELLM_CHECK(int64_t(states.size()) == B, "forward: ", B, " sequences but ", states.size(), " states");
    for (size_t i = 0; i < states.size(); ++i)
        for (size_t j = 0; j < i; ++j) QUELLM_CHECK(states[i] != states[j], "forward: the same state is passed twice");
    return states;
}

struct PyLlama {
    LlamaConfig cfg;
    LlamaWeights w;
    std::vector<py::object> keep;
};

int64_t dict_int(const py::dict& d, const char* key) {
    QUELLM_CHECK(d.contains(key), "LlamaModel: config is missing '", key, "'");
    return d[key].cast<int64_t>();
}

std::shared_ptr<PyLlama> make_llama(const py::dict& cfg, const py::dict& tensors, const py::array& inv_freq) {
    auto m = std::make_shared<PyLlama>();
    LlamaConfig& c = m->cfg;
    c.dim = dict_int(cfg, "hidden_size");
    c.hidden_dim = dict_int(cfg, "intermediate_size");
    c.n_layers = dict_int(cfg, "num_hidden_layers");
    c.n_heads = dict_int(cfg, "num_attention_heads");
    c.n_kv_heads = dict_int(cfg, "num_key_value_heads");
    c.head_dim = dict_int(cfg, "head_dim");
    c.vocab_size = dict_int(cfg, "vocab_size");
    c.max_seq_len = dict_int(cfg, "max_position_embeddings");
    c.sliding_window = cfg.contains("sliding_window") && !cfg["sliding_window"].is_none() ? cfg["sliding_window"].cast<int64_t>() : 0;
    c.norm_eps = cfg["rms_norm_eps"].cast<float>();
    QUELLM_CHECK(c.n_kv_heads > 0 && c.n_heads % c.n_kv_heads == 0, "LlamaModel: n_heads must be a multiple of n_kv_heads");
    QUELLM_CHECK(c.head_dim % 2 == 0, "LlamaModel: head_dim must be even");

    WeightTable get{tensors, m->keep, "LlamaModel"};
    const int64_t D = c.dim, F = c.hidden_dim, qd = c.n_heads * c.head_dim, kvd = c.n_kv_heads * c.head_dim;
    LlamaWeights& w = m->w;
    w.embed = get("model.embed_tokens.weight", {c.vocab_size, D});
    for (int64_t i = 0; i < c.n_layers; ++i) {
        const std::string p = "model.layers." + std::to_string(i) + ".";
        LlamaLayer L;
        L.attn_norm = get(p + "input_layernorm.weight", {D});
        L.q = get.linear(p + "self_attn.q_proj", qd, D);
        L.k = get.linear(p + "self_attn.k_proj", kvd, D);
        L.v = get.linear(p + "self_attn.v_proj", kvd, D);
        L.o = get.linear(p + "self_attn.o_proj", D, qd);
        L.ffn_norm = get(p + "post_attention_layernorm.weight", {D});
        L.gate = get.linear(p + "mlp.gate_proj", F, D);
        L.up = get.linear(p + "mlp.up_proj", F, D);
        L.down = get.linear(p + "mlp.down_proj", D, F);
        w.layers.push_back(L);
    }
    w.final_norm = get("model.norm.weight", {D});
    if (tensors.contains("lm_head.weight"))
        w.lm_head = get.linear("lm_head", c.vocab_size, D);
    else
        w.lm_head = Linear{w.embed, nullptr, c.vocab_size, D};
    py::array_t<float, py::array::c_style | py::array::forcecast> f(inv_freq);
    QUELLM_CHECK(f.ndim() == 1 && f.shape(0) == c.head_dim / 2, "LlamaModel: inv_freq must have shape (head_dim/2,)");
    w.inv_freq.assign(f.data(), f.data() + f.shape(0));
    return m;
}

struct PyMamba {
    MambaConfig cfg;
    MambaWeights w;
    std::vector<py::object> keep;
};

std::shared_ptr<PyMamba> make_mamba(const py::dict& cfg, const py::dict& tensors) {
    auto m = std::make_shared<PyMamba>();
    MambaConfig& c = m->cfg;
    c.dim = dict_int(cfg, "hidden_size");
    c.d_inner = dict_int(cfg, "intermediate_size");
    c.d_state = dict_int(cfg, "state_size");
    c.d_conv = dict_int(cfg, "conv_kernel");
    c.dt_rank = dict_int(cfg, "time_step_rank");
    c.n_layers = dict_int(cfg, "num_hidden_layers");
    c.vocab_size = dict_int(cfg, "vocab_size");
    c.norm_eps = cfg["layer_norm_epsilon"].cast<float>();
    QUELLM_CHECK(c.d_conv >= 1 && c.d_conv <= 64, "MambaModel: conv_kernel must be in [1, 64], got ", c.d_conv);
    WeightTable get{tensors, m->keep, "MambaModel"};
    const int64_t D = c.dim, Di = c.d_inner, Ns = c.d_state, K = c.d_conv, R = c.dt_rank;
    MambaWeights& w = m->w;
    w.embed = get("backbone.embeddings.weight", {c.vocab_size, D});
    for (int64_t i = 0; i < c.n_layers; ++i) {
        const std::string p = "backbone.layers." + std::to_string(i) + ".";
        MambaLayer L;
        L.norm = get(p + "norm.weight", {D});
        L.in_proj = get.linear(p + "mixer.in_proj", 2 * Di, D);
        L.conv_w = get(p + "mixer.conv1d.weight", {Di, 1, K});
        L.conv_b = get(p + "mixer.conv1d.bias", {Di}, false);
        L.x_proj = get.linear(p + "mixer.x_proj", R + 2 * Ns, Di);
        L.dt_proj = get.linear(p + "mixer.dt_proj", Di, R);
        QUELLM_CHECK(L.dt_proj.q == nullptr, "MambaModel: dt_proj stays float32 (it reads a strided input)");
        QUELLM_CHECK(L.dt_proj.b != nullptr, "MambaModel: tensor '", p, "mixer.dt_proj.bias' is missing");
        const float* a_log = get(p + "mixer.A_log", {Di, Ns});
        L.A.resize(size_t(Di * Ns));
        for (int64_t j = 0; j < Di * Ns; ++j) L.A[j] = -std::exp(a_log[j]);
        L.D = get(p + "mixer.D", {Di});
        L.out_proj = get.linear(p + "mixer.out_proj", D, Di);
        w.layers.push_back(std::move(L));
    }
    w.norm_f = get("backbone.norm_f.weight", {D});
    if (tensors.contains("lm_head.weight"))
        w.lm_head = get.linear("lm_head", c.vocab_size, D);
    else
        w.lm_head = Linear{w.embed, nullptr, c.vocab_size, D};
    return m;
}

// forward(tokens (B, T), states, all_logits, observers) for a runtime (PyLlama / PyMamba):
// validates the arguments, releases the GIL and calls the runtime's forward function.
template <class Model, class State, auto Forward>
py::array forward_binding(Model& m, const py::array& tokens_in, const std::vector<State*>& states_in, bool all_logits,
                          Observers* obs) {
    auto tokens = py::array_t<int32_t, py::array::c_style | py::array::forcecast>::ensure(tokens_in);
    QUELLM_CHECK(tokens && tokens.ndim() == 2, "forward: tokens must be a 2-D integer array (batch, seq)");
    const int64_t B = tokens.shape(0), T = tokens.shape(1);
    std::vector<State*> states = checked_states(states_in, B);
    const int64_t V = m.cfg.vocab_size;
    py::array_t<float> logits = all_logits ? py::array_t<float>({B, T, V}) : py::array_t<float>({B, V});
    float* out = logits.mutable_data();
    const int32_t* tp = tokens.data();
    {
        py::gil_scoped_release release;
        Forward(m.cfg, m.w, tp, B, T, states.data(), all_logits, out, obs);
    }
    return logits;
}

// Layers [start, stop) on hidden states (B, T, D): a new array, the input is left as it was.
template <class Model, class State, auto Layers>
py::array forward_layers_binding(Model& m, const py::array& hidden, const std::vector<State*>& states_in, int64_t start,
                                 int64_t stop, Observers* obs) {
    auto x = py::array_t<float, py::array::c_style | py::array::forcecast>::ensure(hidden);
    QUELLM_CHECK(x && x.ndim() == 3 && x.shape(2) == m.cfg.dim, "forward_layers: hidden must have shape (batch, seq, ",
                 m.cfg.dim, ")");
    const int64_t B = x.shape(0), T = x.shape(1);
    std::vector<State*> states = checked_states(states_in, B);
    QUELLM_CHECK(obs == nullptr || obs->n_layers == m.cfg.n_layers, "forward_layers: observers made for ",
                 obs ? obs->n_layers : 0, " layers, the model has ", m.cfg.n_layers);
    py::array_t<float> out({B, T, m.cfg.dim});
    float* o = out.mutable_data();
    std::copy_n(x.data(), B * T * m.cfg.dim, o);
    {
        py::gil_scoped_release release;
        Layers(m.cfg, m.w, o, B, T, start, stop, states.data(), obs);
    }
    return out;
}

#if defined(QUELLM_HAS_CUDA)
// A device buffer owned by Python: (shape, dtype) + a cudaMalloc pointer. It exposes
// __cuda_array_interface__ so other GPU libraries can read it without a copy.
struct DeviceArray {
    void* ptr = nullptr;
    std::vector<int64_t> shape;
    cuda::DType dtype = cuda::DType::F32;
    size_t nbytes = 0;
    DeviceArray(std::vector<int64_t> s, cuda::DType t) : shape(std::move(s)), dtype(t) {
        size_t n = 1;
        for (int64_t d : shape) {
            QUELLM_CHECK(d >= 0, "DeviceArray: negative dimension ", d);
            n *= size_t(d);
        }
        nbytes = n * (t == cuda::DType::F32 ? 4 : 2);
        ptr = cuda::device_alloc(nbytes);
    }
    ~DeviceArray() { cuda::device_free(ptr); }
    DeviceArray(const DeviceArray&) = delete;
    DeviceArray& operator=(const DeviceArray&) = delete;
};

cuda::DType dtype_from_name(const std::string& name) {
    if (name == "float32") return cuda::DType::F32;
    if (name == "float16") return cuda::DType::F16;
    if (name == "bfloat16") return cuda::DType::BF16;
    throw std::invalid_argument("device dtype must be float32, float16 or bfloat16, got " + name);
}

const char* dtype_name(cuda::DType t) {
    return t == cuda::DType::F32 ? "float32" : t == cuda::DType::F16 ? "float16" : "bfloat16";
}

struct CudaLinearHolder {
    cuda::CudaLinearPtr ptr;
    cuda::DType act = cuda::DType::F16;
    int64_t N = 0, K = 0;
};
#endif

}  // namespace

// For bindings_runtime_cuda.cpp: the config and weights behind a runtime model object
// (_core.LlamaModel / _core.MambaModel), or false for another object.
bool runtime_llama_of(const py::handle& o, const LlamaConfig** c, const LlamaWeights** w) {
    if (!py::isinstance<PyLlama>(o)) return false;
    const PyLlama& m = o.cast<const PyLlama&>();
    *c = &m.cfg;
    *w = &m.w;
    return true;
}
bool runtime_mamba_of(const py::handle& o, const MambaConfig** c, const MambaWeights** w) {
    if (!py::isinstance<PyMamba>(o)) return false;
    const PyMamba& m = o.cast<const PyMamba&>();
    *c = &m.cfg;
    *w = &m.w;
    return true;
}

PYBIND11_MODULE(_core, m) {
    m.doc() = "quellm's compiled kernels and runtime (private; use the quellm package)";
    m.attr("__version__") = QUELLM_VERSION;
#if defined(QUELLM_HAS_CUDA)
    m.attr("HAS_CUDA") = true;
#else
    m.attr("HAS_CUDA") = false;
#endif
    // std::invalid_argument (QUELLM_CHECK: bad input) becomes quellm.errors.QuellmError, the
    // ValueError subclass the Python layer raises, so one `except QuellmError` catches every
    // bad-input failure, from numpy or from C++. Plain ValueError if the module is loaded outside
    // the package. The class object is leaked on purpose (no destructor after finalization).
    static PyObject* quellm_error = PyExc_ValueError;
    try {
        py::object cls = py::module_::import("quellm.errors").attr("QuellmError");
        quellm_error = cls.release().ptr();
    } catch (py::error_already_set&) {
        PyErr_Clear();
    }
    py::register_local_exception_translator([](std::exception_ptr p) {
        try {
            if (p) std::rethrow_exception(p);
        } catch (const std::invalid_argument& e) {
            PyErr_SetString(quellm_error, e.what());
        }
    });
    bind_formats(m);
    bind_quant(m);
    bind_runtime_cuda(m);

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
    py::class_<DeviceArray, std::shared_ptr<DeviceArray>>(m, "DeviceArray",
        "A float32/float16/bfloat16 array in CUDA device memory (C-contiguous).")
        .def(py::init([](std::vector<int64_t> shape, const std::string& dtype) {
                 return std::make_shared<DeviceArray>(std::move(shape), dtype_from_name(dtype));
             }), py::arg("shape"), py::arg("dtype") = "float32")
        .def_property_readonly("shape", [](const DeviceArray& a) { return py::tuple(py::cast(a.shape)); })
        .def_property_readonly("dtype", [](const DeviceArray& a) { return std::string(dtype_name(a.dtype)); })
        .def_property_readonly("nbytes", [](const DeviceArray& a) { return a.nbytes; })
        .def_property_readonly("ptr", [](const DeviceArray& a) { return reinterpret_cast<uintptr_t>(a.ptr); })
        .def("copy_from_host", [](DeviceArray& a, const py::buffer& b) {
            py::buffer_info info = b.request();
            QUELLM_CHECK(size_t(info.size * info.itemsize) == a.nbytes, "copy_from_host: size mismatch (",
                         info.size * info.itemsize, " bytes for a ", a.nbytes, "-byte device array)");
            QUELLM_CHECK(info.ndim == 0 || info.strides.back() == info.itemsize, "copy_from_host: host buffer must be C-contiguous");
            cuda::copy_to_device(a.ptr, info.ptr, a.nbytes);
        }, py::arg("host"))
        .def("copy_to_host", [](const DeviceArray& a, py::buffer& b) {
            py::buffer_info info = b.request(true);
            QUELLM_CHECK(size_t(info.size * info.itemsize) == a.nbytes, "copy_to_host: size mismatch");
            cuda::copy_to_host(info.ptr, a.ptr, a.nbytes);
        }, py::arg("host"));
    m.def("cuda_synchronize", &cuda::synchronize);
    m.def("fwht_cuda", [](uintptr_t x, const std::string& x_dtype, uintptr_t out, const std::string& out_dtype,
                          int64_t rows, int64_t n, int64_t mm, const py::object& hm, float scale, uintptr_t stream) {
        cuda::FwhtCudaParams p;
        p.x = reinterpret_cast<const void*>(x);
        p.out = reinterpret_cast<void*>(out);
        p.x_dtype = dtype_from_name(x_dtype);
        p.out_dtype = dtype_from_name(out_dtype);
        p.rows = rows;
        p.n = n;
        p.m = int(mm);
        QUELLM_CHECK(mm >= 1 && n % mm == 0, "fwht_cuda: n = ", n, " is not a multiple of m = ", mm);
        p.p = n / mm;
        p.scale = scale;
        py::array_t<int8_t, py::array::c_style | py::array::forcecast> hm_arr;
        if (mm > 1) {
            hm_arr = py::array_t<int8_t, py::array::c_style | py::array::forcecast>::ensure(hm);
            QUELLM_CHECK(hm_arr && hm_arr.ndim() == 2 && hm_arr.shape(0) == mm && hm_arr.shape(1) == mm,
                         "fwht_cuda: hm must have shape (", mm, ", ", mm, ")");
            p.hm = hm_arr.data();
        }
        py::gil_scoped_release release;
        cuda::fwht_cuda(p, reinterpret_cast<void*>(stream));
    }, py::arg("x"), py::arg("x_dtype"), py::arg("out"), py::arg("out_dtype"), py::arg("rows"), py::arg("n"),
       py::arg("m"), py::arg("hm"), py::arg("scale"), py::arg("stream") = 0);
    m.def("mamba_conv_cuda", [](uintptr_t xs, int64_t ld_xs, uintptr_t conv_w, uintptr_t conv_b, uintptr_t conv_state,
                                uintptr_t u, const std::string& act, int64_t B, int64_t T, int64_t Di, int64_t K, uintptr_t stream) {
        cuda::MambaConvCudaParams p;
        p.xs = reinterpret_cast<const void*>(xs);
        p.ld_xs = ld_xs;
        p.conv_w = reinterpret_cast<const float*>(conv_w);
        p.conv_b = reinterpret_cast<const float*>(conv_b);
        p.conv_state = reinterpret_cast<float*>(conv_state);
        p.u = reinterpret_cast<void*>(u);
        p.act = dtype_from_name(act);
        p.B = B; p.T = T; p.Di = Di; p.K = K;
        py::gil_scoped_release release;
        cuda::mamba_conv_cuda(p, reinterpret_cast<void*>(stream));
    });
    m.def("mamba_scan_cuda", [](uintptr_t u, uintptr_t dt, uintptr_t bc, int64_t ld_bc, uintptr_t z, int64_t ld_z,
                                uintptr_t A, uintptr_t Dskip, uintptr_t state, uintptr_t y, const std::string& act,
                                bool dt_softplus, int64_t B, int64_t T, int64_t Di, int64_t N, uintptr_t stream) {
        cuda::MambaScanCudaParams p;
        p.u = reinterpret_cast<const void*>(u);
        p.dt = reinterpret_cast<const void*>(dt);
        p.bc = reinterpret_cast<const void*>(bc);
        p.ld_bc = ld_bc;
        p.z = reinterpret_cast<const void*>(z);
        p.ld_z = ld_z;
        p.A = reinterpret_cast<const float*>(A);
        p.Dskip = reinterpret_cast<const float*>(Dskip);
        p.ssm_state = reinterpret_cast<float*>(state);
        p.y = reinterpret_cast<void*>(y);
        p.act = dtype_from_name(act);
        p.dt_softplus = dt_softplus;
        p.B = B; p.T = T; p.Di = Di; p.N = N;
        py::gil_scoped_release release;
        cuda::mamba_scan_cuda(p, reinterpret_cast<void*>(stream));
    });
    // The device linear layer (cuda/gemm.cu): upload a QuantLinear once, run forwards on device
    // pointers with a caller-owned workspace (quellm.cuda.Linear wraps this).
    py::class_<CudaLinearHolder, std::shared_ptr<CudaLinearHolder>>(m, "CudaLinear",
        "A QuantLinear uploaded to the GPU (weights in their format, bias, quantizer, transform).")
        .def(py::init([](const QuantLinear& q, const std::string& act) {
                 auto h = std::make_shared<CudaLinearHolder>();
                 h->act = dtype_from_name(act);
                 h->N = q.N;
                 h->K = q.K;
                 h->ptr = cuda::cuda_linear_upload(q, h->act);
                 return h;
             }), py::arg("layer"), py::arg("act") = "float16")
        .def("workspace_bytes", [](const CudaLinearHolder& h, int64_t M) {
            return cuda::cuda_linear_workspace_bytes(*h.ptr, M);
        }, py::arg("M"))
        .def("forward", [](const CudaLinearHolder& h, uintptr_t x, int64_t M, uintptr_t y, uintptr_t workspace,
                           uintptr_t stream) {
            py::gil_scoped_release release;
            cuda::cuda_linear_forward(*h.ptr, reinterpret_cast<const void*>(x), M, reinterpret_cast<void*>(y),
                                      reinterpret_cast<void*>(workspace), reinterpret_cast<void*>(stream));
        }, py::arg("x"), py::arg("M"), py::arg("y"), py::arg("workspace"), py::arg("stream") = 0)
        .def_property_readonly("kernel", [](const CudaLinearHolder& h) { return cuda::cuda_linear_kernel(*h.ptr); })
        .def_property_readonly("nbytes", [](const CudaLinearHolder& h) { return cuda::cuda_linear_nbytes(*h.ptr); })
        .def_property_readonly("act", [](const CudaLinearHolder& h) { return std::string(dtype_name(h.act)); })
        .def_readonly("out_features", &CudaLinearHolder::N)
        .def_readonly("in_features", &CudaLinearHolder::K);
    m.def("cuda_linear_force_simt", &cuda::cuda_linear_force_simt, py::arg("on"),
          "Testing: run device linear layers with the SIMT reference kernels.");
    m.def("cuda_convert_selftest", [](carray<float> x) {
        py::array_t<uint16_t> f16(x.size()), bf16(x.size());
        cuda::convert_selftest(x.data(), size_t(x.size()), f16.mutable_data(), bf16.mutable_data());
        return py::make_tuple(f16, bf16);
    }, py::arg("x"));
#endif

    // ---- kernels ---------------------------------------------------------------------------------
    m.def("fwht", [](const py::array& x, py::array& out, int64_t m, const py::object& hm, float scale) {
        fwht_binding(x, out, m, hm, scale, false);
    }, py::arg("x"), py::arg("out"), py::arg("m"), py::arg("hm"), py::arg("scale"),
       "out = scale * (H_m kron H_p) x along the last axis (n = m p); fastest ISA path, OpenMP over rows.");
    m.def("fwht_ref", [](const py::array& x, py::array& out, int64_t m, const py::object& hm, float scale) {
        fwht_binding(x, out, m, hm, scale, true);
    }, py::arg("x"), py::arg("out"), py::arg("m"), py::arg("hm"), py::arg("scale"),
       "Scalar single-threaded reference of fwht.");

    m.def("matmul_f32", [](const py::array& x, const py::array& w, const py::object& b, bool ref) {
        const float* xp = f32_data(x, "x");
        const float* wp = f32_data(w, "w");
        QUELLM_CHECK(x.ndim() == 2 && w.ndim() == 2, "matmul_f32: x and w must be 2-D");
        QUELLM_CHECK(x.shape(1) == w.shape(1), "matmul_f32: x has K = ", x.shape(1), " but w has K = ", w.shape(1));
        const float* bp = nullptr;
        py::array bias;
        if (!b.is_none()) {
            bias = py::array::ensure(b);
            bp = f32_data(bias, "b");
            QUELLM_CHECK(bias.ndim() == 1 && bias.shape(0) == w.shape(0), "matmul_f32: b must have shape (N,)");
        }
        py::array_t<float> y({x.shape(0), w.shape(0)});
        MatmulParams p{xp, wp, bp, y.mutable_data(), x.shape(0), w.shape(0), x.shape(1), x.shape(1), w.shape(0)};
        {
            py::gil_scoped_release release;
            if (ref) matmul_f32_ref(p); else matmul_f32(p);
        }
        return y;
    }, py::arg("x"), py::arg("w"), py::arg("b") = py::none(), py::arg("ref") = false,
       "y = x @ w.T (+ b) in float32: x (M, K), w (N, K), C-contiguous float32.");

    // ---- runtime ---------------------------------------------------------------------------------
    py::class_<PyLlama, std::shared_ptr<PyLlama>>(m, "LlamaModel",
        "Llama-family runtime over float32 weight arrays (HF tensor names); see quellm.models.llama.")
        .def(py::init(&make_llama), py::arg("config"), py::arg("tensors"), py::arg("inv_freq"))
        .def("forward", &forward_binding<PyLlama, KVCache, llama_forward>, py::arg("tokens"), py::arg("caches"), py::arg("all_logits") = true,
             py::arg("observers") = nullptr,
             "Run tokens (B, T) through the model, appending to the B caches; logits (B, T, V) or (B, V).")
        .def("forward_layers", &forward_layers_binding<PyLlama, KVCache, llama_layers>, py::arg("hidden"),
             py::arg("caches"), py::arg("start"), py::arg("stop"), py::arg("observers") = nullptr,
             "Layers [start, stop) on hidden states (B, T, D) at the caches' positions (len not advanced).")
        .def_property_readonly("vocab_size", [](const PyLlama& m) { return m.cfg.vocab_size; })
        .def_property_readonly("max_seq_len", [](const PyLlama& m) { return m.cfg.max_seq_len; })
        .def("set_kv_cache", [](PyLlama& m, int bits, float clip, bool hadamard) {
            QUELLM_CHECK(bits == 0 || bits == 4 || bits == 8, "KV cache bits must be 0 (float32), 4 or 8, got ", bits);
            QUELLM_CHECK(clip > 0.0f && clip <= 1.0f, "KV cache clip ratio must lie in (0, 1], got ", clip);
            const int64_t hd = m.cfg.head_dim;
            QUELLM_CHECK(!hadamard || (hd & (hd - 1)) == 0, "KV Hadamard rotation needs a power-of-two head_dim, got ", hd);
            m.cfg.kv = KvQuant{bits, clip, hadamard};
        }, py::arg("bits"), py::arg("clip") = 1.0f, py::arg("hadamard") = false,
           "KV cache format for caches made from now on: f32 (bits 0) or asymmetric int8/int4 per (token, head).");
    py::class_<KVCache>(m, "KVCache", "Keys (after RoPE) and values of one sequence, every layer.")
        .def(py::init([](const PyLlama& model, int64_t capacity, int64_t n_layers) {
                 return new KVCache(model.cfg, capacity, n_layers);
             }),
             py::arg("model"), py::arg("capacity"), py::arg("n_layers") = 0,
             "Cache for every layer (n_layers 0) or a run of n_layers layers (forward_layers).")
        .def_readonly("n_layers", &KVCache::n_layers)
        .def_readonly("capacity", &KVCache::capacity)
        .def_property_readonly("len", [](const KVCache& c) { return c.len; })
        .def("reset", [](KVCache& c) { c.len = 0; })
        .def("truncate", [](KVCache& c, int64_t n) {
            QUELLM_CHECK(n >= 0 && n <= c.len, "truncate: n must be in [0, ", c.len, "], got ", n);
            c.len = n;
        }, py::arg("n"))
        .def_property_readonly("bits", [](const KVCache& c) { return c.kv.bits; })
        .def_property_readonly("nbytes", [](const KVCache& c) {
            return 4 * (c.k.size() + c.v.size() + c.kp.size() + c.vp.size()) + c.kc.size() + c.vc.size();
        })
        .def("keys", [](const KVCache& c, int64_t layer) { return kv_read(c, layer, false); }, py::arg("layer"),
             "Keys of layer `layer` (len, n_kv, head_dim), after RoPE (and rotation), dequantized.")
        .def("values", [](const KVCache& c, int64_t layer) { return kv_read(c, layer, true); }, py::arg("layer"));

    py::class_<PyMamba, std::shared_ptr<PyMamba>>(m, "MambaModel",
        "Mamba-1 runtime over float32 weight arrays (HF tensor names); see quellm.models.mamba.")
        .def(py::init(&make_mamba), py::arg("config"), py::arg("tensors"))
        .def("forward", &forward_binding<PyMamba, MambaState, mamba_forward>, py::arg("tokens"), py::arg("states"), py::arg("all_logits") = true,
             py::arg("observers") = nullptr,
             "Run tokens (B, T) through the model, advancing the B states; logits (B, T, V) or (B, V).")
        .def("forward_layers", &forward_layers_binding<PyMamba, MambaState, mamba_layers>, py::arg("hidden"),
             py::arg("states"), py::arg("start"), py::arg("stop"), py::arg("observers") = nullptr,
             "Layers [start, stop) on hidden states (B, T, D) (len not advanced).")
        .def_property_readonly("vocab_size", [](const PyMamba& m) { return m.cfg.vocab_size; });
    py::class_<MambaState>(m, "MambaState", "Conv and SSM state of one sequence, every layer.")
        .def(py::init([](const PyMamba& model, int64_t n_layers) { return new MambaState(model.cfg, n_layers); }),
             py::arg("model"), py::arg("n_layers") = 0, "State for every layer (n_layers 0) or a run of n_layers layers.")
        .def_readonly("n_layers", &MambaState::n_layers)
        .def_property_readonly("len", [](const MambaState& s) { return s.len; })
        .def("reset", [](MambaState& s) {
            s.len = 0;
            std::fill(s.conv.begin(), s.conv.end(), 0.0f);
            std::fill(s.ssm.begin(), s.ssm.end(), 0.0f);
        })
        .def("conv_state", [](const MambaState& s, const PyMamba& m, int64_t layer) {
            const int64_t Di = m.cfg.d_inner, K1 = m.cfg.d_conv - 1;
            QUELLM_CHECK(s.conv.size() == size_t(s.n_layers * Di * K1), "conv_state: the state belongs to another model");
            QUELLM_CHECK(layer >= 0 && layer < s.n_layers, "conv_state: layer out of range");
            py::array_t<float> out({Di, K1});
            std::copy_n(s.conv.data() + layer * Di * K1, Di * K1, out.mutable_data());
            return out;
        }, py::arg("model"), py::arg("layer"), "(d_inner, conv_kernel - 1) newest pre-conv inputs, oldest first")
        .def("ssm_state", [](const MambaState& s, const PyMamba& m, int64_t layer) {
            const int64_t Di = m.cfg.d_inner, Ns = m.cfg.d_state;
            QUELLM_CHECK(s.ssm.size() == size_t(s.n_layers * Di * Ns), "ssm_state: the state belongs to another model");
            QUELLM_CHECK(layer >= 0 && layer < s.n_layers, "ssm_state: layer out of range");
            py::array_t<float> out({Di, Ns});
            std::copy_n(s.ssm.data() + layer * Di * Ns, Di * Ns, out.mutable_data());
            return out;
        }, py::arg("model"), py::arg("layer"));

    py::class_<Observers>(m, "Observers", "Per-channel activation statistics at every quantization point.")
        .def(py::init<int64_t, bool>(), py::arg("n_layers"), py::arg("xtx") = false)
        .def_readonly("n_layers", &Observers::n_layers)
        .def_static("kinds", [] {
            std::vector<std::string> v;
            for (int k = 0; k < OBS_NUM_KINDS; ++k) v.emplace_back(obs_kind_name(k));
            return v;
        })
        .def("stats", [](const Observers& o, int64_t layer, int kind) -> py::object {
            QUELLM_CHECK(layer >= 0 && layer <= o.n_layers && kind >= 0 && kind < OBS_NUM_KINDS, "stats: bad point");
            const ChannelStats& s = o.stats[size_t(layer * OBS_NUM_KINDS + kind)];
            if (s.channels == 0) return py::none();
            py::dict d;
            const int64_t C = s.channels;
            d["count"] = s.count;
            d["absmax"] = py::array_t<float>(C, s.absmax.data());
            d["sum"] = py::array_t<double>(C, s.sum.data());
            d["sum2"] = py::array_t<double>(C, s.sum2.data());
            d["sum3"] = py::array_t<double>(C, s.sum3.data());
            d["sum4"] = py::array_t<double>(C, s.sum4.data());
            if (!s.xtx.empty()) d["xtx"] = py::array_t<double>({C, C}, s.xtx.data());
            d["nonfinite"] = s.nonfinite;
            d["bad_row"] = s.bad_row;
            d["bad_channel"] = s.bad_channel;
            return std::move(d);
        }, py::arg("layer"), py::arg("kind"));

    // ---- f16 / bf16 conversions (the helpers every kernel uses for half-precision I/O) -------
    m.def("f32_to_f16_bits", &map_array<uint16_t, float, f32_to_f16>, py::arg("x"),
          "Round f32 to IEEE f16 (RNE); returns the bit patterns as uint16.");
    m.def("f32_to_bf16_bits", &map_array<uint16_t, float, f32_to_bf16>, py::arg("x"),
          "Round f32 to bfloat16 (RNE, NaN stays NaN); returns the bit patterns as uint16.");
    m.def("f16_bits_to_f32", &map_array<float, uint16_t, f16_to_f32>, py::arg("bits"));
    m.def("bf16_bits_to_f32", &map_array<float, uint16_t, bf16_to_f32>, py::arg("bits"));
}
