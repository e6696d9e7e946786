"""Calibration statistics from the C++ observers against numpy computations on the oracle
fixtures' hidden states; NaN reporting; the stats file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import quellm
from quellm.calibrate import Stats, calibration_windows
from quellm.errors import QuellmError
from quellm.io import load_checkpoint, save_checkpoint
from quellm.reference import rmsnorm

FIXTURES = Path(__file__).parent / "fixtures"


def moments_close(p, x):
    x = x.astype(np.float64)
    assert p.count == x.shape[0]
    np.testing.assert_allclose(p.absmax, np.abs(x).max(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(p.sum, x.sum(0), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(p.sum2, (x**2).sum(0), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(p.sum4, (x**4).sum(0), rtol=1e-4, atol=1e-5)


def test_llama_points_match_hidden_states():
    name = "llama_untied"
    ck = load_checkpoint(FIXTURES / name)
    r = np.load(FIXTURES / name / "reference.npz")
    m = quellm.load(FIXTURES / name)
    st = quellm.calibrate(m, list(r["tokens"]), n_samples=1, seq_len=len(r["tokens"]), xtx=True)
    c = ck.config
    hs = r["hidden_states"]  # [embeddings, outputs of layers 0..L-2, final norm]
    for layer in range(c.num_hidden_layers):
        x = rmsnorm(hs[layer], ck.get(f"model.layers.{layer}.input_layernorm.weight", np.float32), c.rms_norm_eps)
        p = st["attn_in", layer]
        moments_close(p, x)
        np.testing.assert_allclose(p.xtx, x.astype(np.float64).T @ x, rtol=1e-4, atol=1e-4)
        k = r["k_cache"][layer].transpose(1, 0, 2).reshape(len(r["tokens"]), -1)
        moments_close(st["k", layer], k)
        v = r["v_cache"][layer].transpose(1, 0, 2).reshape(len(r["tokens"]), -1)
        moments_close(st["v", layer], v)
    moments_close(st["lm_head_in", c.num_hidden_layers], hs[-1])
    assert set(st.kinds()) == {"attn_in", "o_proj_in", "mlp_in", "down_proj_in", "k", "v", "lm_head_in"}
    assert st["down_proj_in", 0].channels == c.intermediate_size


def test_mamba_points_match_hidden_states():
    name = "mamba_tiny"
    ck = load_checkpoint(FIXTURES / name)
    r = np.load(FIXTURES / name / "reference.npz")
    m = quellm.load(FIXTURES / name)
    st = quellm.calibrate(m, list(r["tokens"]), n_samples=1, seq_len=len(r["tokens"]))
    c = ck.config
    emb = ck.get("backbone.embeddings.weight", np.float32)[r["tokens"]]
    inputs = [emb] + list(r["layer_outputs"][:-1])
    for layer in range(c.num_hidden_layers):
        x = rmsnorm(inputs[layer], ck.get(f"backbone.layers.{layer}.norm.weight", np.float32), c.layer_norm_epsilon)
        moments_close(st["in_proj_in", layer], x)
        assert st["dt", layer].channels == c.intermediate_size
        assert st["B", layer].channels == c.state_size and st["dt_proj_in", layer].channels == c.time_step_rank
        assert np.all(st["dt", layer].sum > 0)  # softplus output is positive
    assert set(st.kinds()) == {"in_proj_in", "x_proj_in", "dt_proj_in", "dt", "B", "C", "out_proj_in", "lm_head_in"}


def test_statistics_do_not_depend_on_threads(threads):
    m = quellm.load(FIXTURES / "llama_tied_llama3")
    toks = list(np.random.default_rng(0).integers(0, 256, 200))
    st = quellm.calibrate(m, toks, n_samples=3, seq_len=20, xtx=True)
    quellm.set_num_threads(1)
    base = quellm.calibrate(m, toks, n_samples=3, seq_len=20, xtx=True)
    for p in base:
        q = st[p.kind, p.layer]
        for f in ("absmax", "sum", "sum2", "sum3", "sum4", "xtx"):
            assert np.array_equal(getattr(q, f), getattr(p, f)), (p.kind, p.layer, f)


def test_kurtosis_and_derived():
    m = quellm.load(FIXTURES / "llama_untied")
    st = quellm.calibrate(m, list(range(1, 200)), n_samples=4, seq_len=40)
    p = st["mlp_in", 1]
    x_var = p.sum2 / p.count - (p.sum / p.count) ** 2
    np.testing.assert_allclose(p.var, x_var)
    assert np.all(p.kurtosis[np.isfinite(p.kurtosis)] >= 1.0 - 1e-9)  # kurtosis >= 1 always
    assert p.outlier_ratio >= 1.0


def test_nan_is_reported_with_layer_point_and_channel(tmp_path):
    ck = load_checkpoint(FIXTURES / "llama_untied")
    tensors = {n: np.array(ck[n]) for n in ck}
    tensors["model.layers.1.mlp.up_proj.weight"][37, 5] = np.nan
    m = quellm.load(save_checkpoint(tmp_path / "m", ck.raw_config, tensors))
    with pytest.raises(QuellmError, match=r"layer 1, point 'down_proj_in', channel 37"):
        quellm.calibrate(m, list(range(1, 50)), n_samples=2, seq_len=16)


def test_save_load_and_model_check(tmp_path):
    m = quellm.load(FIXTURES / "llama_untied")
    st = quellm.calibrate(m, list(range(1, 100)), n_samples=2, seq_len=16, xtx=True)
    st.save(tmp_path / "s.npz")
    back = Stats.load(tmp_path / "s.npz")
    assert back.meta == st.meta and len(back) == len(st)
    for p in st:
        q = back[p.kind, p.layer]
        assert q.count == p.count and np.array_equal(q.xtx, p.xtx) and np.array_equal(q.sum4, p.sum4)
    back.check_model(m)
    with pytest.raises(QuellmError, match="another model"):
        back.check_model(quellm.load(FIXTURES / "llama_tied_llama3"))
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(QuellmError, match="not a quellm statistics file"):
        Stats.load(tmp_path / "bad.npz")
    with pytest.raises(QuellmError, match="no statistics"):
        st["nope", 0]


def test_data_free_is_seeded():
    m = quellm.load(FIXTURES / "mamba_tiny")
    a = quellm.calibrate(m, None, n_samples=2, seq_len=12, seed=3)
    b = quellm.calibrate(m, None, n_samples=2, seq_len=12, seed=3)
    c = quellm.calibrate(m, None, n_samples=2, seq_len=12, seed=4)
    assert np.array_equal(a["in_proj_in", 1].sum, b["in_proj_in", 1].sum)
    assert not np.array_equal(a["in_proj_in", 1].sum, c["in_proj_in", 1].sum)
    assert a.meta["data_free"]


def test_windows_and_bad_text():
    w = calibration_windows(list(range(100)), 5, 10, seed=1)
    assert w.shape == (5, 10) and all(np.array_equal(r, np.arange(r[0], r[0] + 10)) for r in w)
    assert calibration_windows([1, 2, 3], 5, 10).shape == (1, 3)
    m = quellm.load(FIXTURES / "llama_untied")
    with pytest.raises(QuellmError, match="empty"):
        quellm.calibrate(m, [])
    with pytest.raises(QuellmError, match="at least 2 tokens"):
        quellm.calibrate(m, [5])
