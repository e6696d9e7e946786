"""C++ (and CUDA) number formats against the numpy twins, bit for bit (cpp/formats*.cpp,
cuda/formats.cu vs python/quellm/formats.py).

Every comparison covers codes, scales, zero points, tensor scales and the decoded floats (as
bits), for the scalar reference (``ref=True``) and the dispatched path at every ISA level and
1 / 2 / 3 threads. Every registry name is covered through ``CONFIGS``.
"""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest
from conftest import assert_bit_exact
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import quellm
from quellm import _core
from quellm import formats as F
from quellm.errors import QuellmError

CONFIGS = [
    ("int4", {}), ("int8", {}), ("int4", {"group": 32}), ("int4", {"group": 64, "sym": False}),
    ("int4", {"granularity": "tensor", "clip": 0.9}), ("int4", {"narrow": True}), ("int8", {"group": 16, "sym": False}),
    ("int8", {"granularity": "tensor", "sym": False}), ("int8", {"sym": False, "clip": 0.8}),
    ("ovp4", {}), ("ovp4_flint", {}), ("ovp8", {}), ("ovp4", {"granularity": "tensor", "both_outliers": "keep_larger"}),
    ("ovp8", {"both_outliers": "keep_larger"}),
    ("mxfp8_e4m3", {}), ("mxfp8_e5m2", {}), ("mxfp6_e3m2", {}), ("mxfp6_e2m3", {}), ("mxfp4", {}), ("mxint8", {}),
    ("mxfp4", {"rounding": "rna"}), ("mxfp8_e4m3", {"rounding": "rna"}), ("mxfp6_e2m3", {"rounding": "rna"}),
    ("mxint8", {"rounding": "rna"}), ("nvfp4", {}), ("nvfp4", {"rounding": "rna"}),
    ("bfp", {}), ("bfp", {"mantissa_bits": 8, "block": 64}), ("bfp", {"mantissa_bits": 6, "block": 16, "rounding": "rna"}),
]
IDS = [n + "".join(f"-{k}={v}" for k, v in p.items()) for n, p in CONFIGS]
ISAS = quellm.isa_levels()
THREADS = (1, 2, 3)

# Values that sit on rounding ties of some element grid, float32 subnormals and extremes.
SPECIAL = [0.0, -0.0, 0.25, -0.75, 1.25, 2.5, -3.5, 5.0, 0.5, 1.5, 7.5, 3.0, 6.0, 448.0, 464.0, 57344.0, 1e-40,
           -1e-45, 1.2e-38, 3e38, -3e38, 1e30, 1e-30, 1.0, -1.0, 8.5, 9.5, -9.5]


def fmt_of(name, params):
    return F.get(name, **params)


def width(f) -> int:
    """A block-multiple length unit along K."""
    return f.info.block_size or max(f.info.align, 2)


def packed_planes(p):
    return [("codes", p.codes), ("scales", p.scales), ("zeros", p.zeros), ("tensor_scale", p.tensor_scale)]


def assert_same_packed(got, want, what):
    for (name, g), (_, w) in zip(packed_planes(got), packed_planes(want)):
        if w is None:
            assert g is None, f"{what}: unexpected {name}"
            continue
        assert_bit_exact(np.asarray(g), np.asarray(w), f"{what} {name}")


def check_all_paths(f, x, **kw):
    """numpy twin vs C++ reference vs dispatched C++ at every ISA and thread count, encode and decode."""
    want = f.encode(x, backend="numpy", **kw)
    want_y = want.decode(backend="numpy")
    rows, k = int(np.prod(x.shape[:-1])), x.shape[-1]
    ref = f._encode_cpp(np.ascontiguousarray(x, np.float32).reshape(rows, k), ref=True, **kw)
    for (name, w), g in zip(packed_planes(want), ref):
        if w is not None:
            assert_bit_exact(np.asarray(g).reshape(w.shape), w, f"ref {name}")
    y_ref = f._decode_cpp(want.codes, want.scales, want.zeros, want.tensor_scale, rows, k, ref=True)
    assert_bit_exact(y_ref.reshape(want_y.shape), want_y, "ref decode")
    if f.info.family == "ovp" and "scale" not in kw:
        # The scale search (numpy statistics, candidates quantized in C++) once; then the encoder
        # itself at every ISA / thread count with that scale.
        assert_same_packed(f.encode(x, backend="cpp"), want, f"{f!r} with the scale search")
        kw = {"scale": want.scales}
    isa0, nt0 = quellm.isa(), quellm.num_threads()
    try:
        for isa in ISAS:
            quellm.set_isa(isa)
            for nt in THREADS:
                quellm.set_num_threads(nt)
                got = f.encode(x, backend="cpp", **kw)
                assert_same_packed(got, want, f"{f!r} {isa} t{nt}")
                assert_bit_exact(want.decode(backend="cpp"), want_y, f"{f!r} decode {isa} t{nt}")
    finally:
        quellm.set_isa(isa0)
        quellm.set_num_threads(nt0)
    return want


# ---- traits table ---------------------------------------------------------------------------

def test_traits_table_matches_formats_py():
    assert _core.format_names() == F.names()
    for name in F.names():
        c, p = _core.format_info(name), F.FORMATS[name]
        for key in ("name", "family", "element_bits", "block_size", "bytes_per_block", "scale_dtype",
                    "scale_granularity", "align"):
            assert c[key] == getattr(p, key), (name, key, c[key], getattr(p, key))


# ---- independent oracle: ml_dtypes element casts through the C++ MX encoder --------------------

MX_OF = {"e2m1": "mxfp4", "e2m3": "mxfp6_e2m3", "e3m2": "mxfp6_e3m2", "e4m3": "mxfp8_e4m3", "e5m2": "mxfp8_e5m2"}
ML = {"e2m1": ml_dtypes.float4_e2m1fn, "e2m3": ml_dtypes.float6_e2m3fn, "e3m2": ml_dtypes.float6_e3m2fn,
      "e4m3": ml_dtypes.float8_e4m3fn, "e5m2": ml_dtypes.float8_e5m2}


@pytest.mark.parametrize("elem", list(MX_OF))
def test_cpp_element_casts_match_ml_dtypes(elem):
    """Blocks anchored at 2^emax_elem get shared exponent 0, so the C++ codes are plain RNE
    casts: compare them with ml_dtypes on grid points, midpoints (ties) and their neighbours,
    random values and float32 subnormals; and the E8M0 scale decode with float8_e8m0fnu."""
    spec = F.FLOAT_ELEMENTS[elem]
    tab = F.decode_float(np.arange(1 << spec.bits), elem).astype(np.float64)
    pos = np.unique(tab[np.isfinite(tab) & (tab >= 0)])
    mids = (pos[:-1] + pos[1:]) / 2
    r = np.random.default_rng(12)
    vals = np.concatenate([pos, mids, np.nextafter(mids, 0), np.nextafter(mids, np.inf),
                           r.uniform(0, spec.max_value, 600), [1e-45, 1e-40, 1e-38]])
    vals = np.concatenate([vals, -vals])
    vals = vals[np.abs(vals) <= spec.max_value].astype(np.float32)
    vals = np.concatenate([vals, np.zeros((-len(vals)) % 31, np.float32)])
    x = np.concatenate([np.full((len(vals) // 31, 1), 2.0 ** spec.emax, np.float32), vals.reshape(-1, 31)], axis=1)
    want = x[:, 1:].astype(ML[elem]).view(np.uint8)
    f = F.get(MX_OF[elem])
    isa0 = quellm.isa()
    try:
        for isa in ISAS:
            quellm.set_isa(isa)
            p = f.encode(x, backend="cpp")
            assert (p.scales == 127).all()
            assert_bit_exact(F.unpack_codes(p.codes, spec.bits)[:, 1:], want, f"{elem} {isa}")
    finally:
        quellm.set_isa(isa0)
    # every scale code, element 1.0
    one = F.encode_float(np.float32(1.0), elem)
    codes = F.pack_codes(np.full((256, 32), one, np.uint8), spec.bits)
    pk = F.Packed(f.name, dict(f.params), codes, np.arange(256, dtype=np.uint8).reshape(256, 1), (256, 32), 1)
    got = pk.decode(backend="cpp")[:, 0]
    np.testing.assert_array_equal(got, np.arange(256, dtype=np.uint8).view(ml_dtypes.float8_e8m0fnu).astype(np.float32))


# ---- property: C++ == numpy on random matrices ------------------------------------------------

values = st.one_of(st.floats(-1e4, 1e4, width=32), st.sampled_from(SPECIAL),
                   st.floats(width=32, allow_nan=False, allow_infinity=False))


@st.composite
def matrices(draw, f):
    rows = draw(st.integers(1, 5))
    k = width(f) * draw(st.integers(1, 3))
    scale = np.float32(2.0) ** draw(st.integers(-30, 30))
    base = draw(hnp.arrays(np.float32, (rows, k), elements=values))
    mode = draw(st.sampled_from(["raw", "scaled", "gauss"]))
    if mode == "gauss":
        seed = draw(st.integers(0, 2**16))
        base = np.random.default_rng(seed).standard_normal((rows, k)).astype(np.float32)
    if mode != "raw":
        with np.errstate(over="ignore", under="ignore"):
            base = (base * scale).astype(np.float32)
    if f.info.family in ("int", "ovp") and not np.isfinite(base).all():
        base = np.nan_to_num(base, posinf=1e30, neginf=-1e30).astype(np.float32)
    return base


@pytest.mark.parametrize("cfg", CONFIGS, ids=IDS)
@settings(max_examples=12)
@given(data=st.data())
def test_cpp_matches_numpy(cfg, data):
    f = fmt_of(*cfg)
    x = data.draw(matrices(f))
    kw = {}
    if f.info.family == "ovp":  # a drawn scale: the (slow, numpy) search is covered by the tests below
        amax = float(np.max(np.abs(x)))
        kw = {"scale": np.float32(min(max(amax, 1e-30) / 7 * data.draw(st.floats(0.05, 4.0)), 3e38))}
    try:
        f.encode(x, backend="numpy", **kw)
    except QuellmError:  # asymmetric int whose range overflows float32: both refuse
        with pytest.raises(QuellmError, match="range"):
            f.encode(x, backend="cpp", **kw)
        return
    check_all_paths(f, x, **kw)


# ---- property: the SIMD row kernels (nvfp4_row, ovp_row) on rows long enough for their vector
# loops, lengths that leave tails of every size, and blocks / cells at their boundaries ------------

NV_CONFIGS = [("nvfp4", {}), ("nvfp4", {"rounding": "rna"})]


@st.composite
def nvfp4_rows(draw):
    """(rows, 16·nb) float32 with nb up to 40 (AVX-512 groups of 16 blocks, AVX2 of 8, plus tails);
    each block gaussian at its own power-of-two scale, all zeros, E2M1 ties at a power-of-two
    block maximum, subnormal, or special values; some blocks carry a NaN / Inf."""
    rows, nb = draw(st.integers(1, 3)), draw(st.integers(1, 40))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    x = np.empty((rows, nb, 16), np.float32)
    for r in range(rows):
        for b in range(nb):
            kind = draw(st.sampled_from(["gauss", "gauss", "zeros", "ties", "subnormal", "special"]))
            e = np.float32(2.0) ** draw(st.integers(-40, 40))
            if kind == "gauss":
                v = rng.standard_normal(16) * e
            elif kind == "zeros":
                v = np.zeros(16) * (-1.0 if rng.random() < 0.3 else 1.0)
            elif kind == "ties":  # multiples of 1/4 of a block max of 6 (then scaled exactly)
                v = rng.integers(-24, 25, 16) / 4.0
                v[rng.integers(16)] = 6.0
                v = v * e
            elif kind == "subnormal":
                v = rng.standard_normal(16) * 1e-40
            else:
                v = rng.choice(np.array(SPECIAL, np.float64), 16)
            with np.errstate(over="ignore", under="ignore"):
                x[r, b] = np.asarray(v, np.float64).astype(np.float32)
            if draw(st.integers(0, 9)) == 0:
                x[r, b, rng.integers(16)] = draw(st.sampled_from([np.nan, np.inf, -np.inf]))
    return x.reshape(rows, nb * 16)


@pytest.mark.parametrize("cfg", NV_CONFIGS, ids=lambda c: "-".join([c[0], *c[1].values()]))
@settings(max_examples=15)
@given(x=nvfp4_rows(), ts=st.sampled_from([None, None, 1.0, 0.003, 1e-40, 1e-30, 3e30]))
def test_cpp_nvfp4_rows(cfg, x, ts):
    f = fmt_of(*cfg)
    check_all_paths(f, x, **({} if ts is None else {"tensor_scale": np.float32(ts)}))


@pytest.mark.parametrize("cfg", NV_CONFIGS, ids=lambda c: "-".join([c[0], *c[1].values()]))
def test_cpp_nvfp4_ties(cfg):
    """Every element on an E2M1 rounding edge or tie (x / d exact: block max 6·2^e, tensor scale
    1, so d = 2^e), in rows long enough for the vector loops, ±0 included."""
    f = fmt_of(*cfg)
    rng = np.random.default_rng(11)
    v = rng.integers(-40, 41, (3, 37, 16)) / 4.0
    v[:, :, 0] = 6.0
    v[:, ::5, 1] = -0.0
    x = (v * 2.0 ** rng.integers(-9, 9, (3, 37, 1))).astype(np.float32).reshape(3, -1)
    check_all_paths(f, x, tensor_scale=np.float32(1.0))


OVP_ROW_CONFIGS = [c for c in CONFIGS if c[0].startswith("ovp")]


@st.composite
def ovp_rows(draw, f):
    """(rows, K) float32, K even up to 160, and a scale: values at random, on the half-unit cell
    edges and near them (every snap cell, the arithmetic range of int4 / int8 and its ends), or
    gaussian; power-of-two scales keep x / s exact, so edges and ties are hit."""
    rows, k = draw(st.integers(1, 3)), 2 * draw(st.integers(1, 80))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    lim = int(2 * f.t.grid[-1]) + 2
    mode = draw(st.sampled_from(["cells", "normals", "gauss"]))
    if mode == "gauss":
        v = rng.standard_normal((rows, k)) * f.t.normal_max / 3
    else:
        top = lim if mode == "cells" else int(2 * f.t.normal_max) + 8
        v = rng.integers(-top, top + 1, (rows, k)) / 2.0
        nudge = rng.choice([0.0, 0.0, 1e-3, -1e-3, 0.25], (rows, k))
        v = v + nudge
    exact = draw(st.booleans())
    s = np.float32(2.0) ** draw(st.integers(-20, 20)) if exact else np.float32(draw(st.floats(1e-3, 1e3)))
    with np.errstate(over="ignore"):
        x = (v * np.float64(s)).astype(np.float32)
    return x, s


@pytest.mark.parametrize("cfg", OVP_ROW_CONFIGS, ids=lambda c: "-".join([c[0], *c[1].values()]))
@settings(max_examples=15)
@given(data=st.data())
def test_cpp_ovp_rows(cfg, data):
    f = fmt_of(*cfg)
    x, s = data.draw(ovp_rows(f))
    check_all_paths(f, x, scale=s)


# ---- explicit edge cases ----------------------------------------------------------------------

def edge_inputs(f):
    w = width(f)
    k = 4 * w if w < 16 else 2 * w
    rng = np.random.default_rng(3)
    g = rng.standard_normal((3, k)).astype(np.float32)
    out = {"zeros": np.zeros((3, k), np.float32), "neg_zeros": -np.zeros((3, k), np.float32),
           "constant": np.full((3, k), 0.37, np.float32), "neg_constant": np.full((3, k), -5.0, np.float32)}
    o = g.copy()
    o[1, 5] = 1e4
    out["outlier"] = o
    out["subnormal"] = (g * np.float32(1e-39)).astype(np.float32)
    out["tiny_mixed"] = np.where(rng.random((3, k)) < 0.5, g, g * np.float32(1e-42)).astype(np.float32)
    out["ties"] = (np.round(g * 4) / 4).astype(np.float32)
    out["huge"] = (g * np.float32(1e37)).astype(np.float32)
    return out


@pytest.mark.parametrize("cfg", CONFIGS, ids=IDS)
def test_cpp_edge_cases(cfg):
    f = fmt_of(*cfg)
    for case, x in edge_inputs(f).items():
        try:
            f.encode(x, backend="numpy")
        except QuellmError:  # e.g. asymmetric range overflow: both backends must refuse
            with pytest.raises(QuellmError):
                f.encode(x, backend="cpp")
            continue
        check_all_paths(f, x)


@pytest.mark.parametrize("cfg", CONFIGS, ids=IDS)
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_cpp_non_finite(cfg, bad):
    f = fmt_of(*cfg)
    x = np.random.default_rng(6).standard_normal((3, 2 * width(f))).astype(np.float32)
    x[1, 1] = bad
    if f.info.family in ("int", "ovp"):
        isa0 = quellm.isa()
        try:
            for isa in ISAS:
                quellm.set_isa(isa)
                with pytest.raises(QuellmError, match="NaN or Inf"):
                    f.encode(x, backend="cpp")
        finally:
            quellm.set_isa(isa0)
        return
    check_all_paths(f, x)


@pytest.mark.parametrize("cfg", CONFIGS, ids=IDS)
def test_cpp_bad_length_raises(cfg):
    f = fmt_of(*cfg)
    if f.info.align == 1:
        return
    x = np.ones((2, width(f) + 1), np.float32)
    with pytest.raises(QuellmError):
        f.encode(x, backend="cpp")
    # the core checks lengths and plane sizes by itself too
    with pytest.raises(ValueError):
        _core.format_encode(f.name, x, np.empty(64, np.uint8), np.empty(64, np.float32 if f.info.scale_dtype == "f32"
                                                                            else np.uint8),
                            np.empty(64, np.float32), np.empty(1, np.float32), False, f._cpp_params())


def test_core_rejects_bad_planes():
    x = np.ones((2, 64), np.float32)
    with pytest.raises(ValueError, match="codes"):
        _core.format_encode("mxfp4", x, np.empty(63, np.uint8), np.empty(4, np.uint8))
    with pytest.raises(ValueError, match="scales"):
        _core.format_encode("mxfp4", x, np.empty(64, np.uint8), np.empty(4, np.float32))
    with pytest.raises(ValueError, match="unknown format"):
        _core.format_encode("fp3", x, np.empty(64, np.uint8), np.empty(4, np.uint8))
    with pytest.raises(ValueError, match="mantissa_bits"):
        _core.format_encode("bfp", x, np.empty(64, np.uint8), np.empty(4, np.uint8), params={"mantissa_bits": 5})


def test_backend_argument():
    f = F.get("int4")
    with pytest.raises(QuellmError, match="backend"):
        f.encode(np.ones((1, 4), np.float32), backend="gpu")


# ---- given scales, long rows (SIMD main loops + tails), idempotence ----------------------------

@pytest.mark.parametrize("cfg", [c for c in CONFIGS if F.get(c[0], **c[1]).encode_kwargs], ids=lambda c: c[0])
def test_cpp_given_scales(cfg):
    f = fmt_of(*cfg)
    x = np.random.default_rng(8).standard_normal((5, 4 * width(f))).astype(np.float32)
    p = f.encode(x, backend="numpy")
    if f.info.family == "nvfp4":
        kw = {"tensor_scale": np.float32(0.003)}
    else:
        kw = {"scale": (p.scales * np.float32(0.7)).astype(np.float32)}
        if p.zeros is not None:
            kw["zero"] = (p.zeros + np.float32(0.5)).astype(np.float32)
    check_all_paths(f, x, **kw)


@pytest.mark.parametrize("cfg", CONFIGS, ids=IDS)
def test_cpp_long_rows(cfg):
    f = fmt_of(*cfg)
    k = 4 * 1024 + (1 if f.info.align == 1 else 0)
    if f.info.family == "ovp" or (f.info.block_size and k % f.info.block_size):
        k = 2 * 1024
    x = np.random.default_rng(9).standard_normal((7, k)).astype(np.float32)
    x[:, ::97] *= 30
    check_all_paths(f, x)


@pytest.mark.parametrize("cfg", CONFIGS, ids=IDS)
def test_cpp_roundtrip_and_idempotence(cfg):
    f = fmt_of(*cfg)
    x = np.random.default_rng(10).standard_normal((4, 8 * width(f))).astype(np.float32)
    p = f.encode(x, backend="cpp")
    xh = p.decode(backend="cpp")
    err = np.abs(xh.astype(np.float64) - x)
    # within a quarter of the block maximum for every format at these sizes (4-bit worst case)
    assert err.max() <= 0.3 * np.abs(x).max()
    kw = {}
    if f.info.family in ("int", "ovp"):
        kw = {"scale": p.scales} | ({"zero": p.zeros} if p.zeros is not None else {})
    elif f.info.family == "nvfp4":
        kw = {"tensor_scale": p.tensor_scale}
    q = f.encode(xh, backend="cpp", **kw)
    assert_bit_exact(q.decode(backend="cpp"), xh, "decode(encode(decode)) == decode")


# ---- CUDA (skipped without a device) ---------------------------------------------------------

@pytest.mark.cuda
@pytest.mark.parametrize("cfg", CONFIGS, ids=IDS)
def test_cuda_matches_numpy(cfg):
    from quellm import cuda as qc

    f = fmt_of(*cfg)
    rng = np.random.default_rng(11)
    cases = list(edge_inputs(f).values()) + [rng.standard_normal((9, 8 * width(f))).astype(np.float32)]
    if f.info.family not in ("int", "ovp"):
        bad = cases[-1].copy()
        bad[2, 3], bad[5, -1] = np.nan, -np.inf
        cases.append(bad)
    for x in cases:
        try:
            want = f.encode(x, backend="numpy")
        except QuellmError:
            continue
        got = qc.encode(f, qc.to_device(x), scale=want.scales) if f.info.family == "ovp" else qc.encode(f, qc.to_device(x))
        assert_same_packed(got, want, f"cuda {f!r}")
        assert_bit_exact(qc.to_host(qc.decode(want)), want.decode(backend="numpy"), f"cuda decode {f!r}")


@pytest.mark.cuda
def test_cuda_rejects_nan_for_int():
    from quellm import cuda as qc

    x = np.ones((2, 8), np.float32)
    x[1, 2] = np.nan
    with pytest.raises(QuellmError, match="NaN or Inf"):
        qc.encode(F.get("int4"), qc.to_device(x))
