// bindings_util.h — argument helpers shared by the bindings_*.cpp files (pybind11 only).
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <stdexcept>
#include <string>

namespace quellm {

template <typename T>
using carray = pybind11::array_t<T, pybind11::array::c_style | pybind11::array::forcecast>;

// A float32, C-contiguous array, or ValueError naming the argument: for outputs and for inputs
// the Python layer has already converted, so nothing is copied behind the caller's back.
inline const float* f32_data(const pybind11::array& a, const char* name) {
    if (!pybind11::isinstance<pybind11::array_t<float>>(a) || !(a.flags() & pybind11::array::c_style))
        throw std::invalid_argument(std::string(name) + ": expected a C-contiguous float32 array, got dtype " +
                                    std::string(pybind11::str(a.dtype())));
    return static_cast<const float*>(a.data());
}

inline float* f32_mutable(pybind11::array& a, const char* name) {
    f32_data(a, name);
    if (!a.writeable()) throw std::invalid_argument(std::string(name) + ": array is read-only");
    return static_cast<float*>(a.mutable_data());
}

// An optional float32 (n,) vector argument: nullptr for None.
inline const float* f32_optional(const pybind11::object& o, pybind11::array& hold, const char* name, int64_t n) {
    if (o.is_none()) return nullptr;
    hold = pybind11::array::ensure(o);
    const float* p = f32_data(hold, name);
    if (hold.ndim() != 1 || hold.shape(0) != n)
        throw std::invalid_argument(std::string(name) + ": expected shape (" + std::to_string(n) + ",)");
    return p;
}

}  // namespace quellm
