"""The device linear layer (cuda/gemm.cu, quellm.cuda.Linear) against the CPU QuantLinear.forward,
for every (weight × activation) pair, M in (1, 2, 3, 17, 512), odd N and K, f32 / f16 / bf16
activations, tensor-core / GEMV kernels and the SIMT references. Skipped without a GPU; the
arithmetic the kernels share with the CPU is tested in cpp/tests/test_kernels.cpp (gemm_hd_*).

Tolerances: integer-activation pairs without a transform are bit-exact (the device quantizes the
same values with the same helpers, sums integers exactly and folds groups in the CPU's order; f16 /
bf16 outputs are the CPU's f32 result rounded once). Float and weight-only kernels compute in
f16 / bf16 on the tensor cores: error bounded by a few units of that precision times Σ|x||w|.
With a Hadamard transform the device FWHT may round differently, which can move an activation
across a quantization step: bounded by a fraction of the output scale.
"""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest

import quellm
from quellm import _core
from quellm.errors import QuellmError
from quellm.quant import QuantLinear, _hadamard_rows, supported_pairs

PAIRS = supported_pairs()
NP_DT = {"float32": np.float32, "float16": np.float16, "bfloat16": ml_dtypes.bfloat16}
# relative to Σ|x||w| per output: two roundings to the activation dtype plus accumulation slack
FLOAT_TOL = {"float32": 1e-5, "float16": 4e-3, "bfloat16": 3e-2}


def group_for(w_format, a_format, default):
    if w_format in ("f32", "ovp4"):
        return None
    return 32 if "mxfp4" in (w_format, a_format) else default


def make_layer(w_format, a_format, N, K, group, transform=None, w_sym=True, seed=0):
    rng = np.random.default_rng(seed)
    W = rng.standard_normal((N, K)).astype(np.float32)
    b = rng.standard_normal(N).astype(np.float32)
    return QuantLinear(W, b, w_format=w_format, a_format=a_format, group=group, transform=transform, w_sym=w_sym,
                       a_clip=0.9 if a_format == "int4" else 1.0)


def run_device(ql, x, act, simt=False):
    from quellm import cuda

    lin = cuda.Linear(ql, act=act)
    _core.cuda_linear_force_simt(simt)
    try:
        y = cuda.to_host(lin(cuda.to_device(x.astype(NP_DT[act]))))
    finally:
        _core.cuda_linear_force_simt(False)
    return lin, y


def check(ql, x, act, simt, transform):
    lin, got = run_device(ql, x, act, simt)
    xr = x.astype(NP_DT[act]).astype(np.float32)  # what the device reads
    want = ql(xr)
    a_format = ql.spec.a_format
    assert got.shape == want.shape and got.dtype == NP_DT[act]
    got = got.astype(np.float32)
    if a_format != "none" and transform is None:
        np.testing.assert_array_equal(got, want.astype(NP_DT[act]).astype(np.float32))
    elif a_format != "none":
        scale = float(np.abs(want).max())
        assert float(np.abs(got - want).max()) <= 3e-2 * scale
    else:
        xt = _hadamard_rows(xr) if transform else xr  # what the weights multiply
        bound = np.abs(xt).astype(np.float64) @ np.abs(ql.dequantized_weight()).astype(np.float64).T + 1e-6
        err = np.abs(got.astype(np.float64) - want) / bound
        assert float(err.max()) <= FLOAT_TOL[act], f"{lin.kernel}: relative error {err.max()}"
    return lin


@pytest.mark.cuda
@pytest.mark.parametrize("w_format, a_format", PAIRS)
@pytest.mark.parametrize("M", [1, 2, 3, 17, 512])
@pytest.mark.parametrize("act", ["float32", "float16", "bfloat16"])
def test_matches_cpu(w_format, a_format, M, act):
    N, K = 45, 256
    ql = make_layer(w_format, a_format, N, K, group_for(w_format, a_format, 64), seed=M)
    x = np.random.default_rng(M + 1).standard_normal((M, K)).astype(np.float32)
    x[:, 7] *= 40
    lin = check(ql, x, act, False, None)
    if M in (3, 17):
        check(ql, x, act, True, None)
    want_name = {"float32": "f32", "float16": "f16", "bfloat16": "bf16"}[act] if w_format == "f32" else ql.kernel
    assert lin.kernel == want_name


@pytest.mark.cuda
@pytest.mark.parametrize("w_format, a_format", PAIRS)
@pytest.mark.parametrize("M", [1, 17])
def test_hadamard(w_format, a_format, M):
    N, K = 33, 384  # 384 = 12 · 32: H_12 ⊗ H_32
    ql = make_layer(w_format, a_format, N, K, group_for(w_format, a_format, 128), transform="hadamard", seed=M)
    x = np.random.default_rng(M).standard_normal((M, K)).astype(np.float32)
    check(ql, x, "float32", False, "hadamard")
    check(ql, x, "float16", False, "hadamard")


@pytest.mark.cuda
@pytest.mark.parametrize("M", [1, 3, 6, 512])
@pytest.mark.parametrize("act", ["float32", "float16", "bfloat16"])
@pytest.mark.parametrize("case", ["f32 odd K", "int8 odd K", "int4 asym", "int4 g8", "int8 g4 a8", "int4 a4 g64",
                                  "int4 a8 per-channel", "int8 a8 big"])
def test_shapes(case, M, act):
    """Odd K and N, small groups (SIMT fallback), asymmetric int4, large layers."""
    spec = {
        "f32 odd K": ("f32", "none", 37, 77, None, True),
        "int8 odd K": ("int8", "none", 19, 77, None, True),
        "int4 asym": ("int4", "none", 45, 256, 32, False),
        "int4 g8": ("int4", "none", 45, 96, 8, True),
        "int8 g4 a8": ("int8", "int8", 45, 96, 4, True),
        "int4 a4 g64": ("int4", "int4", 47, 512, 64, True),
        "int4 a8 per-channel": ("int4", "int8", 45, 576, None, True),
        "int8 a8 big": ("int8", "int8", 1031, 1536, 128, True),
    }[case]
    w_format, a_format, N, K, group, sym = spec
    ql = make_layer(w_format, a_format, N, K, group, w_sym=sym, seed=N + K)
    x = np.random.default_rng(K).standard_normal((M, K)).astype(np.float32)
    check(ql, x, act, False, None)
    check(ql, x, act, True, None)


@pytest.mark.cuda
def test_nan_activation_gives_nan_rows():
    """The device quantizer cannot raise; a row with NaN gets NaN outputs, other rows are exact."""
    ql = make_layer("int4", "int8", 9, 64, 32)
    x = np.random.default_rng(0).standard_normal((3, 64)).astype(np.float32)
    x[1, 5] = np.nan
    _, got = run_device(ql, x, "float32")
    assert np.isnan(got[1]).all()
    np.testing.assert_array_equal(got[[0, 2]], ql(x[[0, 2]]))


@pytest.mark.cuda
def test_errors_and_workspace():
    from quellm import cuda

    ql = make_layer("int4", "int8", 9, 64, 32)
    lin = cuda.Linear(ql, act="float16")
    assert lin.workspace_bytes(0) == 0 and lin.workspace_bytes(7) >= 7 * 64
    assert lin.nbytes < 9 * 64  # codes stay packed: 4 bits per weight plus scales and bias
    with pytest.raises(QuellmError):
        lin(cuda.to_device(np.zeros((2, 63), np.float16)))
    with pytest.raises(QuellmError):
        lin(cuda.to_device(np.zeros((2, 64), np.float32)))
    with pytest.raises(QuellmError):
        cuda.Linear(ql, act="int8")
    with pytest.raises(QuellmError):
        cuda.Linear(np.zeros((3, 3)), act="float16")
    f = cuda.Linear(make_layer("f32", "none", 5, 8, None), act="float32")
    assert f.workspace_bytes(100) == 0
    assert repr(f).startswith("cuda.Linear(5×8")


@pytest.mark.skipif(quellm.cuda_available()[0], reason="checks the no-GPU error path")
def test_linear_without_gpu_raises():
    from quellm import cuda

    ql = make_layer("int4", "int8", 9, 64, 32)
    with pytest.raises(QuellmError, match="CUDA"):
        cuda.Linear(ql)
