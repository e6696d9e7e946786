"""Determinism: every kernel gives the same answer at every ISA level and with 1, 2 and 3 threads.

* Integer kernels (``gemm_int`` on int4 / int8 / MXFP4 / OVP4 weights, the activation
  quantizers, QuantLinear's integer pairs): bit for bit across all (ISA, threads) runs.
* Float kernels (FWHT, the f32 GEMM, the weight-only GEMMs): bit for bit across thread counts at
  one ISA (threads split rows or output tiles, never a sum), and across ISA levels (SIMD sums add
  in another order) within 1e-6 relative to the size of what is summed, ``|x| @ |W|.T`` per
  output: the scale of a reordered float32 sum's error (1e-6 of ``max |y|`` is not: measured
  1.5e-6 for K = 256).
* Forwards (float, and quantized with the W8A8, W4A8, W4A16 recipes): bit for bit across thread
  counts at every ISA. Across ISA levels the float parts (norms, attention, f32 GEMMs) round
  differently, by float32 precision amplified through the layers (2e-5 of the largest logit here,
  the same size as the scalar path's own error against a float64 reference), so the check is:
  each ISA's error against the numpy float64 reference (fake-quant for quantized models) is at
  most twice the scalar path's, plus 1e-6 of the largest logit.

Each case runs the kernel under every (ISA, threads) pair; the previous ISA and thread count
are restored afterwards.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

import numpy as np
import pytest
from conftest import TINY_LLAMA, assert_bit_exact

import quellm
from quellm import _core, formats, recipes
from quellm.quant import QuantLinear, supported_pairs

RUNS = list(itertools.product(quellm.isa_levels(), [1, 2, 3]))
FLOAT_RTOL = 1e-6


def across_runs(fn: Callable[[], object]) -> dict[tuple[str, int], list[np.ndarray]]:
    """``fn()`` under every (ISA, threads) pair; its result(s) as a list of arrays per run."""
    isa0, th0 = quellm.isa(), quellm.num_threads()
    out = {}
    try:
        for isa, th in RUNS:
            quellm.set_isa(isa)
            quellm.set_num_threads(th)
            r = fn()
            out[(isa, th)] = [np.array(a, copy=True) for a in (r if isinstance(r, (tuple, list)) else (r,))]
    finally:
        quellm.set_isa(isa0)
        quellm.set_num_threads(th0)
    return out


def assert_integer_deterministic(fn, what):
    runs = across_runs(fn)
    base = runs[("scalar", 1)]
    for key, res in runs.items():
        for i, (got, want) in enumerate(zip(res, base)):
            assert_bit_exact(got, want, f"{what} [{i}] at {key} vs scalar/1 thread")


def assert_threads_bit_exact(runs, what):
    for isa in quellm.isa_levels():
        for th in (2, 3):
            for i, (got, want) in enumerate(zip(runs[(isa, th)], runs[(isa, 1)])):
                assert_bit_exact(got, want, f"{what} [{i}] {isa}: {th} threads vs 1")


def assert_float_deterministic(fn, what, scales):
    """Bit for bit across thread counts; across ISA levels ``|y - y_scalar| <= 1e-6 * scale``
    with ``scales[i]`` the per-element size of the i-th result's sum (broadcast)."""
    runs = across_runs(fn)
    assert_threads_bit_exact(runs, what)
    base = runs[("scalar", 1)]
    for key, res in runs.items():
        for i, (got, want) in enumerate(zip(res, base)):
            err = np.abs(np.asarray(got, np.float64) - np.asarray(want, np.float64))
            bad = err > FLOAT_RTOL * np.asarray(scales[i], np.float64)
            assert not bad.any(), (f"{what} [{i}] at {key}: error {err[bad].max():.3g} above {FLOAT_RTOL} "
                                   "x the size of the sum")


def assert_forward_deterministic(fn, ref, what):
    """Forwards: bit for bit across threads; per ISA, error against ``ref`` (float64) at most
    2x the scalar path's + 1e-6 of the largest logit. ``fn()``'s first result is compared."""
    runs = across_runs(fn)
    assert_threads_bit_exact(runs, what)
    ref = np.asarray(ref, np.float64)
    tol = FLOAT_RTOL * float(np.abs(ref).max())
    err_scalar = float(np.abs(runs[("scalar", 1)][0] - ref).max())
    for isa in quellm.isa_levels():
        err = float(np.abs(runs[(isa, 1)][0] - ref).max())
        assert err <= 2 * err_scalar + tol, f"{what} at {isa}: error {err:.3g} vs scalar {err_scalar:.3g}"


def sum_size(x, w):
    """``|x| @ |w|.T`` in float64: per output, the size of the terms a dot product adds."""
    return np.abs(np.asarray(x, np.float64)) @ np.abs(np.asarray(w, np.float64)).T


# ---- integer kernels ------------------------------------------------------------------------

def _int4_codes(q):
    u = (q.astype(np.int16) & 0xF).astype(np.uint8)
    return (u[:, 0::2] | (u[:, 1::2] << 4)).astype(np.uint8)


def _weights(kind, N, K, rng):
    if kind == "int4":
        return _core.gemm_w4_repack(_int4_codes(rng.integers(-8, 8, (N, K))), rng.uniform(1e-3, 0.1, (N, K // 32)).astype(np.float32))
    if kind == "int8":
        return _core.gemm_w8_repack(rng.integers(-128, 128, (N, K)).astype(np.int8), rng.uniform(1e-3, 0.1, (N, K // 64)).astype(np.float32))
    if kind == "mxfp4":
        p = formats.get("mxfp4").encode(rng.standard_normal((N, K)).astype(np.float32))
        return _core.gemm_mx4_repack(p.codes, p.scales)
    p = formats.get("ovp4").encode((rng.standard_normal((N, K)) * np.where(rng.random((N, K)) < 0.05, 20, 1)).astype(np.float32))
    return _core.gemm_ovp4_repack(p.codes, p.scales.reshape(-1))


@pytest.mark.parametrize("kind", ["int4", "int8", "mxfp4", "ovp4"])
@pytest.mark.parametrize("M", [1, 5, 19])  # one row, a partial tile, several tiles plus a remainder
def test_gemm_int(kind, M):
    rng = np.random.default_rng(M)
    N, K = 37, 256
    w = _weights(kind, N, K, rng)
    qa = rng.integers(-127, 128, (M, K)).astype(np.int8)
    sa = rng.uniform(0.01, 1.0, M).astype(np.float32)
    bias = rng.standard_normal(N).astype(np.float32)
    assert_integer_deterministic(lambda: _core.gemm_int(qa, sa, w, bias), f"gemm_int {kind} M={M}")


@pytest.mark.parametrize("kind", ["int4", "mxfp4"])  # groups of 32: the MX block
@pytest.mark.parametrize("M", [1, 5, 19])
def test_gemm_mx8(kind, M):
    rng = np.random.default_rng(M)
    N, K = 37, 256
    w = _weights(kind, N, K, rng)
    qa = rng.integers(-229376, 229377, (M, K)).astype(np.int32)
    sa = rng.uniform(1e-6, 1.0, (M, K // 32)).astype(np.float32)
    bias = rng.standard_normal(N).astype(np.float32)
    assert_integer_deterministic(lambda: _core.gemm_mx8(qa, sa, w, bias), f"gemm_mx8 {kind} M={M}")


def test_activation_quantizers():
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((9, 256)) * np.exp(rng.standard_normal(256))).astype(np.float32)
    assert_integer_deterministic(lambda: _core.quantize_rows(x), "quantize_rows int8")
    assert_integer_deterministic(lambda: _core.quantize_rows(x, qmax=7, clip=0.9), "quantize_rows int4")
    assert_integer_deterministic(lambda: _core.quantize_rows_mxfp4(x), "quantize_rows_mxfp4")
    assert_integer_deterministic(lambda: _core.quantize_rows_mxfp8(x), "quantize_rows_mxfp8")
    assert_integer_deterministic(lambda: _core.quantize_rows_ovp4(x), "quantize_rows_ovp4")


INT_PAIRS = [p for p in supported_pairs() if p[1] != "none"]
WO_PAIRS = [p for p in supported_pairs() if p[1] == "none"]


def _layer(w_format, a_format, transform=None):
    rng = np.random.default_rng(1)
    N, K = 45, 256
    W = rng.standard_normal((N, K)).astype(np.float32)
    b = rng.standard_normal(N).astype(np.float32)
    group = None if w_format in ("f32", "ovp4") else (32 if {"mxfp4", "mxfp8"} & {w_format, a_format} else 64)
    ql = QuantLinear(W, b, w_format=w_format, a_format=a_format, group=group, transform=transform,
                     a_clip=0.9 if a_format == "int4" else 1.0)
    x = rng.standard_normal((11, K)).astype(np.float32)
    x[:, 7] *= 40
    return ql, x


@pytest.mark.parametrize("w_format, a_format", INT_PAIRS)
def test_quant_linear_integer_pairs(w_format, a_format):
    ql, x = _layer(w_format, a_format)
    # f32 input -> quantized activations -> exact integer GEMM -> the same epilogue everywhere
    assert_integer_deterministic(lambda: ql(x), f"QuantLinear {w_format}x{a_format}")


@pytest.mark.parametrize("w_format, a_format", WO_PAIRS)
def test_quant_linear_float_pairs(w_format, a_format):
    ql, x = _layer(w_format, a_format)
    size = sum_size(x, ql.dequantized_weight()) + np.abs(ql.to_tensors()["bias"])
    # 11 rows take the dequantized-panel path, 3 rows the in-register GEMV
    assert_float_deterministic(lambda: (ql(x), ql(x[:3])), f"QuantLinear {w_format}x{a_format}", [size, size[:3]])


# ---- float kernels --------------------------------------------------------------------------

@pytest.mark.parametrize("n", [64, 12 * 16, 1024])
def test_fwht(n):
    x = np.random.default_rng(n).standard_normal((13, n)).astype(np.float32)
    size = np.abs(x).sum(axis=1, keepdims=True) / np.sqrt(n)  # |H| is all ones, scaled 1/sqrt(n)
    assert_float_deterministic(lambda: quellm.fwht(x), f"fwht n={n}", [size])


@pytest.mark.parametrize("M", [1, 7, 40])
def test_matmul_f32(M):
    rng = np.random.default_rng(M)
    K, N = 300, 70
    x = rng.standard_normal((M, K)).astype(np.float32)
    w = rng.standard_normal((N, K)).astype(np.float32)
    b = rng.standard_normal(N).astype(np.float32)

    assert_float_deterministic(lambda: _core.matmul_f32(x, w, b), f"matmul_f32 M={M}", [sum_size(x, w) + np.abs(b)])


# ---- runtime forwards -----------------------------------------------------------------------

CONFIG = {**TINY_LLAMA, "hidden_size": 64, "intermediate_size": 128}


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    from conftest import random_tensors

    from quellm.io import save_checkpoint

    path = save_checkpoint(tmp_path_factory.mktemp("det") / "m", CONFIG, random_tensors(CONFIG, seed=3))
    return quellm.load(path)


TOKENS = np.arange(1, 24) % CONFIG["vocab_size"]


def test_float_forward(model):
    from quellm.reference import llama_forward

    ref, _ = llama_forward(model._tensors, model.config, TOKENS)
    assert_forward_deterministic(lambda: model.forward(TOKENS), ref, "float forward")


@pytest.mark.parametrize("recipe", [recipes.rtn(8, 8, None, w_clip=1.0), recipes.rtn(4, 8, 32, w_clip=1.0),
                                    recipes.rtn(4, 16, 32, sym=False, w_clip=1.0)], ids=lambda r: r.name)
def test_quantized_forward(model, recipe):
    from quellm.reference import llama_forward

    q = quellm.quantize(model, recipe)
    ref, _ = llama_forward(q._float_tensors, model.config, TOKENS,
                           linears={n: ql.simulate for n, ql in q.quant_layers.items()})

    def run():  # prefill, then a decode step that continues the state
        state = q.new_state(1, 32)
        return q.forward(TOKENS[None], state)[0], q.forward(TOKENS[None, :1], state)[0]

    assert_forward_deterministic(run, ref, f"quantized forward {recipe.name}")
