"""GPTQ (SPEC §8): the worked example, H = I equals RTN, codes on the grid, the proxy loss
usually beats RTN, and the recipe end to end."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import quellm
from quellm.formats import IntFormat
from quellm.gptq import _inverse_factor, gptq, gptq_columns, prepare_hessian, proxy_loss

H_EX = np.array([[1.838, 1.680, -0.150], [1.680, 1.615, -0.103], [-0.150, -0.103, 3.142]])


def test_spec_worked_example():
    w = np.array([[-0.22, -0.24, 0.82]])
    U = _inverse_factor(H_EX)  # H already includes the dampening in the example
    # (the example prints H rounded to 3 decimals; its inverse is sensitive, hence 0.5 %)
    np.testing.assert_allclose(U, [[3.327, -3.458, 0.045], [0, 0.788, 0.026], [0, 0, 0.564]], rtol=5e-3, atol=2e-3)

    def grid(col, i, W):  # step 0.5, codes -4..3
        return np.clip(np.rint(col / 0.5), -4, 3) * 0.5

    q = gptq_columns(w, U, grid)
    np.testing.assert_array_equal(q, [[0.0, -0.5, 1.0]])
    assert proxy_loss(w, q, H_EX) == pytest.approx(0.106, abs=2e-3)
    assert proxy_loss(w, [[0.0, 0.0, 1.0]], H_EX) == pytest.approx(0.440, abs=2e-3)  # RTN


@pytest.mark.parametrize("sym, group", [(True, None), (False, 16), (True, 32)])
def test_identity_hessian_is_rtn(sym, group):
    rng = np.random.default_rng(0)
    W = rng.standard_normal((24, 64)).astype(np.float32)
    fmt = IntFormat("int4", 4, sym=sym, group=group)
    p = gptq(W, np.eye(64), fmt, damp=0.0)
    r = fmt.encode(W)
    np.testing.assert_array_equal(p.codes, r.codes)
    np.testing.assert_array_equal(p.scales, r.scales)


@pytest.mark.parametrize("sym", [True, False])
@pytest.mark.parametrize("group", [None, 16])
def test_clip_search_with_identity_hessian_is_best_clipped_rtn(sym, group):
    """With H = I, GPTQ rounds to nearest, so clip_search picks per row (and group) the clip ratio
    of CLIP_SEARCH_GRID whose RTN error Σ|q − w|^2.4 is smallest: checked against every ratio."""
    from quellm.gptq import CLIP_SEARCH_GRID

    rng = np.random.default_rng(1)
    W = rng.standard_normal((12, 64)).astype(np.float32)
    W[:, 5] *= 8  # outliers that make clipping pay
    G = group or 64
    fmt = IntFormat("int4", 4, sym=sym, group=group)
    got = gptq(W, np.eye(64), fmt, damp=0.0, clip_search=True).decode().astype(np.float64)
    cands = [IntFormat("int4", 4, sym=sym, group=group, clip=c).encode(W).decode().astype(np.float64)
             for c in CLIP_SEARCH_GRID]
    err = lambda q: (np.abs(q - W).reshape(12, -1, G) ** 2.4).sum(axis=2)  # noqa: E731
    best = np.min([err(q) for q in cands], axis=0)
    np.testing.assert_allclose(err(got), best, rtol=1e-9)
    assert (best < err(cands[0]) - 1e-9).any()  # clipping beat the full range somewhere
    with pytest.raises(ValueError, match="w_clip 1.0 or 'search'"):
        quellm.LinearSpec("int4", w_method="gptq", w_clip=0.9)


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 2**31), group=st.sampled_from([None, 16, 32]))
def test_beats_rtn_on_correlated_inputs(seed, group):
    rng = np.random.default_rng(seed)
    K = 64
    X = rng.standard_normal((512, 8)) @ rng.standard_normal((8, K)) + 0.1 * rng.standard_normal((512, K))
    H = X.T @ X / 512
    W = rng.standard_normal((16, K)).astype(np.float32)
    fmt = IntFormat("int4", 4, sym=True, group=group)
    p = gptq(W, H, fmt)
    q, r = p.decode(), fmt.encode(W).decode()
    assert proxy_loss(W, q, H) < proxy_loss(W, r, H)
    # codes are on the format's grid and decode to what the loop produced
    assert np.all(np.abs(q / np.repeat(p.scales, group or K, axis=1) - np.rint(q / np.repeat(p.scales, group or K, axis=1))) < 1e-3)


def test_dead_inputs_and_errors():
    W = np.ones((4, 8), np.float32)
    H = np.eye(8)
    H[3, 3] = 0.0
    Wd, _ = prepare_hessian(W, H, 0.01)
    assert np.all(Wd[:, 3] == 0) and np.all(W[:, 3] == 1)  # the caller's W is untouched
    with pytest.raises(ValueError, match="Hessian must be"):
        gptq(W, np.eye(7), IntFormat("int4", 4))
    with pytest.raises(ValueError, match="non-finite"):
        gptq(W, np.full((8, 8), np.nan), IntFormat("int4", 4))
    with pytest.raises(ValueError, match="positive definite"):
        gptq(W, -np.eye(8), IntFormat("int4", 4), damp=0.0)


def test_gptq_recipe(tmp_path):
    m = quellm.load(Path(__file__).parent / "fixtures" / "llama_tied_llama3")
    toks = np.random.default_rng(0).integers(0, m.vocab_size, (2, 12))
    calib = np.random.default_rng(1).integers(0, m.vocab_size, 256).tolist()
    with pytest.raises(ValueError, match="xtx"):
        quellm.quantize(m, "gptq:group=16", quellm.calibrate(m, calib, n_samples=4, seq_len=32, progress=False))
    stats = quellm.calibrate(m, calib, n_samples=4, seq_len=32, xtx=True, progress=False)
    ref = m.forward(toks)
    err = {}
    for name in ("w4a16:group=16,sym=true,w_clip=1.0", "gptq:group=16,sym=true"):
        q = quellm.quantize(m, name, stats)
        err[name] = float(np.abs(q.forward(toks) - ref).mean())
    q.save(tmp_path / "g")
    np.testing.assert_array_equal(quellm.load(tmp_path / "g").forward(toks), q.forward(toks))
    assert q.recipe.linear.w_method == "gptq" and q.recipe.name.endswith("gptq-clip")
    assert err["gptq:group=16,sym=true"] < err["w4a16:group=16,sym=true,w_clip=1.0"], err


def _plain_gptq(W, H, step, qmin, qmax, damp=0.01):
    """A straightforward GPTQ (no blocks, no groups): the definition, for comparison."""
    W = np.array(W, np.float64)
    H = np.array(H, np.float64) + damp * np.mean(np.diag(H)) * np.eye(H.shape[0])
    Hinv = np.linalg.inv(H)
    Q = np.zeros_like(W)
    for i in range(W.shape[1]):
        q = np.clip(np.rint(W[:, i] / step), qmin, qmax) * step
        Q[:, i] = q
        err = (W[:, i] - q) / Hinv[i, i]
        W[:, i + 1:] -= np.outer(err, Hinv[i, i + 1:])
        # condition the remaining inverse Hessian on column i (OBS update)
        Hinv = Hinv - np.outer(Hinv[:, i], Hinv[i, :]) / Hinv[i, i]
    return Q


def test_matches_a_plain_implementation():
    rng = np.random.default_rng(7)
    K = 12
    X = rng.standard_normal((200, K)) @ rng.standard_normal((K, K))
    H = X.T @ X / 200
    W = rng.standard_normal((5, K))
    _, U = prepare_hessian(W, H, 0.01)

    def grid(col, i, Wc):
        return np.clip(np.rint(col / 0.25), -8, 7) * 0.25

    for block in (1, 5, 128):  # lazy blocks are exact algebra
        np.testing.assert_allclose(gptq_columns(W, U, grid, block=block), _plain_gptq(W, H, 0.25, -8, 7), atol=1e-9)


@pytest.mark.parametrize("group", [None, 16])
def test_act_order(group):
    rng = np.random.default_rng(3)
    K = 64
    X = rng.standard_normal((512, K)) * np.geomspace(0.01, 10, K)  # very unequal input energy
    H = X.T @ X / 512
    W = rng.standard_normal((16, K)).astype(np.float32)
    fmt = IntFormat("int4", 4, sym=True, group=group)
    a = gptq(W, H, fmt, act_order=True)
    b = gptq(W, H, fmt)
    r = fmt.encode(W)
    assert proxy_loss(W, a.decode(), H) < proxy_loss(W, r.decode(), H)
    assert proxy_loss(W, b.decode(), H) < proxy_loss(W, r.decode(), H)
    if group:  # static groups: scales from the original weights, i.e. RTN's
        np.testing.assert_array_equal(a.scales, r.scales)
