"""f32 linear layer y = x·Wᵀ + b against a float64 numpy product, every ISA and thread count."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import assert_nmse
from hypothesis import given
from hypothesis import strategies as st

from quellm import _core

SHAPES = [(1, 1, 1), (0, 5, 3), (3, 0, 4), (1, 576, 1536), (5, 1100, 33), (70, 1537, 9), (130, 513, 17), (4, 16, 4)]


def reference(x, w, b=None):
    y = x.astype(np.float64) @ w.T.astype(np.float64)
    return y if b is None else y + b


def assert_dot_error_bound(y, x, w):
    """Each output within the f32 summation bound K·eps·Σ|x||w| (cancellation-proof)."""
    K = x.shape[1]
    bound = (K + 2) * 2.0**-24 * (np.abs(x).astype(np.float64) @ np.abs(w).T.astype(np.float64))
    err = np.abs(y - reference(x, w))
    assert np.all(err <= bound + 1e-30), f"max error/bound {np.max(err / (bound + 1e-30)):.3g}"


@pytest.mark.parametrize("M,K,N", SHAPES)
def test_matches_float64(M, K, N, isa, threads):
    rng = np.random.default_rng(M * 1000 + K)
    x = rng.standard_normal((M, K)).astype(np.float32)
    w = rng.standard_normal((N, K)).astype(np.float32)
    b = rng.standard_normal(N).astype(np.float32)
    y = _core.matmul_f32(x, w, b)
    assert y.shape == (M, N) and y.dtype == np.float32
    assert_nmse(y, reference(x, w, b), 1e-10)
    assert_dot_error_bound(_core.matmul_f32(x, w), x, w)


@given(M=st.integers(1, 9), K=st.integers(1, 600), N=st.integers(1, 13), seed=st.integers(0, 2**31))
def test_random_shapes(M, K, N, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((M, K)).astype(np.float32)
    w = rng.standard_normal((N, K)).astype(np.float32)
    assert_dot_error_bound(_core.matmul_f32(x, w), x, w)
    assert_dot_error_bound(_core.matmul_f32(x, w, ref=True), x, w)


@given(M=st.integers(16, 45), K=st.integers(1, 700), N=st.integers(1, 80), seed=st.integers(0, 2**31))
def test_packed_shapes(M, K, N, seed):
    """From 16 rows the outer-product kernel runs: row panels of 14 (AVX-512) / 6 (AVX2), column
    strips of 32 / 16 and K blocks of 256, each with partial tails here."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((M, K)).astype(np.float32)
    w = rng.standard_normal((N, K)).astype(np.float32)
    b = rng.standard_normal(N).astype(np.float32)
    assert_dot_error_bound(_core.matmul_f32(x, w), x, w)
    y = _core.matmul_f32(x, w, b)  # the bias joins the first K block's sum: one more rounding
    bound = (K + 3) * 2.0**-24 * (np.abs(x).astype(np.float64) @ np.abs(w).T.astype(np.float64) + np.abs(b))
    assert np.all(np.abs(y - reference(x, w, b)) <= bound)
    np.testing.assert_array_equal(_core.matmul_f32(x, w, b), y)  # deterministic


def test_packed_special_values(isa, threads):
    """NaN and Inf propagate through the packed kernel as through a float dot product."""
    rng = np.random.default_rng(5)
    x = rng.standard_normal((20, 300)).astype(np.float32)
    w = rng.standard_normal((40, 300)).astype(np.float32)
    x[3, 7], x[5, 290], w[33, 10] = np.nan, np.inf, np.inf
    y = _core.matmul_f32(x, w)
    with np.errstate(invalid="ignore"):
        want = x.astype(np.float64) @ w.T.astype(np.float64)
    np.testing.assert_array_equal(np.isnan(y), np.isnan(want))
    np.testing.assert_array_equal(np.isinf(y), np.isinf(want))
    fin = np.isfinite(want)
    assert np.abs(y[fin] - want[fin]).max() <= 1e-3 * np.abs(want[fin]).max()


def test_bad_shapes():
    x = np.zeros((2, 3), np.float32)
    with pytest.raises(ValueError, match="K"):
        _core.matmul_f32(x, np.zeros((4, 5), np.float32))
    with pytest.raises(ValueError, match="float32"):
        _core.matmul_f32(x.astype(np.float64), np.zeros((4, 3), np.float32))
    with pytest.raises(ValueError, match="shape"):
        _core.matmul_f32(x, np.zeros((4, 3), np.float32), np.zeros(3, np.float32))
