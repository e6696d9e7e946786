"""FWHT kernels against the dense Hadamard matrix built by Kronecker products in numpy.

C++ paths (scalar reference, AVX2, AVX-512, any thread count) must agree with each other bit for
bit — every butterfly and every ±1 product happens in the same order — and with the float64
dense product to f32 precision.
"""

from __future__ import annotations

import math

import ml_dtypes
import numpy as np
import pytest
from conftest import assert_bit_exact, assert_nmse
from hypothesis import given
from hypothesis import strategies as st

import quellm
from quellm.fwht import fwht, fwht_cpp_ref
from quellm.hadamard import decompose, factor_orders, fwht_sizes, hadamard_factor

MODEL_SIZES = [576, 960, 1536, 2560, 2816, 4864, 5120, 5632, 11008, 13824, 14336, 18944, 27648, 28672]
SMALL_SIZES = fwht_sizes(4096)
HARD_SIZES = [1, 2, 4, 12, 16, 24, 48, 128, 32768, 65536]


def sylvester(p: int) -> np.ndarray:
    h = np.ones((1, 1))
    while h.shape[0] < p:
        h = np.kron(np.array([[1.0, 1.0], [1.0, -1.0]]), h)
    return h


def dense(n: int) -> np.ndarray:
    """H_n = kron(H_m, H_p), built here independently of the kernel code."""
    m, p = decompose(n)
    hm = hadamard_factor(m).astype(np.float64) if m > 1 else np.ones((1, 1))
    return np.kron(hm, sylvester(p))


def reference(x: np.ndarray, scale: float | None = None) -> np.ndarray:
    n = x.shape[-1]
    s = 1 / math.sqrt(n) if scale is None else scale
    return (x.astype(np.float64) @ dense(n).T) * s


@pytest.mark.parametrize("m", factor_orders())
def test_factors_are_hadamard(m):
    h = hadamard_factor(m).astype(np.int64)
    assert set(np.unique(h)) <= {-1, 1}
    assert np.array_equal(h @ h.T, m * np.eye(m, dtype=np.int64))


def test_model_sizes_supported():
    for n in MODEL_SIZES:
        m, p = decompose(n)
        assert m * p == n and p & (p - 1) == 0
        assert n in fwht_sizes(n)
    assert all(2**k in fwht_sizes(2**16) for k in range(17))


@pytest.mark.parametrize("n", [7, 137, 1000, 2310, 840])
def test_unsupported_size_names_neighbours(n):
    x = np.zeros((2, n), np.float32)
    with pytest.raises(ValueError, match="supported") as e:
        fwht(x)
    below = [s for s in fwht_sizes(n) if s < n]
    assert str(below[-1]) in str(e.value)


@given(n=st.sampled_from(SMALL_SIZES), rows=st.integers(0, 5), seed=st.integers(0, 2**32 - 1))
def test_matches_dense_matrix(n, rows, seed):
    x = np.random.default_rng(seed).standard_normal((rows, n)).astype(np.float32)
    assert_nmse(fwht(x), reference(x), 1e-12, f"n={n}")
    assert_bit_exact(fwht(x), fwht_cpp_ref(x), f"n={n}")


@pytest.mark.parametrize("n", sorted(set(HARD_SIZES + MODEL_SIZES)))
def test_every_isa_and_thread_count_bit_exact(n, isa, threads):
    x = np.random.default_rng(n).standard_normal((3, n)).astype(np.float32) * 10
    want = fwht_cpp_ref(x)
    assert_bit_exact(fwht(x), want, f"n={n} {isa} threads={threads}")
    if n <= 4096:
        assert_nmse(want, reference(x), 1e-12, f"n={n}")


@given(n=st.sampled_from(SMALL_SIZES), seed=st.integers(0, 2**32 - 1))
def test_twice_is_identity_and_norm_preserved(n, seed):
    x = np.random.default_rng(seed).standard_normal((2, n)).astype(np.float32)
    y = fwht(x)
    np.testing.assert_allclose(np.linalg.norm(y, axis=-1), np.linalg.norm(x, axis=-1), rtol=1e-5)
    back = fwht(y, inverse=True)
    np.testing.assert_allclose(back, x, atol=1e-5 * max(1.0, float(np.abs(x).max())))
    if n & (n - 1) == 0:  # H_n is symmetric: forward twice is the identity too
        np.testing.assert_array_equal(fwht(y, inverse=True), fwht(y))


def test_inverse_is_transpose():
    for n in (12, 40, 172 * 2, 1536):
        x = np.random.default_rng(n).standard_normal((2, n)).astype(np.float32)
        want = (x.astype(np.float64) @ dense(n)) / math.sqrt(n)
        assert_nmse(fwht(x, inverse=True), want, 1e-12, f"n={n}")


@given(shape=st.lists(st.integers(0, 3), min_size=0, max_size=3), n=st.sampled_from([1, 8, 12, 64, 576]))
def test_leading_shapes(shape, n):
    x = np.random.default_rng(0).standard_normal((*shape, n)).astype(np.float32)
    y = fwht(x)
    assert y.shape == x.shape and y.dtype == np.float32
    assert_nmse(y.reshape(-1, n), reference(x.reshape(-1, n)), 1e-12)


@pytest.mark.parametrize("dtype", [np.float16, ml_dtypes.bfloat16, np.float64])
def test_other_input_dtypes_computed_in_f32(dtype):
    x = np.random.default_rng(1).standard_normal((4, 1536)).astype(dtype)
    x32 = x.astype(np.float32)
    assert_bit_exact(fwht(x), fwht(x32))


def test_non_contiguous_input():
    x = np.random.default_rng(2).standard_normal((6, 2 * 256)).astype(np.float32)
    view = x[::2, ::2]
    assert_bit_exact(fwht(view), fwht(np.ascontiguousarray(view)))
    before = x.copy()
    fwht(x)
    assert_bit_exact(x, before)  # the input is never modified


def test_out_and_in_place():
    x = np.random.default_rng(3).standard_normal((5, 960)).astype(np.float32)
    want = fwht(x)
    out = np.empty_like(x)
    assert fwht(x, out=out) is out
    assert_bit_exact(out, want)
    y = x.copy()
    assert fwht(y, out=y) is y
    assert_bit_exact(y, want)
    # overlapping but not identical buffers: still correct
    buf = np.zeros((6, 960), np.float32)
    buf[:5] = x
    fwht(buf[:5], out=buf[1:])
    assert_bit_exact(buf[1:], want)


@pytest.mark.parametrize("bad", [np.zeros((5, 960), np.float64), np.zeros((4, 960), np.float32),
                                 np.zeros((960, 5), np.float32).T])
def test_bad_out(bad):
    x = np.zeros((5, 960), np.float32)
    with pytest.raises(ValueError, match="out"):
        fwht(x, out=bad)


@pytest.mark.parametrize("x", [np.float32(1.0), np.zeros((2, 4), np.int32), np.zeros((2, 4), np.complex64)])
def test_bad_input(x):
    with pytest.raises(ValueError):
        fwht(x)


def test_scale_argument():
    x = np.random.default_rng(4).standard_normal((3, 2816)).astype(np.float32)
    assert_nmse(fwht(x, scale=1.0), reference(x, 1.0), 1e-12)
    assert_nmse(fwht(x, scale=0.5), reference(x, 0.5), 1e-12)


EDGE_VALUES = [np.nan, np.inf, -np.inf, 0.0, -0.0, 3e38, -3e38, 1e-45, 1e-40]


@pytest.mark.parametrize("n", [16, 64, 12 * 16, 1024])
def test_special_values_propagate_like_dense(n, isa):
    """NaN and ±inf inputs give NaN/inf exactly where the dense product does (every output
    depends on every input). Finite inputs whose partial sums overflow f32 are out of scope."""
    rng = np.random.default_rng(n)
    x = rng.standard_normal((len(EDGE_VALUES) + 2, n)).astype(np.float32)
    for i, v in enumerate(EDGE_VALUES):
        x[i, rng.integers(n)] = v
    x[-2, :3] = [np.inf, np.inf, -np.inf]  # opposite infinities: NaN where their signs cancel
    x[-1] = 0.0
    with np.errstate(over="ignore", invalid="ignore"):
        want = (x.astype(np.float64) @ dense(n).T) / math.sqrt(n)
    got = fwht(x)
    assert np.array_equal(np.isnan(got), np.isnan(want))
    assert np.array_equal(np.isposinf(got), np.isposinf(want))
    assert np.array_equal(np.isneginf(got), np.isneginf(want))
    fin = np.isfinite(want)
    assert_nmse(got[fin], want[fin], 1e-12)


# ---- CUDA: the same cases on the device (skipped without a GPU) -------------------------------

CUDA_SIZES = sorted(set(HARD_SIZES + MODEL_SIZES + [3 * 64, 20 * 8]))


@pytest.mark.cuda
@pytest.mark.parametrize("n", CUDA_SIZES)
@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
def test_cuda_matches_cpu(n, dtype):
    from quellm import cuda

    np_dt = {"float32": np.float32, "float16": np.float16, "bfloat16": ml_dtypes.bfloat16}[dtype]
    x = np.random.default_rng(n).standard_normal((5, n)).astype(np_dt)
    want = fwht(x)  # CPU, computed in f32 from the same rounded inputs
    got = cuda.to_host(cuda.fwht(cuda.to_device(x), out_dtype="float32"))
    assert_nmse(got, want, 1e-12, f"cuda n={n} {dtype}")
    # half-precision output: error within 2x that of rounding the f32 reference
    got_lp = cuda.to_host(cuda.fwht(cuda.to_device(x))).astype(np.float32)
    if dtype != "float32":
        exact = reference(x.astype(np.float32))
        err = np.max(np.abs(got_lp - exact))
        ref_err = np.max(np.abs(want.astype(np_dt).astype(np.float32) - exact))
        assert err <= 2 * ref_err + 1e-6


@pytest.mark.cuda
def test_cuda_in_place_inverse_and_batch_zero():
    from quellm import cuda

    x = np.random.default_rng(0).standard_normal((3, 4, 1536)).astype(np.float32)
    d = cuda.to_device(x)
    cuda.fwht(d, out=d)
    cuda.fwht(d, out=d, inverse=True)
    np.testing.assert_allclose(cuda.to_host(d), x, atol=1e-5)
    empty = cuda.to_device(np.zeros((0, 64), np.float32))
    assert cuda.to_host(cuda.fwht(empty)).shape == (0, 64)


@pytest.mark.cuda
def test_cuda_special_values():
    from quellm import cuda

    x = np.random.default_rng(0).standard_normal((3, 1024)).astype(np.float32)
    x[0, 5] = np.nan
    x[1, :2] = [np.inf, -np.inf]
    got = cuda.to_host(cuda.fwht(cuda.to_device(x)))
    want = fwht(x)
    assert np.array_equal(np.isnan(got), np.isnan(want))
    assert np.array_equal(np.isinf(got), np.isinf(want))


def test_cuda_unavailable_is_a_clear_error():
    from quellm import cuda

    if cuda.available():
        pytest.skip("a GPU is available")
    with pytest.raises(ValueError, match="CUDA is not available"):
        cuda.to_device(np.zeros(4, np.float32))
