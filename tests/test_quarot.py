"""QuaRot (SPEC §3): the offline transforms leave the float model's function unchanged, the
quantized model equals the numpy fake-quant simulation (rotated weights, online Hadamards,
rotated 4-bit KV cache), the seed makes it reproducible, and rotation beats no rotation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import quellm
from quellm import quarot
from quellm.formats import IntFormat
from quellm.hadamard import hadamard_matrix, random_hadamard
from quellm.reference import llama_forward

FIX = Path(__file__).parent / "fixtures"


@pytest.fixture(scope="module")
def model():
    return quellm.load(FIX / "llama_untied")


@pytest.fixture(scope="module")
def tied():
    return quellm.load(FIX / "llama_tied_llama3")


def toks(m, B=2, T=10, seed=0):
    return np.random.default_rng(seed).integers(0, m.vocab_size, (B, T))


@pytest.mark.parametrize("fixture", ["model", "tied"])
def test_transforms_are_exact_in_float(fixture, request):
    m = request.getfixturevalue(fixture)
    before = {k: np.array(v) for k, v in m._tensors.items()}
    t, gains = quarot.fuse_norms(m._tensors, m.config, m.embedding_name)
    assert np.all(t["model.layers.0.input_layernorm.weight"] == 1) and "lm_head.weight" in t
    t, Q = quarot.rotate_residual(t, m.config, m.embedding_name, seed=3)
    np.testing.assert_allclose(Q @ Q.T, np.eye(Q.shape[0]), atol=1e-12)
    x = toks(m)
    want = m.forward(x)
    got, _ = llama_forward(t, m.config, x)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    for k, v in m._tensors.items():  # the model's arrays are untouched
        np.testing.assert_array_equal(v, before[k], err_msg=k)
    # and as a quellm model (f32 "quantization": only the transforms)
    r = quellm.Recipe("rot-f32", quellm.LinearSpec("f32"), {"*.o_proj": quellm.LinearSpec("f32", transform="hadamard")},
                      rotate=True, seed=3, kv_hadamard=True)
    q = quellm.quantize(m, r)
    np.testing.assert_allclose(q.forward(x), want, rtol=1e-4, atol=1e-4)


def test_seed_is_reproducible_and_matters(tied):
    r0, r1 = random_hadamard(48, 0), random_hadamard(48, 1)
    assert np.array_equal(r0, random_hadamard(48, 0)) and not np.array_equal(r0, r1)
    st = quellm.calibrate(tied, toks(tied, 1, 64).ravel().tolist(), n_samples=2, seq_len=16, progress=False)
    a = quellm.quantize(tied, "quarot:gptq=false,seed=5", st)
    b = quellm.quantize(tied, "quarot:gptq=false,seed=5", st)
    c = quellm.quantize(tied, "quarot:gptq=false,seed=6", st)
    x = toks(tied)
    np.testing.assert_array_equal(a.forward(x), b.forward(x))
    assert not np.array_equal(a.forward(x), c.forward(x))


@pytest.mark.parametrize("name", ["quarot:gptq=false", "quarot:gptq=false,a_bits=8,group=16", "quarot"])
def test_matches_fake_quant_simulation(tied, name, tmp_path):
    stats = quellm.calibrate(tied, toks(tied, 1, 200, 1).ravel().tolist(), n_samples=4, seq_len=32, xtx=True,
                             progress=False)
    q = quellm.quantize(tied, name, stats)
    assert q.kv_cache == {"bits": 4, "clip": 0.95, "hadamard": True}
    hd = tied.config.head_dim
    H = hadamard_matrix(hd, normalized=True)
    f = IntFormat("int4", 4, sym=False, clip=0.95)
    x = toks(tied)
    got = q.forward(x)
    want, _ = llama_forward(q._float_tensors, tied.config, x,
                            linears={n: ql.simulate for n, ql in q.quant_layers.items()},
                            kv_quant=lambda v: f.quantize_dequantize(v @ H.T) @ H)
    assert np.abs(got - want).max() <= 1e-4 * max(1.0, float(np.abs(want).max()))
    assert {n.rsplit(".", 1)[-1] for n, ql in q.quant_layers.items() if ql.spec.transform} == {"o_proj", "down_proj"}
    q.save(tmp_path / "q")
    back = quellm.load(tmp_path / "q")
    np.testing.assert_array_equal(back.forward(x), got)
    assert back.recipe.seed == 0 and back.recipe.rotate


def test_rotation_helps_outlier_channels(make_checkpoint):
    """A residual channel 50x larger than the rest (the LLM outlier pattern) ruins W8A4 per-token
    quantization; the rotation spreads it."""
    from conftest import TINY_LLAMA

    path, tensors = make_checkpoint({**TINY_LLAMA, "hidden_size": 64, "intermediate_size": 64})
    t = dict(tensors)
    t["model.embed_tokens.weight"] = t["model.embed_tokens.weight"].copy()
    t["model.embed_tokens.weight"][:, 7] *= 50.0
    m = quellm.models.LlamaModel(quellm.load_checkpoint(path).config, t)
    x = toks(m, 2, 16)
    ref = m.forward(x)
    err = {}
    for name in ("rtn:w_bits=8,a_bits=4,group=none,w_clip=1.0", "quarot:w_bits=8,a_bits=4,kv_bits=0,gptq=false"):
        q = quellm.quantize(m, name, quellm.calibrate(m, x.ravel().tolist(), n_samples=2, seq_len=16, progress=False))
        err[name] = float(np.abs(q.forward(x) - ref).mean())
    assert err["quarot:w_bits=8,a_bits=4,kv_bits=0,gptq=false"] < 0.8 * err["rtn:w_bits=8,a_bits=4,group=none,w_clip=1.0"], err


def test_errors(tied):
    with pytest.raises(ValueError, match="xtx"):
        stats = quellm.calibrate(tied, toks(tied, 1, 64).ravel().tolist(), n_samples=2, seq_len=16, progress=False)
        quellm.quantize(tied, "quarot", stats)
    mamba = quellm.load(FIX / "mamba_tiny")
    ms = quellm.calibrate(mamba, toks(mamba, 1, 64).ravel().tolist(), n_samples=2, seq_len=16, progress=False)
    with pytest.raises(ValueError, match="Llama family"):
        quellm.quantize(mamba, "quarot:gptq=false,kv_bits=0", ms)
    with pytest.raises(ValueError, match="rotation or smoothing"):
        quellm.Recipe("x", quellm.LinearSpec("int8"), smooth="smoothquant", rotate=True)
    with pytest.raises(ValueError, match="a_bits"):
        quellm.recipes.get("quarot:a_bits=3")
