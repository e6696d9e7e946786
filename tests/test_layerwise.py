"""Layer-by-layer quantization (quellm.layerwise, quantize(data=...)) and the runtime's
forward_layers it is built on."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import quellm
from quellm import recipes
from quellm.layerwise import quantize_layerwise
from quellm.quant import QuantLinear

FIX = Path(__file__).parent / "fixtures"


@pytest.fixture(scope="module", params=["llama_tied_llama3", "llama_bias_linear", "mamba_tiny"])
def model(request):
    return quellm.load(FIX / request.param)


def windows(model, n=4, T=12, seed=0):
    return np.random.default_rng(seed).integers(0, model.vocab_size, (n, T)).astype(np.int32)


def head_logits(model, x):
    """Final RMSNorm + LM head of the residual stream x (B, T, D), in float64."""
    t = model._tensors
    xf = x.astype(np.float64)
    h = xf / np.sqrt((xf * xf).mean(-1, keepdims=True) + model.norm_eps) * t[model.final_norm_name]
    w = t.get("lm_head.weight", t[model.embedding_name])
    return h @ w.astype(np.float64).T


def test_forward_layers_compose_to_the_forward(model):
    toks = windows(model, 2, 9)
    x0 = model._tensors[model.embedding_name][toks].astype(np.float32)
    keep = x0.copy()
    L = model.config.num_hidden_layers
    full = model.forward_layers(x0, 0, L)
    np.testing.assert_array_equal(x0, keep)  # the input is not modified
    step = x0
    for layer in range(L):
        step = model.forward_layers(step, layer, layer + 1)
    np.testing.assert_array_equal(step, full)  # one layer at a time == all at once, bit for bit
    np.testing.assert_array_equal(model.forward_layers(x0, 1, 1), x0)
    want = model.forward(toks, all_logits=True)
    np.testing.assert_allclose(head_logits(model, full), want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("args, match", [
    ((np.zeros((1, 4, 3), np.float32), 0, 1), "shape"),
    ((None, 0, 99), "out of range"),
    ((None, 2, 1), "out of range"),
])
def test_forward_layers_errors(model, args, match):
    x, a, b = args
    if x is None:
        x = np.zeros((1, 4, model.config.hidden_size), np.float32)
    with pytest.raises(quellm.QuellmError, match=match):
        model.forward_layers(x, a, b)


def codes(q):
    return {n: ql.dequantized_weight() for n, ql in q.quant_layers.items()}


def test_rtn_layerwise_equals_direct(model):
    """A recipe that needs no Hessian quantizes the same weights either way."""
    r = "rtn:w_bits=4,a_bits=8,group=16,w_clip=0.9"
    a = quellm.quantize(model, r)
    b = quellm.quantize(model, r, data=windows(model), progress=False)
    ca, cb = codes(a), codes(b)
    assert ca.keys() == cb.keys() and ca
    for n in ca:
        np.testing.assert_array_equal(ca[n], cb[n], err_msg=n)
    toks = windows(model, 2, 10, seed=3)
    np.testing.assert_array_equal(a.forward(toks, all_logits=True), b.forward(toks, all_logits=True))


def test_gptq_first_layer_equals_stats_gptq(model):
    """Layer 0 sees the float embeddings either way, so its GPTQ weights match those from XᵀX
    statistics of the float model on the same windows and batches."""
    w = windows(model, 4, 12)
    stats = quellm.calibrate(model, w, xtx=True, batch=2, progress=False)
    r = "gptq:group=16"
    a = quellm.quantize(model, r, stats)
    b = quellm.quantize(model, r, data=w, batch=2, progress=False)
    first = [n for n, _, layer in recipes.linear_layers(model) if layer == 0 and n in a.quant_layers]
    assert first
    for n in first:
        np.testing.assert_array_equal(a.quant_layers[n].dequantized_weight(), b.quant_layers[n].dequantized_weight(),
                                      err_msg=n)
    # later layers see the quantized layers' outputs, so they differ
    later = [n for n in a.quant_layers if n not in first]
    assert any(not np.array_equal(a.quant_layers[n].dequantized_weight(), b.quant_layers[n].dequantized_weight())
               for n in later)


def test_second_layer_hessian_comes_from_the_quantized_first_layer(model):
    """The XᵀX that layer 1 is quantized with equals the statistics of a model whose layer 0
    alone is quantized, observed by an ordinary forward on the same windows."""
    recipe = recipes.get("w4a8:group=16")
    tensors = dict(model._tensors)
    layers = recipes.linear_layers(model)
    seen: dict[tuple[str, int], np.ndarray] = {}

    def make_layer(name, kind, layer, h):
        seen[(kind, layer)] = h
        spec = recipe.spec_for(name)
        if spec is None or layer >= 1:
            return None
        w = tensors.get(name + ".weight", tensors[model.embedding_name])
        q = QuantLinear(w, tensors.get(name + ".bias"), spec)
        tensors.pop(name + ".bias", None)
        return q

    w = windows(model, 3, 10)
    quant = quantize_layerwise(model, tensors, recipe, layers, make_layer, w, batch=3, progress=False)
    assert quant and all(layer == 0 for n, _, layer in layers if n in quant)
    q0 = model.with_quantized(tensors, quant, recipe)
    stats = quellm.calibrate(q0, w, xtx=True, batch=3, progress=False)
    kinds = {k for k, layer in seen if layer == 1}
    assert kinds
    for kind in kinds:
        p = stats[kind, 1]
        np.testing.assert_allclose(seen[(kind, 1)], p.xtx / p.count, rtol=1e-9, atol=1e-12, err_msg=kind)
        # ... and not the float model's
        f = quellm.calibrate(model, w, xtx=True, batch=3, progress=False)[kind, 1]
        assert not np.allclose(seen[(kind, 1)], f.xtx / f.count, rtol=1e-9, atol=0)


def test_layerwise_model_runs_and_saves(model, tmp_path):
    q = quellm.quantize(model, "gptq:group=16", data=windows(model), progress=False)
    assert q.recipe.linear.w_method == "gptq"
    toks = windows(model, 2, 8, seed=5)
    got = q.forward(toks, all_logits=True)
    assert np.isfinite(got).all()
    q.save(tmp_path / "q")
    np.testing.assert_array_equal(quellm.load(tmp_path / "q").forward(toks, all_logits=True), got)


@pytest.mark.parametrize("data, match", [
    (np.zeros((2, 4), np.float32), "integer"),
    (np.zeros((0, 4), np.int32), "non-empty"),
    (np.full((1, 4), 10**6, np.int64), r"token ids must lie"),
    (np.full((1, 4), -1, np.int64), r"token ids must lie"),
    (np.zeros(4, np.int32), "integer array"),
])
def test_bad_windows(model, data, match):
    with pytest.raises(quellm.QuellmError, match=match):
        quellm.quantize(model, "gptq:group=16", data=data, progress=False)


def test_nan_in_stream_is_reported():
    model = quellm.load(FIX / "llama_tied_llama3")
    tensors = dict(model._tensors)
    emb = tensors[model.embedding_name].copy()
    emb[7, 3] = np.nan
    tensors[model.embedding_name] = emb
    bad = type(model)(model.config, tensors, model.tokenizer, model.path)
    w = np.full((1, 6), 7, np.int32)
    with pytest.raises(quellm.QuellmError, match="non-finite activation at layer 0"):
        quellm.quantize(bad, "gptq:group=16", data=w, progress=False)
    assert np.isfinite(model._tensors[model.embedding_name]).all()  # the float model is untouched
