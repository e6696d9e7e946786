"""The compiled extension: build info, ISA detection and capping, threads, f16/bf16 helpers."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import ml_dtypes
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import quellm
from quellm import _core

LEVELS = ["scalar", "avx2", "avx512"]


def run_python(code: str, **env: str) -> str:
    e = dict(os.environ)
    e.pop("QUELLM_ISA", None)
    e.update(env)
    out = subprocess.run([sys.executable, "-c", code], env=e, capture_output=True, text=True, check=True)
    return out.stdout


def test_info_keys():
    d = quellm.info()
    assert d["version"] == quellm.__version__
    assert d["isa"]["active"] in LEVELS
    assert d["isa"]["compiled"][0] == "scalar"
    assert d["isa"]["usable"] == quellm.isa_levels()
    assert d["threads"] >= 1
    assert set(d["cuda"]) >= {"compiled", "available", "reason"}
    assert d["cuda"]["compiled"] == quellm.HAS_CUDA
    text = quellm.format_info(d)
    assert "ISA: active" in text and "CUDA:" in text


def test_usable_levels_follow_cpu_features():
    f = _core.cpu_features()
    usable = quellm.isa_levels()
    assert usable[0] == "scalar"
    assert usable == LEVELS[: len(usable)]
    if "avx2" in usable:
        assert f["avx2"] and f["fma"] and f["os_avx"]
    if "avx512" in usable:
        assert f["avx512f"] and f["avx512bw"] and f["avx512vnni"] and f["os_avx512"]


@pytest.mark.parametrize("cap", LEVELS)
def test_isa_env_caps_level(cap):
    out = run_python("import quellm, json; print(json.dumps(quellm.info()['isa']))", QUELLM_ISA=cap)
    isa = json.loads(out)
    expect = min(LEVELS.index(cap), LEVELS.index(isa["usable"][-1]))
    assert isa["active"] == LEVELS[expect]
    assert isa["env"] == cap


def test_isa_env_unknown_is_reported_not_fatal():
    out = run_python("import quellm, json; print(json.dumps(quellm.info()['isa']))", QUELLM_ISA="sse9")
    isa = json.loads(out)
    assert isa["active"] == isa["usable"][-1]
    assert "sse9" in isa["env_error"]


def test_set_isa_round_trip():
    before = quellm.isa()
    try:
        for level in quellm.isa_levels():
            assert quellm.set_isa(level) == level
            assert quellm.isa() == level
        # asking for more than the machine has clamps to the best usable level
        assert quellm.set_isa("avx512") == quellm.isa_levels()[-1]
        with pytest.raises(ValueError, match="unknown ISA"):
            quellm.set_isa("neon")
    finally:
        quellm.set_isa(before)


def test_threads():
    before = quellm.num_threads()
    try:
        quellm.set_num_threads(3)
        assert quellm.num_threads() == 3
        with pytest.raises(ValueError):
            quellm.set_num_threads(0)
        assert quellm.num_threads() == 3
    finally:
        quellm.set_num_threads(before)


def test_cuda_available_never_raises():
    ok, why = quellm.cuda_available()
    assert isinstance(ok, bool) and isinstance(why, str) and why


# ---- f16 / bf16 conversion helpers (used by every kernel for half-precision I/O) --------------

SPECIAL = np.array(
    [0.0, -0.0, 1.0, -1.0, 65504.0, 65519.996, 65520.0, -65520.0, 1e-8, 5.96e-8, 2.98e-8, 2.9802322e-08,
     6.1035156e-05, 6.1e-05, 3.4e38, -3.4e38, np.inf, -np.inf, np.nan, 1.00390625, 1.01171875,
     np.float32(1) + np.float32(2**-8), np.float32(1) + np.float32(3 * 2**-9)],
    np.float32,
)

f32_any = hnp.arrays(np.float32, st.integers(0, 300), elements=st.floats(width=32, allow_nan=True, allow_infinity=True))
f32_bits = hnp.arrays(np.uint32, st.integers(0, 300)).map(lambda a: a.view(np.float32))


def _f16(x):
    with np.errstate(over="ignore", invalid="ignore"):
        return x.astype(np.float16)


def _same_bits_or_both_nan(got_bits, want, what):
    got = got_bits.view(want.dtype)
    nan = np.isnan(want.astype(np.float32))
    assert np.array_equal(np.isnan(got.astype(np.float32)), nan), what
    assert np.array_equal(got_bits[~nan], want[~nan].view(np.uint16)), what


@given(st.one_of(f32_any, f32_bits))
def test_f32_to_f16_matches_numpy(x):
    _same_bits_or_both_nan(_core.f32_to_f16_bits(x), _f16(x), "f16")


@given(st.one_of(f32_any, f32_bits))
def test_f32_to_bf16_matches_ml_dtypes(x):
    _same_bits_or_both_nan(_core.f32_to_bf16_bits(x), x.astype(ml_dtypes.bfloat16), "bf16")


def test_half_conversions_special_values():
    _same_bits_or_both_nan(_core.f32_to_f16_bits(SPECIAL), _f16(SPECIAL), "f16")
    _same_bits_or_both_nan(_core.f32_to_bf16_bits(SPECIAL), SPECIAL.astype(ml_dtypes.bfloat16), "bf16")


def test_half_to_f32_all_bit_patterns():
    bits = np.arange(65536, dtype=np.uint16)
    want16 = bits.view(np.float16).astype(np.float32)
    got16 = _core.f16_bits_to_f32(bits)
    assert np.array_equal(got16, want16, equal_nan=True)
    assert np.array_equal(got16.view(np.uint32)[~np.isnan(want16)], want16.view(np.uint32)[~np.isnan(want16)])
    wantb = bits.view(ml_dtypes.bfloat16).astype(np.float32)
    gotb = _core.bf16_bits_to_f32(bits)
    assert np.array_equal(gotb.view(np.uint32), wantb.view(np.uint32))


@pytest.mark.cuda
def test_cuda_conversions_match_host():
    rng = np.random.default_rng(0)
    x = np.concatenate([SPECIAL, rng.standard_normal(4096).astype(np.float32) * 1e3,
                        rng.integers(0, 2**32, 4096, dtype=np.uint32).view(np.float32)])
    f16, bf16 = _core.cuda_convert_selftest(x)
    assert np.array_equal(f16, _core.f32_to_f16_bits(x))
    assert np.array_equal(bf16, _core.f32_to_bf16_bits(x))
