"""Evaluation: perplexity of a model on a text, and how closely one model follows another.

Texts are split into windows of ``ctx`` tokens. With ``stride == ctx`` (the default) windows do
not overlap and every token after the first of a window is scored; with ``stride < ctx`` each
window after the first scores only its last ``stride`` tokens, so every scored token sees at
least ``ctx - stride`` tokens of context (the Hugging Face sliding-window recipe).
"""

from __future__ import annotations

import dataclasses
import math
import sys
import time
from collections.abc import Iterator, Sequence

import numpy as np

from .errors import QuellmError
from .models.base import CausalLM

__all__ = ["Comparison", "Perplexity", "compare", "perplexity", "windows"]


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    z = logits.astype(np.float64)
    z -= z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def _tokens(model: CausalLM, text: str | Sequence[int]) -> np.ndarray:
    ids = model.encode(text) if isinstance(text, str) else [int(t) for t in text]
    if len(ids) < 2:
        raise QuellmError("evaluation needs a text of at least 2 tokens")
    return np.asarray(ids, np.int32)


def windows(n_tokens: int, ctx: int, stride: int | None = None) -> list[tuple[int, int, int]]:
    """``(begin, end, first_scored)`` windows over ``n_tokens``: logits at positions
    ``first_scored-1 .. end-2`` predict tokens ``first_scored .. end-1``."""
    stride = ctx if stride is None else stride
    if ctx < 2 or not 1 <= stride <= ctx:
        raise QuellmError(f"need ctx >= 2 and 1 <= stride <= ctx, got ctx={ctx}, stride={stride}")
    out = []
    begin = prev_end = 0
    while prev_end < n_tokens:
        end = min(begin + ctx, n_tokens)
        first = max(begin + 1, prev_end)
        if first < end:
            out.append((begin, end, first))
        prev_end = end
        begin += stride
    return out


class _Progress:
    """A one-line progress bar on stderr (only when it is a terminal, or when forced)."""

    def __init__(self, total: int, label: str, enabled: bool | None):
        self.total, self.label, self.done, self.t0 = total, label, 0, time.perf_counter()
        self.enabled = sys.stderr.isatty() if enabled is None else enabled

    def update(self, n: int, extra: str = "") -> None:
        self.done += n
        if self.enabled:
            el = time.perf_counter() - self.t0
            w = 30
            fill = int(w * self.done / max(self.total, 1))
            sys.stderr.write(f"\r{self.label} [{'#' * fill}{'.' * (w - fill)}] {self.done}/{self.total} {el:5.1f}s {extra}")
            sys.stderr.flush()

    def close(self) -> None:
        if self.enabled:
            sys.stderr.write("\n")


def _batched(model: CausalLM, tokens: np.ndarray, wins: list[tuple[int, int, int]], batch: int,
             progress: _Progress) -> Iterator[tuple[tuple[int, int, int], np.ndarray]]:
    """Yields (window, log-probabilities of its scored positions) running equal-length windows
    together as one batch."""
    i = 0
    while i < len(wins):
        group = [wins[i]]
        L = wins[i][1] - wins[i][0]
        while len(group) < batch and i + len(group) < len(wins) and wins[i + len(group)][1] - wins[i + len(group)][0] == L:
            group.append(wins[i + len(group)])
        arr = np.stack([tokens[b:e] for b, e, _ in group])
        logits = model.forward(arr, model.new_state(len(group), L))
        for (b, e, f), lg in zip(group, logits):
            yield (b, e, f), _log_softmax(lg[f - b - 1: e - b - 1])
        progress.update(len(group))
        i += len(group)


@dataclasses.dataclass
class Perplexity:
    perplexity: float
    nll: float  # mean negative log-likelihood per scored token (nats)
    tokens: int  # scored tokens
    windows: int
    seconds: float

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.seconds if self.seconds > 0 else float("nan")


def perplexity(model: CausalLM, text: str | Sequence[int], *, ctx: int = 512, stride: int | None = None,
               max_windows: int | None = None, batch: int = 4, progress: bool | None = None) -> Perplexity:
    """Perplexity ``exp(mean NLL)`` of ``model`` on ``text`` (a string, or token ids).

    Args:
        ctx: window length in tokens (at most the model's maximum length).
        stride: see the module docstring; default ``ctx`` (non-overlapping windows).
        max_windows: evaluate only the first windows.
        batch: windows run together per forward call.
        progress: show a progress bar on stderr (default: when stderr is a terminal).
    """
    toks = _tokens(model, text)
    ctx = min(ctx, model.max_len)
    wins = windows(len(toks), ctx, stride)[:max_windows]
    bar = _Progress(len(wins), "perplexity", progress)
    t0 = time.perf_counter()
    total, count = 0.0, 0
    for (b, e, f), lp in _batched(model, toks, wins, batch, bar):
        target = toks[f:e]
        nll = -lp[np.arange(len(target)), target]
        total += float(nll.sum())
        count += len(target)
    bar.close()
    mean = total / count
    return Perplexity(math.exp(mean), mean, count, len(wins), time.perf_counter() - t0)


@dataclasses.dataclass
class Comparison:
    kl: float  # mean KL(P_reference || P_model) per token (nats)
    top1_agreement: float  # fraction of positions with the same argmax
    perplexity_reference: float
    perplexity_model: float
    tokens: int


def compare(model: CausalLM, reference: CausalLM, text: str | Sequence[int], *, ctx: int = 512,
            stride: int | None = None, max_windows: int | None = None, batch: int = 4,
            progress: bool | None = None) -> Comparison:
    """How closely ``model`` (e.g. quantized) follows ``reference`` (e.g. float) on ``text``:
    mean KL divergence ``KL(P_reference || P_model)`` over scored positions, top-1 agreement,
    and both perplexities. Both models must share the tokenizer/vocabulary."""
    if model.vocab_size != reference.vocab_size:
        raise QuellmError(f"compare: vocabularies differ ({model.vocab_size} vs {reference.vocab_size})")
    toks = _tokens(reference, text)
    ctx = min(ctx, model.max_len, reference.max_len)
    wins = windows(len(toks), ctx, stride)[:max_windows]
    bar = _Progress(2 * len(wins), "compare", progress)
    kl = agree = nll_m = nll_r = 0.0
    count = 0
    for ((b, e, f), lp_m), (_, lp_r) in zip(_batched(model, toks, wins, batch, bar),
                                           _batched(reference, toks, wins, batch, bar)):
        target = toks[f:e]
        idx = np.arange(len(target))
        kl += float(np.sum(np.exp(lp_r) * (lp_r - lp_m)))
        agree += float(np.sum(lp_m.argmax(-1) == lp_r.argmax(-1)))
        nll_m -= float(lp_m[idx, target].sum())
        nll_r -= float(lp_r[idx, target].sum())
        count += len(target)
    bar.close()
    return Comparison(kl / count, agree / count, math.exp(nll_r / count), math.exp(nll_m / count), count)


