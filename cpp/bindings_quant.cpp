// bindings_quant.cpp — Python bindings of the quant kernels (part of quellm._core).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

namespace py = pybind11;

void bind_quant(py::module_& m) {}
