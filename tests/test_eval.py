"""Perplexity and model comparison against a direct numpy computation."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

import quellm
from quellm.errors import QuellmError
from quellm.eval import windows
from quellm.reference import llama_forward

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(scope="module")
def model():
    return quellm.load(FIXTURES / "llama_untied")


def direct_nll(model, toks, ctx, stride):
    """Mean NLL from the numpy reference, window by window."""
    ck = quellm.load_checkpoint(FIXTURES / "llama_untied")
    total, n = 0.0, 0
    for b, e, f in windows(len(toks), ctx, stride):
        logits, _ = llama_forward(ck, ck.config, toks[b:e])
        lg = logits.astype(np.float64)
        lp = lg - lg.max(-1, keepdims=True)
        lp -= np.log(np.exp(lp).sum(-1, keepdims=True))
        for t in range(f, e):
            total -= lp[t - b - 1, toks[t]]
            n += 1
    return total / n, n


@pytest.mark.parametrize("ctx, stride", [(16, None), (16, 8), (7, 3), (200, None)])
def test_perplexity_matches_direct_computation(model, ctx, stride):
    toks = np.random.default_rng(0).integers(0, 256, 61).astype(np.int32)
    want, n = direct_nll(model, toks, ctx, stride)
    got = quellm.perplexity(model, toks, ctx=ctx, stride=stride, batch=3, progress=False)
    assert got.tokens == n
    assert abs(got.nll - want) < 1e-5
    assert math.isclose(got.perplexity, math.exp(want), rel_tol=1e-5)


def test_windows_score_each_token_once():
    # overlapping windows score every token but the first, each once
    for n, ctx, stride in [(61, 16, 5), (61, 16, 15), (5, 10, None)]:
        scored = [t for b, e, f in windows(n, ctx, stride) for t in range(f, e)]
        assert scored == list(range(1, n))
    # non-overlapping windows cannot score the first token of each window
    for n, ctx in [(61, 16), (10, 4)]:
        scored = [t for b, e, f in windows(n, ctx) for t in range(f, e)]
        assert scored == [t for t in range(1, n) if t % ctx]


def test_compare_with_itself_and_another(model):
    toks = np.random.default_rng(1).integers(0, 256, 40).astype(np.int32)
    same = quellm.compare(model, model, toks, ctx=16, progress=False)
    assert same.kl == pytest.approx(0.0, abs=1e-9) and same.top1_agreement == 1.0
    other = quellm.load(FIXTURES / "llama_bias_linear")
    diff = quellm.compare(other, model, toks, ctx=16, progress=False)
    assert diff.kl > 0.01 and diff.top1_agreement < 1.0
    assert diff.perplexity_reference == pytest.approx(quellm.perplexity(model, toks, ctx=16, progress=False).perplexity, rel=1e-6)


def test_compare_needs_same_vocabulary(model, make_checkpoint):
    path, _ = make_checkpoint()  # vocabulary of 64
    with pytest.raises(QuellmError, match="vocabularies"):
        quellm.compare(quellm.load(path), model, [1, 2, 3])


@pytest.mark.parametrize("text", [[], [5]])
def test_too_short(model, text):
    with pytest.raises(QuellmError, match="at least 2 tokens"):
        quellm.perplexity(model, text)


def test_bad_window_arguments():
    with pytest.raises(QuellmError):
        windows(10, 1)
    with pytest.raises(QuellmError):
        windows(10, 4, 5)
