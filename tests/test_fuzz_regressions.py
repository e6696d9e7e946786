"""Regression cases from fuzzing (``fuzz/``): every bad input must raise quellm's ``QuellmError``
(a ``ValueError``) quickly, never another exception, a warning, a hang or a huge allocation.

The fuzz-found inputs are committed under ``fuzz/regressions/<target>/`` and replayed through the
targets here, together with the seed corpora; each bug also has a small hand-written case below.
"""

from __future__ import annotations

import json
import os
import signal
import struct
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import TINY_LLAMA

import quellm
from quellm import _core, formats
from quellm.errors import CheckpointError, ConfigError, QuellmError

FUZZ = Path(__file__).resolve().parent.parent / "fuzz"
TARGETS = ["checkpoint", "gguf", "quantized", "formats"]


def _target(name):
    if name == "gguf":
        pytest.importorskip("gguf")
    os.environ["QUELLM_FUZZ_NO_INSTRUMENT"] = "1"  # atheris, if installed, must not patch quellm here
    sys.path.insert(0, str(FUZZ))
    try:
        import _harness

        return _harness, __import__(f"fuzz_{name}")
    finally:
        sys.path.remove(str(FUZZ))


def _cases():
    for t in TARGETS:
        for kind in ("regressions", "corpus"):
            for f in sorted((FUZZ / kind / t).glob("*")):
                yield pytest.param(t, f, id=f"{t}/{kind}/{f.name[:24]}")


@pytest.mark.parametrize("target, path", list(_cases()))
def test_replay(target, path):
    """The target's rules: success or QuellmError, no warning, within 10 s."""
    harness, mod = _target(target)

    def alarm(signum, frame):
        raise harness.Timeout(f"{path.name} ran past 10 s")

    old = signal.signal(signal.SIGALRM, alarm)
    signal.alarm(10)
    try:
        harness.run_checked(mod.check, path.read_bytes())
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


# ---- formats: Packed.from_tensors / decode (fuzz_formats) -------------------------------------

def _packed(meta, codes=np.zeros((2, 16), np.uint8), scales=np.full((2, 1), 127, np.uint8)):
    text = meta if isinstance(meta, str) else json.dumps(meta)
    return {"format": np.frombuffer(text.encode(), np.uint8), "codes": codes, "scales": scales}


MX = {"quellm_packed": 1, "format": "mxfp4", "params": {"rounding": "rne"}, "shape": [2, 32], "axis": 1}


@pytest.mark.parametrize("change", [
    {"shape": [0, 64]},            # found: an empty shape passed the checks, then decode's reshape failed
    {"shape": []},                 # 0-d
    {"shape": [2, -32]},
    {"shape": [2, 48]},            # not a multiple of the block size
    {"shape": ["2", "x"]},         # int("x"): a plain ValueError before
    {"shape": [2, 1e400]},         # JSON Infinity: OverflowError before
    {"axis": "one"},
    {"params": "rne"},             # dict("rne"): a plain ValueError before
    {"format": "int4", "params": {"group": "x"}},   # int("x") in the format's constructor
    {"format": "int4", "params": {"group": 1e400}},  # int(inf): OverflowError
    {"format": "bfp", "params": {"mantissa_bits": None}},
])
def test_malformed_packed_meta_is_a_quellm_error(change):
    with pytest.raises(QuellmError):
        formats.Packed.from_tensors(_packed({**MX, **change}), "").decode()


def test_deeply_nested_packed_meta_is_a_quellm_error():
    with pytest.raises(QuellmError, match="malformed"):
        formats.Packed.from_tensors(_packed("[" * 100_000), "")


@pytest.mark.parametrize("name", ["int8", "ovp4", "int4"])
def test_decode_of_nonfinite_f32_scales_does_not_warn(name):
    """Inf/NaN scales from a corrupt file decode to Inf/NaN without a RuntimeWarning (an error
    under this suite's filterwarnings = error, which is how the fuzzer saw it)."""
    f = formats.get(name)
    p = f.encode(np.ones((3, 8), np.float32))
    p.scales = np.array([[np.inf], [np.nan], [-np.inf]], np.float32)
    p.codes[:] = 0
    out = p.decode()
    assert out.shape == (3, 8) and not np.isfinite(out).any()


# ---- checkpoint loader (fuzz_checkpoint) ------------------------------------------------------

def _with_config(make_checkpoint, **changes):
    path, _ = make_checkpoint()
    cfg = json.loads((path / "config.json").read_text())
    cfg.update(changes)
    (path / "config.json").write_text(json.dumps(cfg))
    return path


def test_deeply_nested_config_is_a_config_error(make_checkpoint):
    path, _ = make_checkpoint()
    (path / "config.json").write_text("[" * 100_000)  # RecursionError before
    with pytest.raises(ConfigError, match="cannot parse JSON"):
        quellm.load(path)


@pytest.mark.parametrize("key, value", [("max_position_embeddings", 2**70), ("sliding_window", 2**70),
                                        ("max_position_embeddings", 0), ("hidden_size", -(2**64))])
def test_out_of_range_config_integers(make_checkpoint, key, value):
    """Before: the int went to the C++ runtime and pybind11 raised RuntimeError ("unable to cast")."""
    path = _with_config(make_checkpoint, **{key: value})
    with pytest.raises(ConfigError, match=key):
        quellm.load(path)


def test_huge_layer_count_fails_fast(make_checkpoint):
    """Before: tensor_shapes() listed 10^12 layers' tensor names (a hang, then MemoryError)."""
    path = _with_config(make_checkpoint, num_hidden_layers=10**12)
    t = time.monotonic()
    with pytest.raises(ConfigError, match="num_hidden_layers"):
        quellm.load(path)
    with pytest.raises(ConfigError, match="num_hidden_layers"):
        quellm.load_checkpoint(path)
    assert time.monotonic() - t < 5


# ---- quantized checkpoints (fuzz_quantized) -----------------------------------------------------

@pytest.fixture(scope="module")
def quantized_dir(tmp_path_factory):
    from conftest import random_tensors

    from quellm.io import save_checkpoint

    d = tmp_path_factory.mktemp("q")
    src = save_checkpoint(d / "src", TINY_LLAMA, random_tensors(TINY_LLAMA))
    return quellm.quantize(quellm.load(src), "w8a8").save(d / "q")


@pytest.mark.parametrize("text", ["[" * 100_000, '{"quellm_quant": 1, "recipe": [], "layers": {}}',
                                  '{"quellm_quant": 1, "recipe": {"name": "x", "linear": {}}, "layers": []}',
                                  '{"quellm_quant": 1, "recipe": {"name": "x", "linear": {}}, "layers": {"a": 3}}',
                                  "[1]"])
def test_malformed_quant_json(quantized_dir, tmp_path, text):
    import shutil

    d = shutil.copytree(quantized_dir, tmp_path / "q")
    (d / "quellm_quant.json").write_text(text)
    with pytest.raises(CheckpointError, match="quellm_quant.json"):
        quellm.load(d)


@pytest.mark.parametrize("key", ["kv_bits", "seed", "os_steps"])
def test_recipe_json_infinity(quantized_dir, tmp_path, key):
    """int(Infinity) raised OverflowError out of Recipe.from_json."""
    import shutil

    d = shutil.copytree(quantized_dir, tmp_path / "q")
    q = json.loads((d / "quellm_quant.json").read_text())
    q["recipe"][key] = float("inf")
    (d / "quellm_quant.json").write_text(json.dumps(q))
    with pytest.raises(CheckpointError, match="quellm_quant.json"):
        quellm.load(d)


def test_quantized_huge_layer_count_fails_fast(quantized_dir, tmp_path):
    import shutil

    d = shutil.copytree(quantized_dir, tmp_path / "q")
    cfg = json.loads((d / "config.json").read_text())
    (d / "config.json").write_text(json.dumps({**cfg, "num_hidden_layers": 10**12}))
    with pytest.raises(ConfigError, match="num_hidden_layers"):
        quellm.load(d)


def test_cpp_rejections_are_quellm_errors():
    """std::invalid_argument from the C++ core arrives as QuellmError (was: plain ValueError), e.g.
    a quantized model whose file holds NaN weights, on its first activation quantization."""
    with pytest.raises(QuellmError, match="n must be >= 1"):
        _core.set_num_threads(-1)
    ql = quellm.QuantLinear(np.ones((4, 16), np.float32), None, w_format="int8", a_format="int8")
    with pytest.raises(QuellmError, match="non-finite activation"):
        ql(np.full((1, 16), np.nan, np.float32))


# ---- GGUF importer (fuzz_gguf) -------------------------------------------------------------------

def _gguf_bytes(kv: bytes, n_kv: int = 1, n_tensors: int = 0) -> bytes:
    return b"GGUF" + struct.pack("<IQQ", 3, n_tensors, n_kv) + kv


def _key(name: str) -> bytes:
    return struct.pack("<Q", len(name)) + name.encode()


@pytest.mark.parametrize("data", [
    # an array claiming 2^60 uint8 items: gguf's reader looped over them one at a time, forever
    _gguf_bytes(_key("general.architecture") + struct.pack("<IIQ", 9, 0, 2**60)),
    # a string array claiming 2^40 strings
    _gguf_bytes(_key("tokenizer.ggml.tokens") + struct.pack("<IIQ", 9, 8, 2**40) + b"\0" * 64),
    # 2^62 keys, 2^62 tensors, a key longer than the file
    _gguf_bytes(b"", n_kv=2**62),
    _gguf_bytes(b"", n_kv=0, n_tensors=2**62),
    _gguf_bytes(struct.pack("<Q", 2**50) + b"abc"),
], ids=["uint8-array", "string-array", "keys", "tensors", "key-length"])
def test_gguf_counts_past_the_end_fail_fast(tmp_path, data):
    pytest.importorskip("gguf")
    from quellm.io.gguf import read_gguf

    p = tmp_path / "bad.gguf"
    p.write_bytes(data)
    t = time.monotonic()
    with pytest.raises(CheckpointError, match="not a readable GGUF file"):
        read_gguf(p)
    assert time.monotonic() - t < 5


def test_gguf_nonfinite_block_scales_do_not_warn():
    pytest.importorskip("gguf")
    from quellm.io.gguf_quants import dequantize

    block = np.zeros(34, np.uint8)  # Q8_0: f16 scale, 32 int8
    block[:2] = np.frombuffer(np.float16(np.inf).tobytes(), np.uint8)
    block[2:] = 1
    block_zero = block.copy()
    block_zero[2:] = 0  # inf * 0 = NaN: the "invalid" warning the fuzzer hit
    for use_gguf in (True, False):
        out = dequantize(np.concatenate([block, block_zero]), "Q8_0", 64, use_gguf=use_gguf)
        assert np.isinf(out[:32]).all() and np.isnan(out[32:]).all()
