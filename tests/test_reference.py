"""quellm.reference (numpy forward passes) against the transformers oracle fixtures.

The fixtures in tests/fixtures/ are made by tests/make_fixtures.py (see its docstring for what
each reference.npz holds and how to regenerate them). Transformers' own cached and uncached
paths agree to ~5e-6 on these models; the reference must be within LOGITS_ATOL with the same
argmax everywhere.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from quellm import reference as R
from quellm.io import LlamaConfig, MambaConfig, RopeConfig, load_checkpoint, parse_config

FIXTURES = Path(__file__).resolve().parent / "fixtures"
LLAMA_MODELS = ["llama_untied", "llama_tied_llama3", "qwen2_bias", "llama_bias_linear"]
MAMBA_MODELS = ["mamba_tiny", "mamba_rank_nobias"]
ALL_MODELS = LLAMA_MODELS + MAMBA_MODELS

LOGITS_ATOL = 1e-4  # max |reference - transformers| on logits
STATE_RTOL = 1e-5  # hidden states, KV cache, conv and SSM states: max |diff| / max |want|
P = 5  # prefill length used by the fixtures


class Model:
    """One fixture: the checkpoint, its config, the oracle's arrays and the right forward."""

    def __init__(self, name: str):
        self.name = name
        self.ckpt = load_checkpoint(FIXTURES / name)
        self.config = self.ckpt.config
        with np.load(FIXTURES / name / "reference.npz", allow_pickle=False) as z:
            self.ref = {k: z[k] for k in z.files}
        self.mamba = isinstance(self.config, MambaConfig)

    def forward(self, tokens, cache=None, **kw):
        if self.mamba:
            return R.mamba_forward(self.ckpt, self.config, tokens, state=cache, **kw)
        return R.llama_forward(self.ckpt, self.config, tokens, past=cache, **kw)


_loaded: dict[str, Model] = {}


@pytest.fixture(params=ALL_MODELS)
def model(request) -> Model:
    if request.param not in _loaded:
        _loaded[request.param] = Model(request.param)
    return _loaded[request.param]


@pytest.fixture(params=LLAMA_MODELS)
def llama(request) -> Model:
    if request.param not in _loaded:
        _loaded[request.param] = Model(request.param)
    return _loaded[request.param]


@pytest.fixture(params=MAMBA_MODELS)
def mamba(request) -> Model:
    if request.param not in _loaded:
        _loaded[request.param] = Model(request.param)
    return _loaded[request.param]


def assert_logits(got: np.ndarray, want: np.ndarray, what: str) -> None:
    assert got.shape == want.shape, f"{what}: shape {got.shape} != {want.shape}"
    assert got.dtype == np.float32, f"{what}: dtype {got.dtype}"
    err = float(np.max(np.abs(got - want)))
    assert err <= LOGITS_ATOL, f"{what}: max |diff| {err:.3g} > {LOGITS_ATOL:g}"
    bad = np.argwhere(np.argmax(got, -1) != np.argmax(want, -1))
    assert bad.size == 0, f"{what}: argmax differs at {bad.tolist()}"


def assert_state(got: np.ndarray, want: np.ndarray, what: str) -> None:
    assert got.shape == want.shape, f"{what}: shape {got.shape} != {want.shape}"
    err = float(np.max(np.abs(got - want)))
    tol = STATE_RTOL * float(np.max(np.abs(want)))
    assert err <= tol, f"{what}: max |diff| {err:.3g} > {STATE_RTOL:g} x max |want| = {tol:.3g}"


# ---- logits on every path ----------------------------------------------------------------------

def test_full_pass(model):
    logits, _ = model.forward(model.ref["tokens"])
    assert_logits(logits, model.ref["logits_full"], f"{model.name} full pass")


def test_prefill_then_decode(model):
    tokens = model.ref["tokens"]
    logits, cache = model.forward(tokens[:P])
    rows = [logits]
    for t in range(P, len(tokens)):
        step, cache = model.forward(tokens[t:t + 1], cache)
        rows.append(step)
    got = np.concatenate(rows)
    assert_logits(got, model.ref["logits_prefill_decode"], f"{model.name} prefill+decode")
    assert_logits(got, model.ref["logits_full"], f"{model.name} prefill+decode vs full")


def test_stepwise_from_empty_cache(model):
    tokens = model.ref["tokens"]
    cache, rows = None, []
    for t in range(len(tokens)):
        step, cache = model.forward(tokens[t:t + 1], cache)
        rows.append(step)
    assert_logits(np.concatenate(rows), model.ref["logits_stepwise"], f"{model.name} stepwise")


def test_batch_of_two(model):
    logits, _ = model.forward(model.ref["tokens_batch"])
    assert_logits(logits, model.ref["logits_batch"], f"{model.name} batch")


def test_greedy_tokens(model):
    got = R.greedy_generate(model.ckpt, model.config, model.ref["tokens"], len(model.ref["greedy_tokens"]))
    np.testing.assert_array_equal(got, model.ref["greedy_tokens"])


def test_batched_decode_matches_single(model):
    """Prefill a batch of two, decode one step each; row 0 must equal the single sequence."""
    batch = model.ref["tokens_batch"]
    _, cache = model.forward(batch[:, :-1])
    step, _ = model.forward(batch[:, -1:], cache)
    assert_logits(step[:, 0], model.ref["logits_batch"][:, -1], f"{model.name} batched decode")


def test_mamba_step_form_everywhere(mamba):
    """A forward pass written only in the recurrent step form gives the same logits and states."""
    logits, state = mamba.forward(mamba.ref["tokens"], path="step")
    assert_logits(logits, mamba.ref["logits_full"], f"{mamba.name} step path")
    assert_state(np.stack([c[0] for c in state.conv]), mamba.ref["conv_state"], "conv state (step path)")
    assert_state(np.stack([s[0] for s in state.ssm]), mamba.ref["ssm_state"], "ssm state (step path)")


def test_mamba_sequence_continues_from_state(mamba):
    """The sequence path also accepts a non-empty state (transformers does not): prefill 5,
    then the remaining 7 tokens in one call."""
    tokens = mamba.ref["tokens"]
    _, state = mamba.forward(tokens[:P])
    rest, _ = mamba.forward(tokens[P:], state, path="sequence")
    assert_logits(rest, mamba.ref["logits_full"][P:], f"{mamba.name} chunked prefill")


# ---- caches, states, hidden states ------------------------------------------------------------

def test_kv_cache_after_prompt(llama):
    _, cache = llama.forward(llama.ref["tokens"])
    assert cache.length == len(llama.ref["tokens"])
    assert_state(np.stack([k[0] for k in cache.keys]), llama.ref["k_cache"], f"{llama.name} keys (after RoPE)")
    assert_state(np.stack([v[0] for v in cache.values]), llama.ref["v_cache"], f"{llama.name} values")


def test_mamba_states_after_prompt(mamba):
    _, state = mamba.forward(mamba.ref["tokens"])
    # HF / mamba_ssm convention: K columns, oldest first, the last prompt token in column K-1
    assert_state(np.stack([c[0] for c in state.conv]), mamba.ref["conv_state"], f"{mamba.name} conv state")
    assert_state(np.stack([s[0] for s in state.ssm]), mamba.ref["ssm_state"], f"{mamba.name} ssm state")


def test_mamba_conv_state_is_zero_padded_for_short_prompts(mamba):
    K = mamba.config.conv_kernel
    _, state = mamba.forward(mamba.ref["tokens"][:1])
    conv = state.conv[0][0]  # [Di, K]
    assert np.all(conv[:, :K - 1] == 0) and np.any(conv[:, K - 1] != 0)


def test_hidden_states(model):
    hidden: list[np.ndarray] = []
    model.forward(model.ref["tokens"], collect_hidden=hidden)
    L = model.config.num_hidden_layers
    assert len(hidden) == L + 1
    assert_state(np.stack(hidden[:L]), model.ref["layer_outputs"], f"{model.name} layer outputs")
    # HF's last hidden_states entry is the final-norm output for both families
    assert_state(hidden[L], model.ref["hidden_states"][L], f"{model.name} final norm")
    if model.mamba:  # HF's entries 0..L-1: after each layer (no embeddings entry)
        assert_state(np.stack(hidden[:L]), model.ref["hidden_states"][:L], f"{model.name} hidden_states")
    else:  # HF's entry 0: embeddings; entry i: after layer i-1
        emb = np.asarray(model.ckpt["model.embed_tokens.weight"], np.float32)[model.ref["tokens"]]
        np.testing.assert_array_equal(emb, model.ref["hidden_states"][0])
        assert_state(np.stack(hidden[:L - 1]), model.ref["hidden_states"][1:L], f"{model.name} hidden_states")


def test_past_is_not_modified(model):
    tokens = model.ref["tokens"]
    _, cache = model.forward(tokens[:P])
    before = [a.copy() for a in (cache.conv + cache.ssm if model.mamba else cache.keys + cache.values)]
    model.forward(tokens[P:P + 1], cache)
    after = cache.conv + cache.ssm if model.mamba else cache.keys + cache.values
    for b, a in zip(before, after):
        np.testing.assert_array_equal(a, b)


def test_half_precision_weights_are_converted(model):
    """Weights stored as float16 are read as float32 (values rounded, so a loose check)."""
    half = {name: np.asarray(model.ckpt[name]).astype(np.float16) for name in model.ckpt}
    logits, _ = (R.mamba_forward if model.mamba else R.llama_forward)(half, model.config, model.ref["tokens"])
    assert logits.dtype == np.float32
    assert np.max(np.abs(logits - model.ref["logits_full"])) < 0.05


# ---- configs -----------------------------------------------------------------------------------

@pytest.mark.parametrize("name", LLAMA_MODELS)
def test_legacy_config_parses_the_same(name):
    d = FIXTURES / name
    new = parse_config(json.loads((d / "config.json").read_text()))
    old = parse_config(json.loads((d / "config.legacy.json").read_text()), "config.legacy.json")
    assert "rope_parameters" in json.loads((d / "config.json").read_text())
    assert "rope_theta" in json.loads((d / "config.legacy.json").read_text())
    assert old == new


def test_fixture_configs_cover_the_intended_features():
    cfg = {n: load_checkpoint(FIXTURES / n).config for n in ALL_MODELS}
    assert not cfg["llama_untied"].tie_word_embeddings
    t = cfg["llama_tied_llama3"]
    assert t.tie_word_embeddings and t.rope.rope_type == "llama3"
    assert t.num_attention_heads * t.head_dim != t.hidden_size
    assert t.num_key_value_heads < t.num_attention_heads
    assert cfg["qwen2_bias"].qkv_bias and not cfg["qwen2_bias"].attention_bias
    b = cfg["llama_bias_linear"]
    assert b.attention_bias and b.mlp_bias and b.rope.rope_type == "linear"
    r = cfg["mamba_rank_nobias"]
    assert r.time_step_rank != -(-r.hidden_size // 16) and not r.use_conv_bias and not r.tie_word_embeddings


# ---- helpers -----------------------------------------------------------------------------------

def test_llama3_inv_freq_has_three_bands():
    rope = RopeConfig(theta=1e4, rope_type="llama3", factor=8.0, low_freq_factor=1.0,
                      high_freq_factor=4.0, original_max_position_embeddings=64)
    base = R.rope_inv_freq(RopeConfig(theta=1e4), 16).astype(np.float64)
    got = R.rope_inv_freq(rope, 16).astype(np.float64)
    wavelen = 2 * np.pi / base
    high, low = wavelen < 64 / 4, wavelen > 64 / 1
    mid = ~high & ~low
    assert high.any() and low.any() and mid.any()
    np.testing.assert_allclose(got[high], base[high], rtol=1e-6)
    np.testing.assert_allclose(got[low], base[low] / 8, rtol=1e-6)
    assert np.all(got[mid] < base[mid]) and np.all(got[mid] > base[mid] / 8)
    s = (64 / wavelen[mid] - 1) / 3
    np.testing.assert_allclose(got[mid], (1 - s) * base[mid] / 8 + s * base[mid], rtol=1e-6)


def test_rope_linear_divides_frequencies():
    base = R.rope_inv_freq(RopeConfig(theta=1e4), 8)
    lin = R.rope_inv_freq(RopeConfig(theta=1e4, rope_type="linear", factor=4.0), 8)
    np.testing.assert_allclose(lin, base / 4, rtol=1e-6)
    np.testing.assert_allclose(base, 1e4 ** (-np.arange(0, 8, 2) / 8), rtol=1e-6)


def test_apply_rope_matches_the_interleaved_layout_after_permutation():
    """rotate_half on HF rows equals the interleaved (GGUF) rotation on permuted rows (§2.4)."""
    rng = np.random.default_rng(0)
    hd, T = 16, 5
    x = rng.standard_normal((T, hd)).astype(np.float32)
    cos, sin = R.rope_cos_sin(R.rope_inv_freq(RopeConfig(theta=1e4), hd), np.arange(T))
    hf = R.apply_rope(x, cos, sin)
    perm = np.arange(hd).reshape(2, hd // 2).T.reshape(-1)  # interleaved slot 2i+j <- HF dim j*hd/2+i
    xi = x[:, perm]
    c, s = cos[:, : hd // 2], sin[:, : hd // 2]
    out = np.empty_like(xi)
    out[:, 0::2] = xi[:, 0::2] * c - xi[:, 1::2] * s
    out[:, 1::2] = xi[:, 1::2] * c + xi[:, 0::2] * s
    np.testing.assert_allclose(out, hf[:, perm], atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(hf, axis=-1), np.linalg.norm(x, axis=-1), rtol=1e-5)


def test_activations_at_extremes():
    x = np.array([-1e4, -100.0, -20.0, 0.0, 1.0, 20.0, 21.0, 100.0, 1e4], np.float32)
    sp = R.softplus(x)
    assert np.all(np.isfinite(sp)) and sp.dtype == np.float32
    np.testing.assert_allclose(sp[x > 20], x[x > 20])
    np.testing.assert_allclose(sp[3], np.log(2.0), rtol=1e-6)
    si = R.silu(x)
    assert np.all(np.isfinite(si))
    np.testing.assert_allclose(si[[0, 1]], 0.0, atol=1e-30)
    np.testing.assert_allclose(si[-1], 1e4)
    np.testing.assert_allclose(si[4], 1 / (1 + np.exp(-1.0)), rtol=1e-6)


def test_rmsnorm_uses_weight_as_stored():
    x = np.array([[3.0, 4.0]], np.float32)
    np.testing.assert_allclose(R.rmsnorm(x, np.array([1.0, 2.0], np.float32), 0.0),
                               [[3 / np.sqrt(12.5), 8 / np.sqrt(12.5)]], rtol=1e-6)


def test_bad_tokens_raise(model):
    for bad in (np.zeros((0,), np.int64), np.zeros((1, 2, 3), np.int64), np.array([0.5])):
        with pytest.raises(ValueError):
            model.forward(bad)


def test_config_is_taken_from_the_checkpoint():
    ckpt = load_checkpoint(FIXTURES / "llama_untied")
    assert isinstance(ckpt.config, LlamaConfig)
    a, _ = R.llama_forward(ckpt, None, [1, 2, 3])
    b, _ = R.llama_forward(ckpt, ckpt.config, [1, 2, 3])
    np.testing.assert_array_equal(a, b)
