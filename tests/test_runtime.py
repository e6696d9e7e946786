"""The C++ runtimes (Llama family and Mamba) against transformers' logits (fixtures from
tests/make_fixtures.py): one interface, the same checks for both families."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import quellm
from quellm.errors import QuellmError
from quellm.io import load_checkpoint, parse_config

FIXTURES = Path(__file__).parent / "fixtures"
LLAMAS = ["llama_untied", "llama_tied_llama3", "qwen2_bias", "llama_bias_linear"]
MAMBAS = ["mamba_tiny", "mamba_rank_nobias"]
MODELS = LLAMAS + MAMBAS
TOL = 1e-4


def ref(name):
    return np.load(FIXTURES / name / "reference.npz")


def close(got, want, what):
    scale = max(1.0, float(np.max(np.abs(want))))
    err = float(np.max(np.abs(got - want))) / scale
    assert err <= TOL, f"{what}: max |diff| / scale = {err:.3g}"
    assert np.array_equal(np.argmax(got, -1), np.argmax(want, -1)), f"{what}: argmax differs"


@pytest.fixture(scope="module", params=MODELS)
def model(request):
    return request.param, quellm.load(FIXTURES / request.param)


def test_full_pass(model):
    name, m = model
    r = ref(name)
    close(m.forward(r["tokens"]), r["logits_full"], f"{name} full")


def test_prefill_then_decode(model):
    name, m = model
    r = ref(name)
    toks = r["tokens"]
    state = m.new_state(1, len(toks))
    out = [m.forward(toks[:5], state)]
    for t in toks[5:]:
        out.append(m.forward([t], state))
    close(np.concatenate(out), r["logits_prefill_decode"], f"{name} prefill+decode")
    assert state.len == len(toks)


def test_token_by_token(model):
    name, m = model
    r = ref(name)
    state = m.new_state(1, 12)
    got = np.concatenate([m.forward([t], state) for t in r["tokens"]])
    close(got, r["logits_stepwise"], f"{name} stepwise")


def test_batch_of_two(model):
    name, m = model
    r = ref(name)
    close(m.forward(r["tokens_batch"]), r["logits_batch"], f"{name} batch")


def test_last_logits_only(model):
    name, m = model
    r = ref(name)
    close(m.forward(r["tokens"], all_logits=False), r["logits_full"][-1], f"{name} last")


@pytest.mark.parametrize("name", LLAMAS)
def test_kv_cache_contents(name):
    m = quellm.load(FIXTURES / name)
    r = ref(name)
    c = m.config
    state = m.new_state(1, 12)
    m.forward(r["tokens"], state)
    for layer in range(c.num_hidden_layers):
        k = state.caches[0].keys(layer).transpose(1, 0, 2)
        v = state.caches[0].values(layer).transpose(1, 0, 2)
        np.testing.assert_allclose(k, r["k_cache"][layer], atol=1e-5)
        np.testing.assert_allclose(v, r["v_cache"][layer], atol=1e-5)


@pytest.mark.parametrize("name", MAMBAS)
def test_mamba_states(name):
    m = quellm.load(FIXTURES / name)
    r = ref(name)
    state = m.new_state()
    m.forward(r["tokens"][:7], state)
    m.forward(r["tokens"][7:], state)
    assert state.len == len(r["tokens"])
    k1 = m.config.conv_kernel - 1
    for layer in range(m.config.num_hidden_layers):
        # HF keeps K columns (the newest included); quellm keeps the K-1 the next step needs.
        np.testing.assert_allclose(state.conv_state(layer), r["conv_state"][layer][:, -k1:], atol=1e-5)
        np.testing.assert_allclose(state.ssm_state(layer), r["ssm_state"][layer], atol=1e-6)


def test_greedy_generation(model):
    name, m = model
    r = ref(name)
    out = m.generate(list(r["tokens"]), max_new_tokens=len(r["greedy_tokens"]), stop_at_eos=False)
    assert out.tokens == [int(t) for t in r["greedy_tokens"]]


@pytest.mark.parametrize("name", MODELS)
def test_every_isa_and_thread_count(name, isa, threads):
    m = quellm.load(FIXTURES / name)
    r = ref(name)
    close(m.forward(r["tokens_batch"]), r["logits_batch"], f"{name} {isa} t={threads}")


@pytest.mark.parametrize("name", LLAMAS)
def test_legacy_config_parses_identically(name):
    legacy = FIXTURES / name / "config.legacy.json"
    assert parse_config(json.loads(legacy.read_text())) == load_checkpoint(FIXTURES / name).config


def test_sampling_is_seeded():
    m = quellm.load(FIXTURES / "llama_untied")
    a = m.generate([1, 2, 3], 10, temperature=0.8, top_k=20, top_p=0.9, seed=7, stop_at_eos=False)
    b = m.generate([1, 2, 3], 10, temperature=0.8, top_k=20, top_p=0.9, seed=7, stop_at_eos=False)
    c = m.generate([1, 2, 3], 10, temperature=0.8, top_k=20, top_p=0.9, seed=8, stop_at_eos=False)
    assert a.tokens == b.tokens and len(a.tokens) == 10
    assert a.tokens != c.tokens


# ---- bad input ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny():
    return quellm.load(FIXTURES / "llama_untied")


@pytest.mark.parametrize("tokens, match", [
    ([0, 256], "out of range"),
    ([-1], "out of range"),
    ([], "empty"),
    (np.zeros((2, 2, 2), np.int32), "shape"),
    (np.array([1.5, 2.0]), "integers"),
])
def test_bad_tokens(tiny, tokens, match):
    with pytest.raises(QuellmError, match=match):
        tiny.forward(tokens)


def test_context_too_long(tiny):
    n = tiny.max_len
    with pytest.raises(QuellmError, match="max_position_embeddings|maximum length"):
        tiny.generate([1] * n, max_new_tokens=1)
    state = tiny.new_state(1, 4)
    tiny.forward([1, 2, 3], state)
    with pytest.raises(QuellmError, match="capacity"):
        tiny.forward([4, 5], state)
    assert state.len == 3  # a refused call leaves the state as it was
    with pytest.raises(QuellmError, match="capacity"):
        tiny.new_state(1, n + 1)


def test_empty_prompt(tiny):
    with pytest.raises(QuellmError, match="empty prompt"):
        tiny.generate([], 3)


def test_no_tokenizer_is_a_clear_error(tiny):
    with pytest.raises(QuellmError, match="tokenizer"):
        tiny.generate("hello", 3)


def test_unsupported_architecture(tmp_path):
    d = tmp_path / "m"
    shutil.copytree(FIXTURES / "llama_untied", d)
    cfg = json.loads((d / "config.json").read_text())
    cfg["architectures"] = ["FalconForCausalLM"]
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(QuellmError, match="unsupported architecture"):
        quellm.load(d)


@pytest.mark.parametrize("name", MAMBAS)
def test_mamba_bad_checkpoints(name, tmp_path):
    from quellm.io import save_checkpoint

    ck = load_checkpoint(FIXTURES / name)
    tensors = {n: np.asarray(ck[n]) for n in ck}
    del tensors["backbone.layers.1.mixer.A_log"]
    with pytest.raises(QuellmError, match="A_log' required"):
        quellm.load(save_checkpoint(tmp_path / "a", ck.raw_config, tensors))
    tensors = {n: np.asarray(ck[n]) for n in ck}
    tensors["backbone.layers.0.mixer.x_proj.weight"] = tensors["backbone.layers.0.mixer.x_proj.weight"][:-1]
    with pytest.raises(QuellmError, match="x_proj.weight' has shape"):
        quellm.load(save_checkpoint(tmp_path / "b", ck.raw_config, tensors))
    m = quellm.load(FIXTURES / name)
    with pytest.raises(QuellmError, match="out of range"):
        m.forward([m.vocab_size])
