"""QuantLinear: every (weight × activation) kernel against the numpy fake quantization of the
same spec (QuantLinear.simulate), for every ISA level and thread count; specs, errors, tensors."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import quellm
from quellm.quant import CLIP_GRID, LinearSpec, QuantLinear, fit_group, supported_pairs

PAIRS = [p for p in supported_pairs()]


def group_for(w_format, a_format, default):
    """MX pairs work in blocks of 32; f32 weights take no group."""
    if w_format in ("f32", "ovp4"):
        return None
    return 32 if {"mxfp4", "mxfp8"} & {w_format, a_format} else default


def check_close(got, want, rtol=1e-5):
    scale = max(float(np.abs(want).max()), 1e-30)
    err = float(np.abs(got.astype(np.float64) - want).max())
    assert err <= rtol * scale, f"max error {err} vs scale {scale}"


@pytest.mark.parametrize("w_format, a_format", PAIRS)
@pytest.mark.parametrize("M", [1, 2, 3, 17])
def test_forward_matches_fake_quant(w_format, a_format, M, isa, threads):
    rng = np.random.default_rng(M)
    N, K = 45, 256
    W = rng.standard_normal((N, K)).astype(np.float32)
    b = rng.standard_normal(N).astype(np.float32)
    x = rng.standard_normal((M, K)).astype(np.float32)
    x[:, 7] *= 40  # an outlier channel
    for transform in (None, "hadamard"):
        ql = QuantLinear(W, b, w_format=w_format, a_format=a_format, group=group_for(w_format, a_format, 64),
                         transform=transform, a_clip=0.9 if a_format == "int4" else 1.0)
        check_close(ql(x), ql.simulate(x))


@given(M=st.integers(1, 20), N=st.integers(1, 40), kq=st.integers(1, 8), pair=st.sampled_from(PAIRS[1:]),
       sym=st.booleans(), seed=st.integers(0, 2**31), data=st.data())
def test_random_shapes(M, N, kq, pair, sym, seed, data):
    K = 16 * kq
    G = data.draw(st.sampled_from([None] + [g for g in (8, 16, 32, 64) if K % g == 0]), "group")
    w_format, a_format = pair
    if {"mxfp4", "mxfp8"} & set(pair):
        K, G = 32 * kq, 32
    sym = sym or w_format != "int4" or a_format != "none"
    rng = np.random.default_rng(seed)
    W = (rng.standard_normal((N, K)) * rng.uniform(0.01, 10)).astype(np.float32)
    x = rng.standard_normal((M, 2, K)).astype(np.float32)
    ql = QuantLinear(W, None, w_format=w_format, a_format=a_format, group=None if w_format in ("mxfp4", "ovp4") else G,
                     w_sym=sym)
    y = ql(x)
    assert y.shape == (M, 2, N) and y.dtype == np.float32
    check_close(y, ql.simulate(x))


@pytest.mark.parametrize("w_format, sym, group, K", [("int4", True, 64, 640), ("int4", False, 128, 640),
                                                     ("int8", True, 32, 640), ("int4", True, 48, 672)])
def test_weight_only_batches(w_format, sym, group, K, isa, threads):
    """Weight-only layers above 8 rows: the packed f32 GEMM with W strips dequantized in place
    (groups of a multiple of 32), or dequantized panels (group 48): K over several blocks of 256,
    partial row panels and column strips."""
    rng = np.random.default_rng(group)
    M, N = 33, 70
    W = rng.standard_normal((N, K)).astype(np.float32)
    b = rng.standard_normal(N).astype(np.float32)
    x = rng.standard_normal((M, K)).astype(np.float32)
    ql = QuantLinear(W, b, w_format=w_format, a_format="none", group=group, w_sym=sym)
    y = ql(x)
    check_close(y, ql.simulate(x))


def test_zero_rows_and_weights():
    W = np.zeros((16, 64), np.float32)
    W[3] = 1.0
    x = np.zeros((3, 64), np.float32)
    x[1] = -2.0
    for w, a in PAIRS:
        ql = QuantLinear(W, w_format=w, a_format=a, group=group_for(w, a, None))
        y = ql(x)
        assert np.all(y[0] == 0) and np.all(y[2] == 0)
        assert y[1, 3] == pytest.approx(-128.0, rel=0.02)


def test_weight_only_quality_and_clip_search():
    rng = np.random.default_rng(0)
    W = rng.standard_normal((64, 128)).astype(np.float32)
    W[:, 0] = 30.0  # a column that stretches every row's range
    plain = QuantLinear(W, w_format="int4", group=None)
    searched = QuantLinear(W, w_format="int4", group=None, w_clip="search")
    x = rng.standard_normal((256, 128)).astype(np.float32)
    x[:, 0] = 0.0  # ... whose input is always zero: clipping it is free
    e_plain = np.linalg.norm(plain(x) - x @ W.T)
    e_search = np.linalg.norm(searched(x) - x @ W.T)
    assert e_search < e_plain
    # with the input statistics, the search knows column 0 does not matter
    h = (x.astype(np.float64) ** 2).mean(0)
    informed = QuantLinear(W, w_format="int4", group=None, w_clip="search", hessian=h)
    assert np.linalg.norm(informed(x) - x @ W.T) <= e_search * 1.0001
    assert 0.5 in CLIP_GRID and CLIP_GRID[0] == 1.0


def test_hadamard_helps_outliers():
    rng = np.random.default_rng(1)
    W = rng.standard_normal((64, 128)).astype(np.float32)
    x = rng.standard_normal((32, 128)).astype(np.float32)
    x[:, 5] *= 100
    ref = x @ W.T
    err = {t: np.linalg.norm(QuantLinear(W, w_format="int8", a_format="int4", transform=t)(x) - ref)
           for t in (None, "hadamard")}
    assert err["hadamard"] < 0.6 * err[None]
    # a float rotation is exact
    f = QuantLinear(W, w_format="f32", transform="hadamard")
    np.testing.assert_allclose(f(x), ref, rtol=1e-4, atol=1e-3)


def test_tensors_round_trip():
    rng = np.random.default_rng(2)
    W = rng.standard_normal((24, 64)).astype(np.float32)
    b = rng.standard_normal(24).astype(np.float32)
    x = rng.standard_normal((5, 64)).astype(np.float32)
    for spec in (LinearSpec("int4", 32, False), LinearSpec("int4", 16, a_format="int8", transform="hadamard"),
                 LinearSpec("mxfp4", a_format="mxfp4"), LinearSpec("mxfp4", a_format="int8", transform="hadamard"),
                 LinearSpec("ovp4", a_format="int8"),
                 LinearSpec("int8", None, a_format="int8"), LinearSpec("f32", transform="hadamard")):
        ql = QuantLinear(W, b, spec)
        t = ql.to_tensors()
        back = QuantLinear.from_tensors(spec, t, 24, 64)
        np.testing.assert_array_equal(back(x), ql(x))
        assert back.nbytes == ql.nbytes and repr(back) == repr(ql)
        assert LinearSpec.from_json(spec.to_json()) == spec
    spec = LinearSpec("int4", 32)
    good = QuantLinear(W, b, spec).to_tensors()
    bad_cases = [
        ({**good, "qweight": np.zeros((24, 30), np.uint8)}, "expected uint8 \\(24, 32\\)"),
        ({**good, "qweight": good["qweight"].view(np.int8)}, "qweight"),
        ({**good, "scales": good["scales"].astype(np.float64)}, "scales"),
        ({k: v for k, v in good.items() if k != "scales"}, "'scales' is missing"),
        ({**good, "zeros": np.zeros_like(good["scales"])}, "unexpected tensors \\['zeros'\\]"),
        ({**good, "scales": np.full_like(good["scales"], np.nan)}, "non-finite weight scale"),
    ]
    for tensors, match in bad_cases:
        with pytest.raises(quellm.QuellmError, match=match):
            QuantLinear.from_tensors(spec, tensors, 24, 64)
    asym = LinearSpec("int4", 32, w_sym=False)
    tz = QuantLinear(W, b, asym).to_tensors()
    with pytest.raises(quellm.QuellmError, match="zero point"):
        QuantLinear.from_tensors(asym, {**tz, "zeros": np.full_like(tz["zeros"], 20.0)}, 24, 64)


def test_kernel_names_and_sizes():
    W = np.ones((32, 128), np.float32)
    assert QuantLinear(W, w_format="int4", group=128).kernel == "w4a16"
    assert QuantLinear(W, w_format="int4", a_format="int4").kernel == "w4a4"
    assert QuantLinear(W, w_format="int8", a_format="int8").kernel == "w8a8"
    assert QuantLinear(W, w_format="f32").kernel == "f32"
    assert QuantLinear(W, w_format="int4", group=128).nbytes == 32 * 64 + 32 * 4 + 32  # codes + f32 scales + u8 zeros


@pytest.mark.parametrize("kw, match", [
    (dict(w_format="f32", a_format="int8"), "no kernel.*supported pairs"),
    (dict(w_format="int3"), "weight format"),
    (dict(w_format="int4", group=36), "does not divide"),
    (dict(w_format="int4", w_sym=False, a_format="int8"), "asymmetric"),
    (dict(w_format="int4", transform="hadamard"), "unsupported Hadamard size"),
    (dict(w_format="int4", a_clip=0.0), "a_clip"),
    (dict(w_format="int8", w_clip=1.5), "w_clip"),
    (dict(w_format="int4", transform="rotate"), "transform"),
    (dict(w_format="mxfp4", a_format="none"), "no kernel"),
    (dict(w_format="mxfp4", a_format="mxfp4", group=64), "blocks of 32"),
    (dict(w_format="int4", a_format="mxfp4", group=16), "groups of 32"),
    (dict(w_format="mxfp4", a_format="mxfp4"), "multiple of 32"),  # in = 90
    (dict(w_format="mxfp4", a_format="mxfp4", w_method="gptq"), "gptq needs int4/int8 weights"),
    (dict(w_format="ovp4", a_format="none"), "no kernel"),
    (dict(w_format="ovp4", a_format="int8", group=32), "ovp4 weights"),
])
def test_bad_specs(kw, match):
    W = np.ones((8, 90), np.float32)  # 90: no Hadamard matrix of that order
    with pytest.raises(ValueError, match=match):
        QuantLinear(W, **kw)


def test_bad_inputs():
    ql = QuantLinear(np.ones((8, 64), np.float32), w_format="int4", a_format="int8")
    with pytest.raises(ValueError, match=r"\(\.\.\., 64\)"):
        ql(np.ones((2, 63), np.float32))
    x = np.ones((3, 64), np.float32)
    x[2, 9] = np.nan
    with pytest.raises(ValueError, match="row 2, column 9"):
        ql(x)
    assert np.isnan(x[2, 9])  # the caller's input is untouched
    with pytest.raises(ValueError, match="non-finite"):
        QuantLinear(np.full((8, 64), np.inf, np.float32))
    with pytest.raises(ValueError, match="bias"):
        QuantLinear(np.ones((8, 64), np.float32), np.ones(7, np.float32))
    # weight-only layers propagate NaN like a float matmul
    wo = QuantLinear(np.ones((8, 64), np.float32), w_format="int4")
    assert np.isnan(wo(x)[2]).all() and np.isfinite(wo(x)[:2]).all()


def test_input_shapes_and_dtypes():
    """forward takes (..., in) of any real dtype, layout or nesting and returns (..., out) float32
    equal to the float32 C-contiguous call; anything else is a clear error."""
    rng = np.random.default_rng(4)
    ql = QuantLinear(rng.standard_normal((8, 64)).astype(np.float32), w_format="int4", a_format="int8")
    x = rng.standard_normal((2, 3, 64))
    want = ql(np.ascontiguousarray(x.reshape(6, 64), dtype=np.float32)).reshape(2, 3, 8)
    for v in (x, x.astype(np.float32), x.astype(np.float16).astype(np.float64), np.asfortranarray(x),
              x.tolist()):
        got = ql(v)
        assert got.dtype == np.float32 and got.shape == (2, 3, 8)
        want_v = ql(np.ascontiguousarray(np.asarray(v, dtype=np.float32).reshape(6, 64))).reshape(2, 3, 8)
        np.testing.assert_array_equal(got, want_v)
    np.testing.assert_array_equal(ql(x.astype(np.float32)), want)
    np.testing.assert_array_equal(ql(x[1, 2]), want[1, 2])  # a single row (in,) -> (out,)
    np.testing.assert_array_equal(ql(x[:, ::2]), want[:, ::2])  # strided view
    assert ql(np.zeros((0, 64))).shape == (0, 8) and ql(np.zeros((2, 0, 64))).shape == (2, 0, 8)
    for bad in (np.ones(63), np.float32(1.0), np.ones((64, 2)), "abc", None):
        with pytest.raises(ValueError, match="QuantLinear: input must"):
            ql(bad)


def test_inputs_not_modified():
    rng = np.random.default_rng(3)
    W = rng.standard_normal((16, 64)).astype(np.float32)
    x = rng.standard_normal((4, 64)).astype(np.float32)
    W0, x0 = W.copy(), x.copy()
    ql = QuantLinear(W, w_format="int4", a_format="int4", transform="hadamard")
    ql(x)
    np.testing.assert_array_equal(W, W0)
    np.testing.assert_array_equal(x, x0)


def test_fit_group():
    assert fit_group(128, 576) == 96 and fit_group(128, 1536) == 128 and fit_group(None, 576) is None
    assert fit_group(128, 172) is None and fit_group(64, 576) == 64


@pytest.mark.parametrize("w_format", ["int4", "int8"])
def test_switching_activation_format_repacks(w_format):
    """The C++ layer holds weights in one kernel layout; changing the activation format repacks
    them losslessly (weight-only <-> integer kernels)."""
    rng = np.random.default_rng(4)
    W = rng.standard_normal((40, 128)).astype(np.float32)
    x = rng.standard_normal((3, 128)).astype(np.float32)
    a = QuantLinear(W, w_format=w_format, group=32)
    b = QuantLinear(W, w_format=w_format, group=32, a_format="int8")
    codes = a.to_tensors()["qweight"].copy()
    a._core.set_activation("int8")
    np.testing.assert_array_equal(a._core.forward(x), b(x))
    a._core.set_activation("none")
    np.testing.assert_array_equal(a.to_tensors()["qweight"], codes)
    check_close(a._core.forward(x), QuantLinear(W, w_format=w_format, group=32).simulate(x))
