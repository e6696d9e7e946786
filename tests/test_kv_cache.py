"""Quantized KV cache (int8 / int4 asymmetric per token and head, optional Hadamard rotation):
cache contents equal the numpy twin's quantize-dequantize, logits equal the numpy reference with
fake-quantized K/V, the rotation is exact in float, and bad input is refused."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import quellm
from quellm.formats import IntFormat
from quellm.hadamard import hadamard_matrix
from quellm.reference import llama_forward

FIX = Path(__file__).parent / "fixtures"


@pytest.fixture(scope="module")
def model():
    return quellm.load(FIX / "llama_tied_llama3")


def toks(model, B=2, T=9, seed=0):
    return np.random.default_rng(seed).integers(0, model.vocab_size, (B, T))


def qdq(bits, clip):
    fmt = IntFormat(f"int{bits}", bits, sym=False, clip=clip)

    def f(x):  # x [..., hd]: one group per (token, head)
        return fmt.quantize_dequantize(x.astype(np.float32))

    return f


@pytest.mark.parametrize("bits, clip", [(8, 1.0), (4, 1.0), (4, 0.95)])
def test_cache_holds_the_twins_values(model, bits, clip):
    t = toks(model, 1)
    model.set_kv_cache(0)
    s0 = model.new_state(1)
    model.forward(t, s0)
    model.set_kv_cache(bits, clip)
    try:
        s1 = model.new_state(1)
        model.forward(t, s1)
        assert s1.caches[0].bits == bits and s1.caches[0].nbytes < s0.caches[0].nbytes
        # layer 0 sees identical inputs in both runs, so its cache is exactly the twin's rounding
        for get in ("keys", "values"):
            want = qdq(bits, clip)(getattr(s0.caches[0], get)(0))
            np.testing.assert_array_equal(getattr(s1.caches[0], get)(0), want)
    finally:
        model.set_kv_cache(0)


@pytest.mark.parametrize("bits, hadamard", [(8, False), (4, False), (4, True)])
def test_logits_match_fake_quant_reference(model, bits, hadamard):
    t = toks(model)
    hd = model.config.head_dim
    H = hadamard_matrix(hd, normalized=True)
    f = qdq(bits, 0.95)
    kvq = (lambda x: f(x @ H.T) @ H) if hadamard else f  # rotate, round, rotate back
    want, _ = llama_forward(model._tensors, model.config, t, kv_quant=kvq)
    model.set_kv_cache(bits, 0.95, hadamard)
    try:
        got = model.forward(t)
        # decoding token by token reads the same quantized cache
        st = model.new_state(2)
        model.forward(t[:, :5], st)
        step = [model.forward(t[:, i:i + 1], st, all_logits=False) for i in range(5, 9)]
    finally:
        model.set_kv_cache(0)
    assert np.abs(got - want).max() <= 1e-4 * max(1.0, float(np.abs(want).max()))
    np.testing.assert_allclose(np.stack(step, 1), got[:, 5:], rtol=1e-4, atol=1e-4)
    ref = model.forward(t)
    assert np.abs(got - ref).max() > 0  # the cache really was quantized


def test_hadamard_rotation_is_exact_in_float(model):
    t = toks(model)
    ref = model.forward(t)
    model.set_kv_cache(0, 1.0, hadamard=True)
    try:
        np.testing.assert_allclose(model.forward(t), ref, rtol=1e-5, atol=1e-5)
    finally:
        model.set_kv_cache(0)


def test_bad_settings_and_stale_states(model, make_checkpoint):
    with pytest.raises(ValueError, match="bits"):
        model.set_kv_cache(3)
    with pytest.raises(ValueError, match="clip"):
        model.set_kv_cache(4, 0.0)
    st = model.new_state(1)
    model.set_kv_cache(4)
    try:
        with pytest.raises(ValueError, match="another model or KV cache format"):
            model.forward(toks(model, 1), st)
    finally:
        model.set_kv_cache(0)
    # a non-finite key cannot be quantized: clear error, not garbage
    path, tensors = make_checkpoint()
    tensors = dict(tensors)
    tensors["model.embed_tokens.weight"] = tensors["model.embed_tokens.weight"].copy()
    tensors["model.embed_tokens.weight"][5] = np.inf
    bad = quellm.models.LlamaModel(quellm.load_checkpoint(path).config, tensors)
    bad.set_kv_cache(4)
    with pytest.raises(ValueError, match="non-finite key/value in layer 0"):
        bad.forward([[1, 5, 2]])


def test_kv_recipe_round_trip(model, tmp_path):
    r = quellm.recipes.get("w8a8:kv_bits=4,kv_clip=0.95,kv_hadamard=true")
    assert (r.kv_bits, r.kv_clip, r.kv_hadamard) == (4, 0.95, True) and r.name == "w8a8-kv4-kvhad"
    q = quellm.quantize(model, r)
    assert q.kv_cache == {"bits": 4, "clip": 0.95, "hadamard": True} and model.kv_cache["bits"] == 0
    q.save(tmp_path / "q")
    back = quellm.load(tmp_path / "q")
    assert back.kv_cache == q.kv_cache
    np.testing.assert_array_equal(back.forward(toks(model)), q.forward(toks(model)))
    mamba = quellm.load(FIX / "mamba_tiny")
    with pytest.raises(ValueError, match="KV cache"):
        quellm.quantize(mamba, r)
