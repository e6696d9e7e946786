// bindings_formats.cpp — Python bindings of the formats kernels (part of quellm._core).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

namespace py = pybind11;

void bind_formats(py::module_& m) {}
