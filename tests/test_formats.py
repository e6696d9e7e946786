"""Tests of the numpy format twins (python/quellm/formats.py): golden bytes, element casts
against ml_dtypes, properties of SPEC §1.7 / §2.6 / §3.8, edge cases, safetensors round trip.

Every registry name is covered through ``CONFIGS`` (a test fails if a new format has no entry).
"""

from __future__ import annotations

import math

import ml_dtypes
import numpy as np
import pytest
from conftest import assert_bit_exact, nmse
from hypothesis import assume, given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from safetensors.numpy import load, load_file, save, save_file

from quellm import formats as F
from quellm.errors import QuellmError

# ---- per-format quality constants ------------------------------------------------------------
# (config id, registry name, params,
#  NMSE bound of decode(encode(x)) on N(0,1) data of shape (16, 256) (measured value in comment),
#  REL_MAX: relative error bound of the largest element of a block / row)
CONFIGS = [
    ("int4", "int4", {}, 0.021, 1e-6),                                                               # 0.0164
    ("int8", "int8", {}, 6.6e-5, 1e-6),                                                              # 5.1e-5
    ("ovp4", "ovp4", {}, 0.016, 0.011),                                                              # 0.0120
    ("ovp4_flint", "ovp4_flint", {}, 0.018, 0.011),                                                  # 0.0137
    ("ovp8", "ovp8", {}, 6.2e-5, 0.011),                                                             # 4.8e-5
    ("mxfp8_e4m3", "mxfp8_e4m3", {}, 1.2e-3, 0.125),                                                 # 8.9e-4
    ("mxfp8_e5m2", "mxfp8_e5m2", {}, 3.7e-3, 0.125),                                                 # 2.85e-3
    ("mxfp6_e3m2", "mxfp6_e3m2", {}, 3.7e-3, 0.125),                                                 # 2.85e-3
    ("mxfp6_e2m3", "mxfp6_e2m3", {}, 1.0e-3, 0.0625),                                                # 7.9e-4
    ("mxfp4", "mxfp4", {}, 0.018, 0.25),                                                             # 0.0136
    ("mxint8", "mxint8", {}, 8.9e-5, 0.008),                                                         # 6.8e-5
    ("nvfp4", "nvfp4", {}, 0.012, 0.0625),                                                           # 0.0091
    ("bfp", "bfp", {}, 0.023, 0.125),                                                                # 0.0179
    # non-default parameters
    ("int4_g32", "int4", {"group": 32}, 0.0125, 1e-6),                                               # 0.0096
    ("int4_g128_asym", "int4", {"group": 128, "sym": False}, 0.014, 0.04),                           # 0.0107
    ("int4_tensor_clip", "int4", {"granularity": "tensor", "clip": 0.9}, 0.025, 0.11),               # 0.0195
    ("int4_narrow", "int4", {"narrow": True, "granularity": "token"}, 0.021, 1e-6),                  # 0.0164
    ("int8_g64_asym", "int8", {"group": 64, "sym": False}, 3.9e-5, 0.003),                           # 3.0e-5
    ("ovp4_tensor_larger", "ovp4", {"granularity": "tensor", "both_outliers": "keep_larger"}, 0.017, 0.011), # 0.0132
    ("ovp8_tensor", "ovp8", {"granularity": "tensor"}, 9.1e-5, 0.011),                               # 7.0e-5
    ("mxfp4_rna", "mxfp4", {"rounding": "rna"}, 0.018, 0.25),                                        # 0.0136
    ("mxfp6_e3m2_rna", "mxfp6_e3m2", {"rounding": "rna"}, 3.7e-3, 0.125),                            # 2.85e-3
    ("mxint8_rna", "mxint8", {"rounding": "rna"}, 8.9e-5, 0.008),                                    # 6.8e-5
    ("nvfp4_rna", "nvfp4", {"rounding": "rna"}, 0.012, 0.0625),                                      # 0.0091
    ("bfp16_b64", "bfp", {"mantissa_bits": 8, "block": 64}, 1.0e-4, 0.008),                          # 8.0e-5
    ("bfp14_b16", "bfp", {"mantissa_bits": 6, "block": 16, "rounding": "rna"}, 1.1e-3, 0.032),       # 8.2e-4
]
IDS = [c[0] for c in CONFIGS]
# A data-dependent scale (OVP's search) may land the block maximum on an outlier grid point:
# an isolated huge value is then reproduced within the abfloat spacing.
REL_OUTLIER = {"ovp4": 0.2, "ovp4_flint": 0.2, "ovp8": 0.02}

MX_NAMES = ["mxfp8_e4m3", "mxfp8_e5m2", "mxfp6_e3m2", "mxfp6_e2m3", "mxfp4", "mxint8"]
MX_ELEM = {"mxfp8_e4m3": "e4m3", "mxfp8_e5m2": "e5m2", "mxfp6_e3m2": "e3m2", "mxfp6_e2m3": "e2m3", "mxfp4": "e2m1"}
ML = {"e2m1": ml_dtypes.float4_e2m1fn, "e2m3": ml_dtypes.float6_e2m3fn, "e3m2": ml_dtypes.float6_e3m2fn,
      "e4m3": ml_dtypes.float8_e4m3fn, "e5m2": ml_dtypes.float8_e5m2}


def fmt_of(cfg):
    return F.get(cfg[1], **cfg[2])


def rng(seed=0):
    return np.random.default_rng(seed)


def fixed_kwargs(f, p):
    """Keyword arguments that re-encode with the scales of ``p`` (formats with data-derived scales)."""
    if f.info.family == "int":
        return {"scale": p.scales} | ({"zero": p.zeros} if p.zeros is not None else {})
    if f.info.family == "ovp":
        return {"scale": p.scales}
    if f.info.family == "nvfp4":
        return {"tensor_scale": p.tensor_scale}
    return {}


def assert_packed_equal(a, b, what=""):
    assert_bit_exact(a.codes, b.codes, f"{what} codes")
    assert_bit_exact(a.scales, b.scales, f"{what} scales")
    for x, y, n in ((a.zeros, b.zeros, "zeros"), (a.tensor_scale, b.tensor_scale, "tensor_scale")):
        assert (x is None) == (y is None)
        if x is not None:
            assert_bit_exact(x, y, f"{what} {n}")


# ---- registry and trait table ----------------------------------------------------------------

def test_every_format_has_a_config():
    assert F.names() == list(F.FORMATS)
    assert set(F.names()) <= {c[1] for c in CONFIGS if c[0] == c[1]}


@pytest.mark.parametrize("name", F.names())
def test_trait_table(name):
    info = F.FORMATS[name]
    f = F.get(name)
    assert f.info == info and f.name == name == info.name
    assert f.block_size == info.block_size and f.bits_per_element == info.bits_per_element
    if info.block_size is not None:
        assert info.bytes_per_block * 8 == info.block_size * info.element_bits
        assert info.align % info.block_size == 0 or info.block_size % info.align == 0
        scale_bits = 32 if info.scale_dtype == "f32" else 8
        assert info.bits_per_element == pytest.approx(info.element_bits + scale_bits / info.block_size)


def test_trait_values():
    bpe = {"mxfp4": 4.25, "mxfp6_e3m2": 6.25, "mxfp6_e2m3": 6.25, "mxfp8_e4m3": 8.25, "mxfp8_e5m2": 8.25,
           "mxint8": 8.25, "nvfp4": 4.5, "bfp": 4.25, "int4": 4.0, "int8": 8.0, "ovp4": 4.0, "ovp8": 8.0}
    for n, v in bpe.items():
        assert F.FORMATS[n].bits_per_element == v, n
    assert F.get("int4", group=128).info.bytes_per_block == 64
    assert F.get("int4", group=128).bits_per_element == 4.25
    assert F.get("int4", group=128, sym=False).bits_per_element == 4.5
    assert [F.FORMATS[n].bytes_per_block for n in MX_NAMES] == [32, 32, 24, 24, 16, 32]
    assert F.FORMATS["nvfp4"].bytes_per_block == 8 and F.FORMATS["nvfp4"].scale_dtype == "e4m3"


@pytest.mark.parametrize("bad", [("nope", {}), ("int4", {"bits": 3}), ("int4", {"clip": 1.5}),
                                 ("int4", {"granularity": "col"}), ("int4", {"group": 7}),
                                 ("ovp4", {"both_outliers": "keep_last"}), ("mxfp4", {"rounding": "up"}),
                                 ("bfp", {"mantissa_bits": 5}), ("bfp", {"block": 6, "mantissa_bits": 6})])
def test_get_rejects(bad):
    with pytest.raises(QuellmError):
        F.get(bad[0], **bad[1])


def test_encode_rejects_unknown_kwargs():
    with pytest.raises(QuellmError):
        F.get("mxfp4").encode(np.zeros(32), scale=1.0)
    with pytest.raises(QuellmError):
        F.get("int4").encode(np.zeros(4), zero=1.0)


# ---- round trip quality and generic properties -----------------------------------------------

@pytest.mark.parametrize("cfg", CONFIGS, ids=IDS)
def test_gaussian_nmse(cfg):
    x = rng(1).standard_normal((16, 256)).astype(np.float32)
    xh = fmt_of(cfg).quantize_dequantize(x)
    assert xh.dtype == np.float32 and xh.shape == x.shape
    assert nmse(xh, x) <= cfg[3]


finite_vals = st.one_of(
    st.floats(-1e4, 1e4, width=32),
    st.sampled_from([0.0, -0.0, 1.0, -1.0, 0.5, 2.5, -7.5, 448.0, 1e-40, -3e-39, 1.2e-38, 1e30, -1e30]),
)


@st.composite
def tensors(draw, cfg):
    f = fmt_of(cfg)
    a = f.info.align
    k = a * draw(st.integers(1, 3 if a > 1 else 6))
    shape = (draw(st.integers(1, 3)), k, draw(st.integers(1, 2)))
    return draw(hnp.arrays(np.float32, shape, elements=finite_vals))


@pytest.mark.parametrize("cfg", CONFIGS, ids=IDS)
@given(data=st.data())
def test_roundtrip_idempotent(cfg, data):
    """decode shape/dtype; encode(decode(encode(x))) == encode(x) byte for byte (with the first
    encoding's scales where the format derives them from the data)."""
    f = fmt_of(cfg)
    x = data.draw(tensors(cfg))
    p = f.encode(x, axis=1)
    assert p.codes.dtype == np.uint8 and p.axis == 1 and p.shape == x.shape
    xh = p.decode()
    assert xh.dtype == np.float32 and xh.shape == x.shape
    assert np.isfinite(xh).all()
    assert np.max(np.abs(xh)) <= 1.5 * np.max(np.abs(x)) + 1e-44
    if f.info.family == "nvfp4":
        # nvfp4 re-derives its block scales (only the tensor scale can be given), which gives
        # them back only where a block's largest element decoded as ±6. That holds whenever the
        # E4M3 scale is normal (its rounding moves amax/scale by at most 1/16 around 6), but a
        # subnormal scale can round the block maximum to 4, and its re-derived scale is smaller.
        mag = np.stack([p.codes & 7, (p.codes >> 4) & 7], axis=-1).reshape(p.scales.shape[0], -1, 16)
        live = (p.scales != 0) & (p.scales != 0x7F)
        assume(bool(np.all(mag.max(axis=-1)[live] == 7)))
    p2 = f.encode(xh, axis=1, **fixed_kwargs(f, p))
    assert_packed_equal(p2, p, cfg[0])
    assert_bit_exact(f.quantize_dequantize(x, 1, **fixed_kwargs(f, p)), xh, "qdq")


@pytest.mark.parametrize("cfg", CONFIGS, ids=IDS)
def test_idempotent_without_fixed_scales(cfg):
    """MX, BFP and nvfp4 re-derive identical scales from their own output; so do int formats
    with clip 1 up to the last bit of the f32 scale (codes identical)."""
    f = fmt_of(cfg)
    x = rng(2).standard_normal((8, 128)).astype(np.float32) * 3
    p = f.encode(x)
    p2 = f.encode(p.decode())
    if f.info.family in ("mx", "bfp", "nvfp4"):
        assert_packed_equal(p2, p, cfg[0])
    elif f.info.family == "int" and cfg[2].get("sym", True) and cfg[2].get("clip", 1.0) == 1.0:
        assert_bit_exact(p2.codes, p.codes, "codes")
        np.testing.assert_allclose(p2.scales, p.scales, rtol=3e-7)


@pytest.mark.parametrize("cfg", CONFIGS, ids=IDS)
def test_zeros(cfg):
    f = fmt_of(cfg)
    x = np.zeros((3, 2 * max(f.info.align, 2)), np.float32)
    p = f.encode(x)
    assert_bit_exact(p.decode(), x, "zeros")
    assert np.isfinite(p.scales.astype(np.float64)).all()


@pytest.mark.parametrize("cfg", CONFIGS, ids=IDS)
@pytest.mark.parametrize("c", [0.37, -5.0, 1e-3, 3.3e5])
def test_constant_blocks(cfg, c):
    f = fmt_of(cfg)
    x = np.full((2, 2 * max(f.info.align, 2)), c, np.float32)
    xh = f.quantize_dequantize(x)
    assert np.max(np.abs(xh - x)) <= cfg[4] * abs(c) + 1e-12


@pytest.mark.parametrize("cfg", CONFIGS, ids=IDS)
@pytest.mark.parametrize("pos", [0, 5])
def test_single_huge_outlier(cfg, pos):
    f = fmt_of(cfg)
    k = max(f.info.align, 64)
    x = (rng(3).standard_normal((2, k)) * 1e-3).astype(np.float32)
    x[:, pos] = [1e4, -1e4]  # both are the largest of their block, row and tensor
    xh = f.quantize_dequantize(x)
    assert np.isfinite(xh).all()
    rel = np.abs(xh[:, pos] - x[:, pos]) / np.abs(x[:, pos])
    assert rel.max() <= max(cfg[4], REL_OUTLIER.get(cfg[1], 0.0))


@pytest.mark.parametrize("cfg", CONFIGS, ids=IDS)
def test_subnormal_inputs(cfg):
    f = fmt_of(cfg)
    k = max(f.info.align, 32)
    r = rng(4)
    x = np.concatenate([(r.standard_normal((1, k)) * 1e-39), (r.standard_normal((1, k)) * 1e-44),
                        np.full((1, k), 1.4e-45), r.standard_normal((1, k))]).astype(np.float32)
    p = f.encode(x)
    xh = p.decode()
    assert np.isfinite(xh).all()
    assert np.all(np.abs(xh) <= 1.5 * np.abs(x).max(axis=1, keepdims=True) + 1e-44)
    assert_packed_equal(f.encode(xh, **fixed_kwargs(f, p)), p, cfg[0])


@pytest.mark.parametrize("cfg", CONFIGS, ids=IDS)
def test_non_multiple_length_raises(cfg):
    f = fmt_of(cfg)
    a = f.info.align
    bad = [2 * a + 1] + ([a // 2] if a > 2 else [])
    if a == 1:  # any length is valid
        assert F.get(cfg[1], **cfg[2]).encode(np.ones((2, 3), np.float32)).codes.shape == (2, 3)
        return
    for k in bad:
        with pytest.raises(ValueError):
            f.encode(np.ones((2, k), np.float32))
        with pytest.raises(ValueError):
            f.encode(np.ones((k, 2), np.float32), axis=0)


@pytest.mark.parametrize("cfg", CONFIGS, ids=IDS)
def test_axis_equivalence(cfg):
    """Encoding along axis 0 is encoding the transpose along the last axis."""
    f = fmt_of(cfg)
    k = 2 * max(f.info.align, 2)
    x = rng(5).standard_normal((k, 3)).astype(np.float32)
    p0, p1 = f.encode(x, axis=0), f.encode(x.T.copy())
    assert_bit_exact(p0.codes, p1.codes, "codes")
    assert_bit_exact(p0.decode(), p1.decode().T.copy(), "decode")


# ---- NaN / Inf -------------------------------------------------------------------------------

@pytest.mark.parametrize("cfg", CONFIGS, ids=IDS)
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite(cfg, bad):
    f = fmt_of(cfg)
    fam = f.info.family
    k = max(f.info.align, 4)
    x = rng(6).standard_normal((2, 2 * k)).astype(np.float32)
    x[0, 1] = bad
    if fam in ("int", "ovp"):
        with pytest.raises(QuellmError):
            f.encode(x)
        return
    p = f.encode(x)
    xh = p.decode()
    nblk = 2 * k // f.info.block_size
    nan_scale = 0x7F if fam == "nvfp4" else 0xFF
    assert p.scales[0, 0] == nan_scale and np.all(p.scales[1] != nan_scale)
    assert np.isnan(xh[0, :f.info.block_size]).all()
    assert np.isfinite(xh[0, f.info.block_size:]).all() and np.isfinite(xh[1]).all()
    assert nblk >= 1
    # the other blocks are encoded exactly as if the bad block were absent
    good = f.encode(x[1:])
    assert_bit_exact(p.codes[1], good.codes[0], "codes of the clean row")


def test_mx_decodes_special_element_codes():
    f = F.get("mxfp8_e5m2")
    codes = np.zeros((1, 32), np.uint8)
    codes[0, :3] = [0x7C, 0xFC, 0x7D]
    v = f.decode_blocks(codes, np.array([127], np.uint8))
    assert v[0, 0] == np.inf and v[0, 1] == -np.inf and np.isnan(v[0, 2])
    e4 = F.get("mxfp8_e4m3").decode_blocks(np.full((1, 32), 0x7F, np.uint8), np.array([127], np.uint8))
    assert np.isnan(e4).all()
    i8 = F.get("mxint8").decode_blocks(np.full((1, 32), 0x80, np.uint8), np.array([127], np.uint8))
    assert (i8 == -2.0).all()


# ---- golden bytes ----------------------------------------------------------------------------

def test_golden_ovp_worked_example():
    """SPEC §1.6."""
    x = np.array([0.31, 5.20, -0.07, 0.12, 0.50, -0.45, 3.90, -6.60], np.float32)
    p = F.get("ovp4").encode(x, scale=0.1)
    assert_bit_exact(p.codes.ravel(), np.array([0x58, 0x1F, 0xC5, 0x84], np.uint8), "§1.6 bytes")
    want = (np.array([0, 48, -1, 1, 5, -4, 32, 0], np.float32) * np.float32(0.1)).astype(np.float32)
    assert_bit_exact(p.decode(), want, "§1.6 values")
    # keep_larger keeps -66 -> -64 and prunes 3.9 instead
    q = F.get("ovp4", both_outliers="keep_larger").encode(x, scale=0.1)
    assert q.codes.ravel()[3] == 0xE8  # identifier low, -64 = abfloat 1110 high


MX_GOLDEN = {  # SPEC §2.5: scale code, P (first 8), V^ (first 8)
    "mxfp4": (0x7F, [0, 0, -0.5, 1, 1.5, -2, 3, 6], [0, 0, -0.5, 1, 1.5, -2, 3, 6]),
    "mxfp6_e2m3": (0x7F, [0, 0.125, -0.25, 0.75, 1.375, -2.5, 3, 6], [0, 0.125, -0.25, 0.75, 1.375, -2.5, 3, 6]),
    "mxfp6_e3m2": (0x7D, [0, 0.4375, -1, 3, 5, -10, 12, 24], [0, 0.109375, -0.25, 0.75, 1.25, -2.5, 3, 6]),
    "mxfp8_e4m3": (0x79, [0, 7, -16, 48, 88, -160, 192, 384], [0, 0.109375, -0.25, 0.75, 1.375, -2.5, 3, 6]),
    "mxint8": (0x81, np.array([0, 2, -4, 12, 22, -40, 50, 94]) / 64,
               [0, 0.125, -0.25, 0.75, 1.375, -2.5, 3.125, 5.875]),
}


@pytest.mark.parametrize("name", list(MX_GOLDEN))
def test_golden_mx_worked_example(name):
    """SPEC §2.5."""
    v = np.zeros(32, np.float32)
    v[:8] = [0.0, 0.11, -0.26, 0.75, 1.37, -2.5, 3.1, 5.9]
    f = F.get(name)
    p = f.encode(v)
    code, pw, vw = MX_GOLDEN[name]
    assert p.scales.shape == (1, 1) and p.scales[0, 0] == code
    xh = p.decode()
    x_scale = 2.0 ** (code - 127)
    np.testing.assert_array_equal(xh[:8] / x_scale, np.array(pw, np.float32))
    np.testing.assert_array_equal(xh[:8], np.array(vw, np.float32))
    assert not xh[8:].any()


def test_golden_mx_codes():
    v = np.zeros(32, np.float32)
    v[:8] = [0.0, 0.11, -0.26, 0.75, 1.37, -2.5, 3.1, 5.9]
    assert F.get("mxfp8_e4m3").encode(v).codes[0, :8].tobytes().hex() == "004ed8646bf2747c"
    assert F.get("mxint8").encode(v).codes[0, :8].tobytes().hex() == "0002fc0c16d8325e"
    assert F.get("mxfp4").encode(v).codes[0, :4].tobytes().hex() == "0029c375"
    assert F.unpack_codes(F.get("mxfp4").encode(v).codes, 4)[0, :8].tolist() == [0, 0, 9, 2, 3, 12, 5, 7]


def test_golden_mx_saturation():
    """SPEC §2.5: block max 7.9 in MXFP4 -> shared 0, 6.0; block max 500 in E4M3 -> shared 0, 448."""
    v = np.zeros(32, np.float32)
    v[3] = 7.9
    p = F.get("mxfp4").encode(v)
    assert p.scales[0, 0] == 127 and p.decode()[3] == 6.0
    v[3] = -500
    p = F.get("mxfp8_e4m3").encode(v)
    assert p.scales[0, 0] == 127 and p.decode()[3] == -448.0 and p.codes[0, 3] == 0xFE


def test_golden_fp6_layout():
    """Four 6-bit codes in three bytes: little-endian bit stream."""
    c = np.array([[1, 2, 3, 4, 0x3F, 0, 0x15, 0x2A]], np.uint8)
    b = F.pack_codes(c, 6)
    assert b.tobytes().hex() == "813010" + "3f50a9"
    assert_bit_exact(F.unpack_codes(b, 6), c, "fp6 unpack")


def test_golden_fp6_mx_bytes():
    """E2M3 codes of the §2.5 block: 0, 0.125, -0.25, 0.75 -> 0x00, 0x01, 0x22, 0x06 packed."""
    v = np.zeros(32, np.float32)
    v[:8] = [0.0, 0.11, -0.26, 0.75, 1.37, -2.5, 3.1, 5.9]
    p = F.get("mxfp6_e2m3").encode(v)
    word = 0x00 | 0x01 << 6 | 0x22 << 12 | 0x06 << 18
    assert p.codes[0, :3].tolist() == [word & 0xFF, (word >> 8) & 0xFF, word >> 16]


def test_golden_int4_packing():
    """SPEC §3.7: [-8, 7, 3, -1] -> 0x78, 0xF3."""
    assert_bit_exact(F.pack_int4([-8, 7, 3, -1]), np.array([0x78, 0xF3], np.uint8), "pack")
    p = F.get("int4").encode(np.array([-8, 7, 3, -1], np.float32), scale=1.0)
    assert_bit_exact(p.codes.ravel(), np.array([0x78, 0xF3], np.uint8), "encode")
    q = np.arange(-8, 8).repeat(2)
    assert_bit_exact(F.unpack_int4(F.pack_int4(q)), q.astype(np.int8), "unpack")


def test_golden_quarot_activation_example():
    """SPEC §3.6: per-token symmetric int4, clip 0.9, the extra negative code."""
    x = np.array([0.8, -3.1, 0.05, 2.2, -0.4, 1.0, 0.0, -1.7], np.float32)
    p = F.get("int4", clip=0.9, granularity="token").encode(x)
    assert F.unpack_int4(p.codes).ravel().tolist() == [2, -8, 0, 6, -1, 3, 0, -4]
    assert p.scales[0, 0] == np.float32(np.float32(0.9) * np.float32(3.1)) / np.float32(7)
    np.testing.assert_allclose(p.decode(), [0.797, -3.189, 0, 2.391, -0.399, 1.196, 0, -1.594], atol=1e-3)


def test_golden_quarot_kv_example():
    """SPEC §3.6: asymmetric (Z-inclusive) int4, clip 0.95."""
    k = np.array([0.2, -1.3, 0.7, 2.9, -0.1, 0.4, 1.1, -0.6], np.float32)
    p = F.get("int4", sym=False, clip=0.95, group=8).encode(k)
    assert F.unpack_codes(p.codes, 4).ravel().tolist() == [6, 0, 8, 15, 5, 7, 9, 3]
    assert p.zeros[0, 0] == 5 and p.scales[0, 0] == pytest.approx(0.266, abs=1e-6)


def test_golden_bfp_example():
    """SPEC §2.7: [0.9, -0.3, 0.05, 0.6]; BFP12 q = [7, -2, 0, 5], BFP16 q = [115, -38, 6, 77]."""
    x = np.array([0.9, -0.3, 0.05, 0.6], np.float32)
    p = F.get("bfp", mantissa_bits=4, block=4).encode(x)
    assert p.scales[0, 0] == 126
    assert F.unpack_codes(p.codes, 4).ravel().tolist() == [7, 8 | 2, 0, 5]
    assert_bit_exact(p.decode(), np.array([0.875, -0.25, 0, 0.625], np.float32), "BFP12")
    p = F.get("bfp", mantissa_bits=8, block=4).encode(x)
    assert p.codes.ravel().tolist() == [115, 128 | 38, 6, 77]


def test_bfp16_equals_mxint8():
    """§2.7: BFP16 with block 32 is MXINT8 (same exponent, same rounding, ±127 clamp)."""
    x = (rng(7).standard_normal((8, 64)) * np.exp(rng(8).uniform(-20, 20, (8, 1)))).astype(np.float32)
    for rnd in ("rne", "rna"):
        a = F.get("bfp", mantissa_bits=8, block=32, rounding=rnd).encode(x)
        b = F.get("mxint8", rounding=rnd).encode(x)
        assert_bit_exact(a.scales, b.scales, "exponents")
        assert_bit_exact(a.decode(), b.decode(), "values")


# ---- rounding ties ---------------------------------------------------------------------------

def test_mx_e2m1_ties():
    """§2.5: 0.25 -> 0 / 0.5, 1.25 -> 1 / 1.5, 2.5 -> 2 / 3, 5 -> 4 / 6 (RNE / RNA), with X = 1."""
    v = np.zeros(32, np.float32)
    v[:8] = [0.25, 1.25, 2.5, 5.0, -0.25, -1.25, -2.5, 6.0]
    assert F.get("mxfp4").quantize_dequantize(v)[:8].tolist() == [0, 1, 2, 4, -0.0, -1, -2, 6]
    assert F.get("mxfp4", rounding="rna").quantize_dequantize(v)[:8].tolist() == [0.5, 1.5, 3, 6, -0.5, -1.5, -3, 6]


def test_mxint8_ties():
    v = np.zeros(32, np.float32)
    v[:4] = [1.5, 2.5 / 64, 3.5 / 64, -2.5 / 64]  # amax in [1, 2): quantum 1/64
    assert (F.get("mxint8").quantize_dequantize(v)[:4] * 64).tolist() == [96, 2, 4, -2]
    assert (F.get("mxint8", rounding="rna").quantize_dequantize(v)[:4] * 64).tolist() == [96, 3, 4, -3]


def test_int_ties():
    x = np.array([2.5, -2.5, 3.5, 0.5, -0.5, 1.5], np.float32)
    assert F.get("int4").quantize_dequantize(x, scale=1.0).tolist() == [2, -2, 4, 0, -0.0, 2]
    assert F.get("int8", sym=False).quantize_dequantize(x, scale=1.0, zero=3.0).tolist() == [2, -2, 4, 0, 0, 2]


def test_ovp_ties():
    """§1.4 step 3: ties toward +inf, except a normal/outlier boundary tie goes to the outlier."""
    x = np.array([-4.5, 0, 9.5, 0, -9.5, 0, 2.5, 0, 80, 0, -80, 0, 96.5, 0, -200, 0], np.float32)
    got = F.get("ovp4").quantize_dequantize(x, scale=1.0)
    assert got.tolist() == [-4, 0, 12, 0, -12, 0, 3, 0, 96, 0, -64, 0, 96, 0, -96, 0]
    got = F.get("ovp4_flint").quantize_dequantize(np.array([20, -20, 5, -7], np.float32), scale=1.0)
    assert got.tolist() == [24, 0, 6, -6]
    got = F.get("ovp8").quantize_dequantize(np.array([129.5, 0, -129.5, 0, 126.5, -126.5], np.float32), scale=1.0)
    assert got.tolist() == [132, 0, -132, 0, 127, -126]


def test_bfp_ties():
    x = np.array([7, 2.5, -1.5, 0.5], np.float32)  # E = 2, m = 4: quantum 1
    assert F.get("bfp", block=4).quantize_dequantize(x).tolist() == [7, 2, -2, 0]
    assert F.get("bfp", block=4, rounding="rna").quantize_dequantize(x).tolist() == [7, 3, -2, 1]
    # a rounding carry out of the mantissa saturates: 7.6 -> 7 (exponent kept)
    assert F.get("bfp", block=4).quantize_dequantize(np.array([7.6, 0, 0, 0], np.float32))[0] == 7


def test_nvfp4_ties_and_scales():
    x = np.zeros(16, np.float32)
    x[:5] = [6, 0.25, 2.5, 5, -5]
    p = F.get("nvfp4").encode(x, tensor_scale=1.0)
    assert p.scales[0, 0] == 0x38 and p.tensor_scale[0] == 1.0  # E4M3 1.0
    assert p.decode()[:5].tolist() == [6, 0, 2, 4, -4]
    assert F.get("nvfp4", rounding="rna").quantize_dequantize(x, tensor_scale=1.0)[:5].tolist() == [6, 0.5, 3, 6, -6]
    # derived tensor scale: amax / (6 * 448); the block holding amax gets scale 448
    y = rng(9).standard_normal((4, 32)).astype(np.float32)
    p = F.get("nvfp4").encode(y)
    amax = np.abs(y).max()
    assert p.tensor_scale[0] == np.float32(amax) / np.float32(2688)
    assert F.decode_float(p.scales, "e4m3").max() == 448


def test_nvfp4_tiny_blocks_flush():
    """A block whose E4M3 scale underflows to 0 decodes to zeros."""
    x = np.zeros((2, 16), np.float32)
    x[0, 0] = 1e6
    x[1, :] = 1e-6
    p = F.get("nvfp4").encode(x)
    assert p.scales[1, 0] == 0 and not p.decode()[1].any()


# ---- element casts vs ml_dtypes --------------------------------------------------------------

def _cast_inputs(elem, seed=10):
    spec = F.FLOAT_ELEMENTS[elem]
    tab = F.decode_float(np.arange(1 << spec.bits), elem).astype(np.float64)
    pos = np.unique(tab[np.isfinite(tab) & (tab >= 0)])
    mids = (pos[:-1] + pos[1:]) / 2
    r = rng(seed)
    mx = spec.max_value
    vals = np.concatenate([pos, mids, np.nextafter(mids, 0), np.nextafter(mids, np.inf),
                           r.uniform(0, mx, 2000), np.exp(r.uniform(-120, math.log(mx), 2000)),
                           [1e-45, 1e-40, 1e-38]])
    vals = vals[vals <= mx]
    x = np.concatenate([vals, -vals]).astype(np.float32)
    return x[np.abs(x) <= mx]


@pytest.mark.parametrize("elem", list(F.FLOAT_ELEMENTS))
def test_cast_matches_ml_dtypes(elem):
    x = _cast_inputs(elem)
    got = F.encode_float(x, elem)
    want = x.astype(ML[elem]).view(np.uint8)
    assert_bit_exact(got, want, f"{elem} codes")


@pytest.mark.parametrize("elem", list(F.FLOAT_ELEMENTS))
def test_decode_matches_ml_dtypes(elem):
    n = 1 << F.FLOAT_ELEMENTS[elem].bits
    got = F.decode_float(np.arange(n), elem)
    want = np.arange(n, dtype=np.uint8).view(ML[elem]).astype(np.float32)
    np.testing.assert_array_equal(got, want)  # NaN positions must agree too


@pytest.mark.parametrize("elem", list(F.FLOAT_ELEMENTS))
@pytest.mark.parametrize("rounding", ["rne", "rna"])
def test_cast_matches_brute_force_nearest(elem, rounding):
    """Independent oracle for both rounding modes: nearest finite value, ties to the even code
    (RNE) or the larger magnitude (RNA)."""
    spec = F.FLOAT_ELEMENTS[elem]
    x = _cast_inputs(elem, seed=11)
    codes = np.arange(1 << (spec.bits - 1))
    vals = F.decode_float(codes, elem).astype(np.float64)
    ok = np.isfinite(vals) & (codes <= spec.max_code)
    codes, vals = codes[ok], vals[ok]
    d = np.abs(np.abs(x.astype(np.float64))[:, None] - vals[None, :])
    best = d.min(axis=1, keepdims=True)
    cand = np.where(d == best, codes[None, :], -1)
    if rounding == "rne":
        even = np.where((cand >= 0) & (cand % 2 == 0), cand, -1).max(axis=1)
        pick = np.where(even >= 0, even, cand.max(axis=1))
    else:
        pick = cand.max(axis=1)
    want = (pick | (np.signbit(x) << (spec.bits - 1))).astype(np.uint8)
    assert_bit_exact(F.encode_float(x, elem, rounding), want, f"{elem} {rounding}")


@pytest.mark.parametrize("elem", list(F.FLOAT_ELEMENTS))
def test_cast_saturates(elem):
    spec = F.FLOAT_ELEMENTS[elem]
    mx = spec.max_value
    x = np.array([mx * 1.01, mx * 1.2, 1e30, np.inf, -mx * 1.3, -np.inf], np.float32)
    got = F.encode_float(x, elem)
    sign = 1 << (spec.bits - 1)
    assert got.tolist() == [spec.max_code] * 4 + [spec.max_code | sign] * 2
    if spec.nan_code is None:
        with pytest.raises(QuellmError):
            F.encode_float([np.nan], elem)
    else:
        assert np.isnan(F.decode_float(F.encode_float([np.nan], elem), elem)).all()


def test_e8m0_matches_ml_dtypes():
    r = rng(12)
    k = np.arange(-127, 127)
    x = np.concatenate([np.ldexp(1.0, k), 1.5 * np.ldexp(1.0, k), np.nextafter(1.5 * np.ldexp(1.0, k), 0),
                        np.exp(r.uniform(-87, 88, 3000)), [2.0**127, 1e-39, 2.0**-128, 1e-45]])
    x = x.astype(np.float32)
    assert_bit_exact(F.encode_e8m0(x), x.astype(ml_dtypes.float8_e8m0fnu).view(np.uint8), "e8m0 cast")
    codes = np.arange(256, dtype=np.uint8)
    np.testing.assert_array_equal(F.decode_e8m0(codes), codes.view(ml_dtypes.float8_e8m0fnu).astype(np.float32))
    assert F.encode_e8m0([0.0, -1.0, np.nan, np.inf, 1.6 * 2.0**127]).tolist() == [255, 255, 255, 255, 254]


def test_e8m0_floor():
    x = np.array([1.0, 1.999, 2.0, 0.75, 5.9, 2.0**-126, 1e-40, 0.0, 3e38, np.nan, np.inf], np.float32)
    assert F.floor_log2_e8m0(x).tolist() == [127, 127, 128, 126, 129, 1, 0, 0, 254, 255, 255]


# ---- MX properties (SPEC §2.6) ---------------------------------------------------------------

mx_blocks = hnp.arrays(np.float32, st.tuples(st.integers(1, 3), st.just(32)),
                       elements=st.floats(-1e6, 1e6, width=32) | st.sampled_from([0.0, 1e-40, -2e-39, 3e-30]))


@pytest.mark.parametrize("name", MX_NAMES)
@given(x=mx_blocks, j=st.integers(-20, 20))
def test_mx_properties(name, x, j):
    f = F.get(name)
    p = f.encode(x)
    # 2: finite input -> scale code in [0, 254]
    assert p.scales.max() <= 254
    # 5: sign symmetry
    n = f.encode(-x)
    assert_bit_exact(n.scales, p.scales, "scales of -x")
    if name == "mxint8":
        assert_bit_exact(n.codes, ((-p.codes.view(np.int8).astype(np.int64)) & 0xFF).astype(np.uint8), "int8 -x")
    else:
        bits = f.info.element_bits
        c = F.unpack_codes(p.codes, bits) ^ (1 << (bits - 1))
        assert_bit_exact(n.codes, F.pack_codes(c, bits), "sign bits of -x")
    # 4: power-of-two equivariance where the scale does not clamp
    # (exact only when no scale clamps and no element of x or 2^j x is a float32 subnormal)
    xs = (x.astype(np.float64) * 2.0**j).astype(np.float32)
    ok = (p.scales.astype(int) + j >= 1) & (p.scales.astype(int) + j <= 254)
    normal = np.all((np.abs(x) >= 2.0**-100) | (x == 0)) and np.all(np.abs(x).max(axis=1) > 0)
    if np.all(ok) and normal:
        q = f.encode(xs)
        assert_bit_exact(q.codes, p.codes, "codes of 2^j x")
        assert_bit_exact(q.scales, (p.scales.astype(int) + j).astype(np.uint8), "scales of 2^j x")
    # 6, 7: monotone within a block, error bound, saturation
    xh = p.decode().astype(np.float64)
    xscale = F.decode_e8m0(p.scales).astype(np.float64)
    x64 = x.astype(np.float64)
    for b in range(x.shape[0]):
        order = np.argsort(x64[b], kind="stable")
        assert np.all(np.diff(xh[b][order]) >= 0)
    if name == "mxint8":
        ulp = np.broadcast_to(xscale / 64, x.shape)
        maxv = 127 / 64
    else:
        spec = F.FLOAT_ELEMENTS[MX_ELEM[name]]
        pv = np.abs(x64) / xscale
        e = np.floor(np.log2(np.where(pv > 0, pv, 1.0)))
        ulp = xscale * 2.0 ** (np.maximum(e, 1 - spec.bias) - spec.mbits)
        maxv = spec.max_value
    sat = np.abs(x64) > maxv * xscale
    assert np.all(np.abs(x64 - xh)[~sat] <= ulp[~sat] / 2 * (1 + 1e-12))
    assert np.all(np.abs(xh[sat]) == np.broadcast_to(maxv * xscale, x.shape)[sat])
    assert np.all(np.abs(xh) <= maxv * xscale)


@pytest.mark.parametrize("name", MX_NAMES)
def test_mx_dot_product_factorises(name):
    """§2.6.9: sum(Vx^ Vw^) == 2^(ex+ew) sum(Px Pw) exactly in f64."""
    f = F.get(name)
    r = rng(13)
    a = f.encode(r.standard_normal(32).astype(np.float32) * 3)
    b = f.encode(r.standard_normal(32).astype(np.float32) / 7)
    xa, xb = a.decode().astype(np.float64), b.decode().astype(np.float64)
    ea, eb = int(a.scales[0, 0]) - 127, int(b.scales[0, 0]) - 127
    pa, pb = xa * 2.0**-ea, xb * 2.0**-eb
    assert np.sum(xa * xb) == 2.0 ** (ea + eb) * np.sum(pa * pb)


def test_mx_representable_roundtrip_exact():
    """§2.6.1: V = X * P with P representable and max|P| in the top binade is reproduced exactly."""
    for name, elem in MX_ELEM.items():
        spec = F.FLOAT_ELEMENTS[elem]
        tab = F.decode_float(np.arange(1 << spec.bits), elem)
        tab = tab[np.isfinite(tab)]
        p = rng(14).choice(tab, (4, 32))
        p[:, 0] = spec.max_value
        v = (p.astype(np.float64) * 2.0 ** rng(15).integers(-40, 40, (4, 1))).astype(np.float32)
        assert_bit_exact(F.get(name).quantize_dequantize(v), v, name)


def test_mx_subnormal_amax_scale():
    """amax zero or float32-subnormal -> e = -127; shared clamps to -127 (code 0)."""
    for name in MX_NAMES:
        v = np.zeros(32, np.float32)
        v[0] = 1e-39
        p = F.get(name).encode(v)
        assert p.scales[0, 0] == 0
        assert F.get(name).encode(np.zeros(32, np.float32)).scales[0, 0] == 0


# ---- int / BFP / nvfp4 properties ------------------------------------------------------------

rows = hnp.arrays(np.float32, st.tuples(st.integers(1, 4), st.sampled_from([32, 64])),
                  # no values near the float32 subnormal range, where scales lose bits and
                  # power-of-two equivariance is not exact
                  elements=st.floats(-1e3, 1e3, width=32).map(lambda v: v if abs(v) >= 1e-20 else 0.0))


@given(x=rows, j=st.integers(-10, 10))
def test_int_properties(x, j):
    """§3.8.5-6: code ranges, s/2 error for unclipped values, symmetry, power-of-two equivariance."""
    f = F.get("int4", group=32, clip=0.9)
    p = f.encode(x)
    q = F.unpack_int4(p.codes)
    assert q.min() >= -8 and q.max() <= 7
    s = np.repeat(p.scales.astype(np.float64), 32, axis=1)
    xh = p.decode().astype(np.float64)
    inside = (x / s >= -8.5) & (x / s <= 7.5)
    assert np.all(np.abs(xh - x)[inside] <= s[inside] / 2 * (1 + 1e-6))
    g = F.get("int4", group=32)
    np.testing.assert_array_equal(g.quantize_dequantize(-x), -g.quantize_dequantize(x), "symmetry")
    a = F.get("int4", group=32, sym=False)
    pa = a.encode(x)
    assert F.unpack_codes(pa.codes, 4).max() <= 15
    xa = pa.decode().reshape(-1, 32).astype(np.float64)
    xg = x.reshape(-1, 32).astype(np.float64)
    sa = pa.scales.reshape(-1, 1).astype(np.float64)
    for red in (np.min, np.max):  # with clip 1 the min and max of each group come back within s/2
        assert np.all(np.abs(red(xa, 1, keepdims=True) - red(xg, 1, keepdims=True)) <= sa / 2 * (1 + 1e-5) + 1e-30)
    for h in (f, a, F.get("int8", granularity="tensor")):
        xs = (x * np.float32(2.0**j)).astype(np.float32)
        p0, p1 = h.encode(x), h.encode(xs)
        assert_bit_exact(p1.codes, p0.codes, f"{h} codes of 2^j x")
        assert_bit_exact(p1.decode(), (p0.decode() * np.float32(2.0**j)).astype(np.float32), f"{h} 2^j")


@given(x=rows, j=st.integers(-10, 10))
def test_bfp_nvfp4_properties(x, j):
    for f in (F.get("bfp"), F.get("bfp", mantissa_bits=8, block=16), F.get("nvfp4")):
        p = f.encode(x)
        n = f.encode(-x)
        np.testing.assert_array_equal(n.decode(), -p.decode(), f"{f} symmetry")  # +0 == -0
        q = f.encode((x * np.float32(2.0**j)).astype(np.float32))
        assert_bit_exact(q.codes, p.codes, f"{f} codes of 2^j x")
        if f.name == "bfp":
            ok = (p.scales > 0) & (p.scales < 254 - 10)
            assert_bit_exact(q.scales[ok], (p.scales.astype(int)[ok] + j).astype(np.uint8), "bfp 2^j scales")
        else:
            assert_bit_exact(q.scales, p.scales, "nvfp4 block scales")
            if np.abs(x).max() > 0:  # (an all-zero tensor has tensor scale 1)
                assert q.tensor_scale[0] == p.tensor_scale[0] * np.float32(2.0**j)


def test_bfp_error_bound():
    x = (rng(16).standard_normal((64, 32)) * np.exp(rng(17).uniform(-10, 10, (64, 1)))).astype(np.float32)
    for m in (4, 6, 8):
        p = F.get("bfp", mantissa_bits=m).encode(x)
        d = np.repeat(2.0 ** (p.scales.astype(np.float64) - 127 + 2 - m), 32, axis=1)
        err = np.abs(p.decode().astype(np.float64) - x)
        top = np.abs(x) / d > (1 << (m - 1)) - 0.5  # the saturated top of the range
        assert np.all(err[~top] <= d[~top] / 2)
        assert np.all(err[top] <= d[top])


# ---- OVP properties (SPEC §1.7) --------------------------------------------------------------

OVP_NAMES = ["ovp4", "ovp4_flint", "ovp8"]

ovp_rows = hnp.arrays(np.float32, st.tuples(st.integers(1, 3), st.sampled_from([2, 8, 32])),
                      elements=st.floats(-100, 100, width=32) | st.sampled_from([0.0, 1e3, -2e3, 5e4]))


@pytest.mark.parametrize("name", OVP_NAMES)
@pytest.mark.parametrize("policy", ["keep_first", "keep_larger"])
@given(x=ovp_rows, s=st.floats(0.01, 10))
def test_ovp_pair_properties(name, policy, x, s):
    """Properties 1, 2 (codes), 6 (sign symmetry), 7 (equivariance) and 3 (normal pairs = plain int4)."""
    f = F.get(name, both_outliers=policy)
    t = f.t
    s = np.float32(s)
    p = f.encode(x, scale=s)
    v = np.rint(p.decode().astype(np.float64) / s)  # grid values are integers
    # 1: at most one element of a pair beyond normal_max, and then the other is 0
    lo, hi = v[:, 0::2], v[:, 1::2]
    big_lo, big_hi = np.abs(lo) > t.normal_max, np.abs(hi) > t.normal_max
    assert not np.any(big_lo & big_hi)
    assert np.all(hi[big_lo] == 0) and np.all(lo[big_hi] == 0)
    # 2: identifier pair never emitted; an abfloat slot never holds the identifier or 0
    if t.bits == 4:
        cl, ch = p.codes & 0xF, p.codes >> 4
    else:
        cl, ch = p.codes[:, 0::2], p.codes[:, 1::2]
    assert not np.any((cl == t.ident) & (ch == t.ident))
    assert not np.any((cl == t.ident) & ((ch == 0) | (ch == t.ident)))
    assert not np.any((ch == t.ident) & ((cl == 0) | (cl == t.ident)))
    # 6: sign symmetry away from exact ties
    xv = (x / s).astype(np.float64)
    if not np.any(np.isin(xv, t.mids.astype(np.float64)) | np.isin(-xv, t.mids.astype(np.float64))):
        np.testing.assert_array_equal(f.quantize_dequantize(-x, scale=s), -p.decode(), "Q(-x) = -Q(x)")
    # 7: Q(c x; c s) = c Q(x; s)
    c = np.float32(4.0)
    assert_bit_exact(f.quantize_dequantize(x * c, scale=s * c), (p.decode() * c).astype(np.float32), "equivariance")
    # 3: pairs without an outlier = plain nearest int (ties up) clamped to the normal range
    if name == "ovp4":
        vv = (x / s).astype(np.float32).astype(np.float64)
        plain = np.clip(np.floor(vv + 0.5), -7, 7)
        normal_el = (vv < 9.5) & (vv > -9.5)
        pair_ok = np.repeat(normal_el[:, 0::2] & normal_el[:, 1::2], 2, axis=1)
        want = (plain.astype(np.float32) * s).astype(np.float32)
        assert np.all(p.decode()[pair_ok] == want[pair_ok])


def test_ovp_keep_policies():
    x = np.array([20.0, -66.0, 66.0, 20.0, -30, 30], np.float32)
    assert F.get("ovp4").quantize_dequantize(x, scale=1.0).tolist() == [24, 0, 64, 0, -32, 0]
    larger = F.get("ovp4", both_outliers="keep_larger")
    assert larger.quantize_dequantize(x, scale=1.0).tolist() == [0, -64, 64, 0, -32, 0]


def _ovp_candidates(row, normal_max):
    x64 = row.astype(np.float64)
    mu, sd = x64.mean(), x64.std(ddof=1)
    xmax = max(abs(mu + 3 * sd), abs(mu - 3 * sd))
    return [np.float32(xmax * k / 100 / normal_max) for k in range(75, 250, 2)]


@pytest.mark.parametrize("name", OVP_NAMES)
@pytest.mark.parametrize("gran", ["row", "tensor"])
def test_ovp_scale_search_brute_force(name, gran):
    """Property 8: the chosen scale is one of the 88 candidates with MSE <= every other."""
    f = F.get(name, granularity=gran)
    x = rng(18).standard_t(3, (3, 64)).astype(np.float32)
    p = f.encode(x)
    groups = [x.reshape(-1)] if gran == "tensor" else list(x)
    for i, g in enumerate(groups):
        cands = _ovp_candidates(g, f.t.normal_max)
        assert len(cands) == 88
        chosen = p.scales.reshape(-1)[i]
        assert chosen in cands
        mses = [float(np.mean((f.quantize_dequantize(g, scale=c).astype(np.float64) - g) ** 2)) for c in cands]
        got = float(np.mean((f.quantize_dequantize(g, scale=chosen).astype(np.float64) - g) ** 2))
        assert got <= min(mses)
        assert cands.index(chosen) == int(np.argmin(mses))


def test_ovp_search_equivariance_and_symmetry():
    x = rng(19).standard_t(4, (4, 64)).astype(np.float32)
    for name in OVP_NAMES:
        f = F.get(name)
        p = f.encode(x)
        q = f.encode(x * np.float32(8))
        assert_bit_exact(q.codes, p.codes, f"{name} searched scale, 8x")
        assert_bit_exact(q.scales, (p.scales * np.float32(8)).astype(np.float32), f"{name} scales 8x")
        n = f.encode(-x)
        assert_bit_exact(n.scales, p.scales, f"{name} scales of -x")


def test_ovp4_select():
    x = rng(20).standard_t(2, (8, 64)).astype(np.float32)
    choice, sse = F.ovp4_select(x)
    assert choice == min(sse, key=lambda k: (sse[k], k != "ovp4"))
    for name in ("ovp4", "ovp4_flint"):
        xh = F.get(name, granularity="tensor").quantize_dequantize(x)
        assert sse[name] == pytest.approx(float(np.sum((xh.astype(np.float64) - x) ** 2)))


@pytest.mark.parametrize("name", OVP_NAMES)
def test_ovp_snap_table_matches_midpoint_search(name):
    """The table lookup used by ``snap`` equals the midpoint definition (``snap_reference``)."""
    t = F.get(name).t
    r = rng(23)
    v = np.concatenate([r.standard_normal(20000) * t.grid[-1] / 2, t.mids, np.nextafter(t.mids, np.inf),
                        np.nextafter(t.mids, -np.inf), t.grid, [3e38, -3e38, np.inf, -np.inf, 1e-45, -0.0]])
    v = v.astype(np.float32)
    assert_bit_exact(t.snap(v), t.snap_reference(v), "snap")


def test_ovp_odd_length_and_all_zero_row():
    with pytest.raises(QuellmError):
        F.get("ovp4").encode(np.ones(7, np.float32))
    x = np.zeros((2, 8), np.float32)
    x[1] = rng(21).standard_normal(8)
    p = F.get("ovp4").encode(x)
    assert p.scales[0, 0] == 1 and not p.codes[0].any()


# ---- Packed and safetensors ------------------------------------------------------------------

@pytest.mark.parametrize("cfg", CONFIGS, ids=IDS)
def test_packed_safetensors_roundtrip(cfg, tmp_path):
    f = fmt_of(cfg)
    k = 2 * max(f.info.align, 2)
    x = rng(22).standard_normal((k, 3, 2)).astype(np.float32)
    p = f.encode(x, axis=0)
    q = f.encode(x[:, 0, 0].copy())
    tensors = p.to_tensors("layers.0.w") | q.to_tensors("b")
    assert all(t.dtype in (np.uint8, np.float32) for t in tensors.values())
    back = load(save(tensors))
    p2 = F.Packed.from_tensors(back, "layers.0.w")
    assert p2.format == p.format and p2.params == p.params and p2.shape == p.shape and p2.axis == 0
    assert_packed_equal(p2, p, cfg[0])
    assert_bit_exact(p2.decode(), p.decode(), "decode after load")
    assert p2.nbytes == p.nbytes
    save_file(tensors, str(tmp_path / "p.safetensors"))
    p3 = F.Packed.from_tensors(load_file(str(tmp_path / "p.safetensors")), "b")
    assert_bit_exact(p3.decode(), q.decode(), "file round trip")


def test_packed_nbytes_and_errors():
    p = F.get("mxfp4").encode(np.ones((4, 64), np.float32))
    assert p.codes.shape == (4, 32) and p.scales.shape == (4, 2) and p.nbytes == 4 * 32 + 8
    p = F.get("int4", sym=False, group=32).encode(np.ones((4, 64), np.float32))
    assert p.nbytes == 4 * 32 + 4 * 2 * 4 * 2
    t = p.to_tensors("w")
    with pytest.raises(QuellmError):
        F.Packed.from_tensors({k: v for k, v in t.items() if k != "w.zeros"}, "w")
    with pytest.raises(QuellmError):
        F.Packed.from_tensors({k: v for k, v in t.items() if k != "w.format"}, "w")
    bad = dict(t)
    bad["w.codes"] = t["w.codes"][:, :-1]
    with pytest.raises(QuellmError):
        F.Packed.from_tensors(bad, "w")
    with pytest.raises(QuellmError):
        F.get("mxfp4").decode(p)
