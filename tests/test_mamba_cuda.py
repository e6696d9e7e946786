"""CUDA Mamba conv and selective scan against the numpy reference (skipped without a GPU)."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest

from quellm.reference import mamba_conv_sequence, mamba_scan_step, silu, softplus


def scan_reference(u, dt, bc, A, D, z, h0, softplus_dt=True):
    B, T, Di = u.shape
    N = bc.shape[-1] // 2
    h = h0.astype(np.float64).copy()
    y = np.zeros((B, T, Di))
    d = softplus(dt.astype(np.float32)).astype(np.float64) if softplus_dt else dt.astype(np.float64)
    for t in range(T):
        Bt, Ct = bc[:, t, :N].astype(np.float64), bc[:, t, N:].astype(np.float64)
        h = np.exp(d[:, t, :, None] * A[None]) * h + (d[:, t] * u[:, t])[:, :, None] * Bt[:, None, :]
        y[:, t] = (h * Ct[:, None, :]).sum(-1) + D * u[:, t]
    if z is not None:
        y = y * silu(z.astype(np.float32))
    return y.astype(np.float32), h


def make_scan_inputs(B, T, Di, N, np_dt):
    rng = np.random.default_rng(B * T + Di)
    u = rng.standard_normal((B, T, Di)).astype(np_dt)
    dt = (rng.standard_normal((B, T, Di)) - 2).astype(np_dt)
    bc = rng.standard_normal((B, T, 2 * N)).astype(np_dt)
    z = rng.standard_normal((B, T, Di)).astype(np_dt)
    A = -np.exp(rng.standard_normal((Di, N))).astype(np.float32)
    D = rng.standard_normal(Di).astype(np.float32)
    h0 = (rng.standard_normal((B, Di, N)) * 0.1).astype(np.float32)
    return u, dt, bc, z, A, D, h0


def test_scan_reference_matches_step_reference():
    """The whole-sequence reference used below agrees with quellm.reference's step function."""
    u, dt, bc, z, A, D, h0 = make_scan_inputs(2, 9, 12, 4, np.float32)
    y, h = scan_reference(u, dt, bc, A, D, None, h0)
    hs = h0
    for t in range(u.shape[1]):
        hs, yt = mamba_scan_step(hs, u[:, t], softplus(dt[:, t]), A, bc[:, t, :4], bc[:, t, 4:], D)
        np.testing.assert_allclose(y[:, t], yt, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(h, hs, rtol=1e-5, atol=1e-7)


def conv_reference(xs, w, bias):
    """u = silu(conv) and the K-1 newest inputs (oldest first) per channel, from a zero state."""
    B, T, Di = xs.shape
    K = w.shape[1]
    want, _ = mamba_conv_sequence(xs, w, bias, np.zeros((B, Di, K), np.float32))
    window = np.concatenate([np.zeros((B, K - 1, Di), np.float32), xs], axis=1)
    return silu(want), window[:, window.shape[1] - (K - 1):, :].transpose(0, 2, 1)


@pytest.mark.cuda
@pytest.mark.parametrize("B,T,Di,N", [(1, 1, 8, 16), (2, 37, 64, 16), (3, 5, 33, 4), (1, 300, 16, 64)])
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_scan_matches_reference(B, T, Di, N, dtype):
    from quellm import cuda

    np_dt = np.float32 if dtype == "float32" else ml_dtypes.bfloat16
    u, dt, bc, z, A, D, h0 = make_scan_inputs(B, T, Di, N, np_dt)
    want_y, want_h = scan_reference(u.astype(np.float32), dt, bc, A, D, z, h0)
    state = cuda.to_device(h0)
    y = cuda.to_host(cuda.mamba_scan(*(cuda.to_device(a) for a in (u, dt, bc, A, D, z)), state)).astype(np.float32)
    tol = 1e-4 if dtype == "float32" else 2e-2
    np.testing.assert_allclose(y, want_y, rtol=tol, atol=tol * max(1, np.abs(want_y).max()))
    np.testing.assert_allclose(cuda.to_host(state), want_h, rtol=1e-4, atol=1e-5)


def test_conv_reference_state():
    xs = np.arange(2 * 5 * 3, dtype=np.float32).reshape(2, 5, 3)
    _, st = conv_reference(xs, np.ones((3, 4), np.float32), None)
    np.testing.assert_array_equal(st, xs[:, -3:, :].transpose(0, 2, 1))
    _, st = conv_reference(xs[:, :1], np.ones((3, 4), np.float32), None)
    np.testing.assert_array_equal(st[:, :, :2], 0)


@pytest.mark.cuda
@pytest.mark.parametrize("B,T,Di,K", [(1, 1, 8, 4), (2, 19, 40, 4), (1, 3, 7, 3)])
def test_conv_matches_reference_and_carries_state(B, T, Di, K):
    from quellm import cuda

    rng = np.random.default_rng(T)
    xs = rng.standard_normal((B, T, Di)).astype(np.float32)
    w = rng.standard_normal((Di, K)).astype(np.float32)
    bias = rng.standard_normal(Di).astype(np.float32)
    state = cuda.to_device(np.zeros((B, Di, K - 1), np.float32))
    got = cuda.to_host(cuda.mamba_conv(cuda.to_device(xs), cuda.to_device(w), cuda.to_device(bias), state))
    want_u, want_state = conv_reference(xs, w, bias)
    np.testing.assert_allclose(got, want_u, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(cuda.to_host(state), want_state)
