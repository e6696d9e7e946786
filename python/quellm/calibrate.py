"""Calibration: activation statistics at every quantization point of a model.

The C++ runtime accumulates, for each point (layer, kind) and channel: count, absmax, and the
raw moments Σx, Σx², Σx³, Σx⁴ (float64), and optionally XᵀX (the GPTQ Hessian). Points:

* Llama: ``attn_in`` (q/k/v input), ``o_proj_in``, ``mlp_in`` (gate/up input), ``down_proj_in``,
  ``k`` (after RoPE), ``v``.
* Mamba: ``in_proj_in``, ``x_proj_in`` (the scan input u), ``dt_proj_in``, ``dt``, ``B``, ``C``,
  ``out_proj_in`` (the gated scan output y).
* Both: ``lm_head_in`` (stored under layer index ``n_layers``).

Example::

    stats = quellm.calibrate(model, open("calib.txt").read(), n_samples=32, seq_len=256)
    s = stats["attn_in", 3]          # PointStats of layer 3
    s.absmax.argmax(), s.kurtosis.max()
    stats.save("stats.npz"); quellm.Stats.load("stats.npz")
"""

from __future__ import annotations

import dataclasses
import json
import os
import zipfile
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from . import _core
from .errors import QuellmError
from .eval import _Progress
from .models.base import CausalLM, sample_next

__all__ = ["PointStats", "Stats", "calibrate", "calibration_windows", "generate_calibration_tokens"]

KINDS: list[str] = list(_core.Observers.kinds())


@dataclasses.dataclass
class PointStats:
    """Statistics of one quantization point; arrays are per channel."""

    layer: int
    kind: str
    count: int
    absmax: np.ndarray
    sum: np.ndarray
    sum2: np.ndarray
    sum3: np.ndarray
    sum4: np.ndarray
    xtx: np.ndarray | None = None

    @property
    def channels(self) -> int:
        return int(self.absmax.shape[0])

    @property
    def mean(self) -> np.ndarray:
        return self.sum / self.count

    @property
    def var(self) -> np.ndarray:
        return np.maximum(self.sum2 / self.count - self.mean**2, 0.0)

    @property
    def rms(self) -> np.ndarray:
        return np.sqrt(self.sum2 / self.count)

    @property
    def kurtosis(self) -> np.ndarray:
        """Per-channel kurtosis E[(x-μ)⁴]/σ⁴ (3 for a Gaussian; NaN for a constant channel)."""
        n = self.count
        mu, m2, m3, m4 = self.mean, self.sum2 / n, self.sum3 / n, self.sum4 / n
        c4 = m4 - 4 * mu * m3 + 6 * mu**2 * m2 - 3 * mu**4
        v = self.var
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(v > 0, c4 / v**2, np.nan)

    @property
    def outlier_ratio(self) -> float:
        """max channel absmax / median channel absmax — how much one channel dominates."""
        med = float(np.median(self.absmax))
        return float(self.absmax.max() / med) if med > 0 else float("inf")


class Stats:
    """Calibration statistics of one model: ``stats[kind, layer] -> PointStats``."""

    def __init__(self, model_info: dict[str, Any], points: dict[tuple[str, int], PointStats], meta: dict[str, Any]):
        self.model_info = model_info
        self.points = points
        self.meta = meta

    def __getitem__(self, key: tuple[str, int]) -> PointStats:
        try:
            return self.points[key]
        except KeyError:
            raise QuellmError(f"no statistics for point {key!r}; available kinds: {sorted({k for k, _ in self.points})}") from None

    def __iter__(self) -> Iterator[PointStats]:
        return iter(self.points.values())

    def __len__(self) -> int:
        return len(self.points)

    def kinds(self) -> list[str]:
        return [k for k in KINDS if any(kk == k for kk, _ in self.points)]

    def check_model(self, model: CausalLM) -> None:
        """Raise unless these statistics were collected on a model shaped like ``model``."""
        info = _model_info(model)
        if info != self.model_info:
            diff = {k: (self.model_info.get(k), info.get(k)) for k in set(info) | set(self.model_info)
                    if self.model_info.get(k) != info.get(k)}
            raise QuellmError(f"statistics were collected on another model: {diff} (stats, model)")

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write an ``.npz`` (written to a temporary name, then renamed)."""
        arrays: dict[str, np.ndarray] = {"__meta__": np.frombuffer(json.dumps(
            {"model": self.model_info, "meta": self.meta}).encode(), np.uint8)}
        for (kind, layer), p in self.points.items():
            pre = f"{kind}/{layer}/"
            arrays[pre + "count"] = np.asarray(p.count, np.int64)
            for f in ("absmax", "sum", "sum2", "sum3", "sum4"):
                arrays[pre + f] = getattr(p, f)
            if p.xtx is not None:
                arrays[pre + "xtx"] = p.xtx
        path = os.fspath(path)
        tmp = path + ".tmp.npz"
        np.savez(tmp, **arrays)
        os.replace(tmp, path)

    @staticmethod
    def load(path: str | os.PathLike[str]) -> "Stats":
        try:
            # Open the file ourselves: np.load leaks its handle when the archive is corrupt.
            with open(path, "rb") as f, np.load(f, allow_pickle=False) as z:
                head = json.loads(bytes(z["__meta__"]).decode())
                points: dict[tuple[str, int], PointStats] = {}
                keys = {k.rsplit("/", 1)[0] for k in z.files if k != "__meta__"}
                for key in keys:
                    kind, layer = key.split("/")
                    g = lambda f: z[f"{key}/{f}"]  # noqa: E731
                    points[(kind, int(layer))] = PointStats(
                        int(layer), kind, int(g("count")), g("absmax"), g("sum"), g("sum2"), g("sum3"), g("sum4"),
                        z[f"{key}/xtx"] if f"{key}/xtx" in z.files else None)
        except (OSError, ValueError, KeyError, EOFError, AttributeError, TypeError, UnicodeDecodeError,
                zipfile.BadZipFile) as e:
            raise QuellmError(f"{path}: not a quellm statistics file: {e}") from None
        return Stats(head["model"], points, head.get("meta", {}))


def _model_info(model: CausalLM) -> dict[str, Any]:
    c = model.config
    return {"architecture": c.architecture, "hidden_size": c.hidden_size, "num_hidden_layers": c.num_hidden_layers,
            "vocab_size": c.vocab_size}


def calibration_windows(tokens: Sequence[int], n_samples: int, seq_len: int, seed: int = 0) -> np.ndarray:
    """``n_samples`` windows of ``seq_len`` tokens drawn at seeded random offsets (the GPTQ
    recipe); a text shorter than ``seq_len`` gives one window of its whole length."""
    toks = np.asarray(tokens, np.int32)
    if toks.size < 2:
        raise QuellmError("calibration needs at least 2 tokens of text")
    if n_samples < 1 or seq_len < 2:
        raise QuellmError(f"need n_samples >= 1 and seq_len >= 2, got {n_samples}, {seq_len}")
    if toks.size <= seq_len:
        return toks[None, :]
    rng = np.random.default_rng(seed)
    starts = rng.integers(0, toks.size - seq_len + 1, n_samples)
    return np.stack([toks[s: s + seq_len] for s in starts])


def check_windows(windows: Any, vocab_size: int, what: str) -> np.ndarray:
    """``windows`` as a validated ``(n, seq_len)`` int32 array of token ids."""
    w = np.asarray(windows)
    if w.ndim != 2 or w.size == 0 or w.dtype.kind not in "iu":
        raise QuellmError(f"{what}: token windows must be a non-empty (n, seq_len) integer array, got {w.dtype} {w.shape}")
    if w.min() < 0 or w.max() >= vocab_size:
        raise QuellmError(f"{what}: token ids must lie in [0, {vocab_size})")
    return w.astype(np.int32, copy=False)


def generate_calibration_tokens(model: CausalLM, n_samples: int, seq_len: int, seed: int = 0,
                                temperature: float = 1.0, top_p: float = 0.95) -> np.ndarray:
    """Data-free calibration text: ``n_samples`` sequences the model samples itself, all decoded
    together as one batch, each started from the BOS token (or a random token)."""
    rng = np.random.default_rng(seed)
    bos = getattr(model.config, "bos_token_id", None)
    first = np.full(n_samples, bos, np.int32) if isinstance(bos, int) else rng.integers(0, model.vocab_size, n_samples).astype(np.int32)
    out = np.empty((n_samples, seq_len), np.int32)
    out[:, 0] = first
    state = model.new_state(n_samples, seq_len)
    logits = model.forward(out[:, :1], state, all_logits=False)
    for t in range(1, seq_len):
        out[:, t] = [sample_next(lg, rng, temperature, 0, top_p) for lg in logits]
        if t + 1 < seq_len:
            logits = model.forward(out[:, t: t + 1], state, all_logits=False)
    return out


def observed(obs: Any, layer: int, kind: str, seq_len: int, n_layers: int, what: str = "calibration") -> dict | None:
    """The statistics of point (layer, kind) in ``obs`` (None if nothing was observed there).

    Raises:
        QuellmError: a NaN/Inf was observed; names the layer, point, channel, sample and position.
    """
    d = obs.stats(layer, KINDS.index(kind))
    if d is not None and d["nonfinite"]:
        row = int(d["bad_row"])
        where = f"layer {layer}" if layer < n_layers else "the final norm"
        raise QuellmError(f"{what}: non-finite activation at {where}, point {kind!r}, channel {int(d['bad_channel'])} "
                          f"(sample {row // seq_len}, position {row % seq_len})")
    return d


def calibrate(model: CausalLM, text: str | Sequence[int] | np.ndarray | None = None, *, n_samples: int = 128, seq_len: int = 512,
              seed: int = 0, xtx: bool = False, batch: int = 4, progress: bool | None = None) -> Stats:
    """Run calibration windows through ``model`` and collect statistics at every point.

    Args:
        text: calibration text (or token ids). ``None``: data-free — the model generates its own
            calibration text from BOS (``n_samples`` sequences of ``seq_len`` tokens). A 2-D
            integer array is taken as the windows themselves (``n_samples``/``seq_len`` unused).
        n_samples, seq_len: windows drawn at seeded random offsets of the text.
        xtx: also accumulate XᵀX per point (for GPTQ; memory ~ channels² · 8 bytes per point).
        batch: windows per forward call.

    Raises:
        QuellmError: empty text, or a NaN/Inf activation (the message names layer, point,
            channel and sample).
    """
    if text is None:
        wins = generate_calibration_tokens(model, n_samples, seq_len, seed)
    elif isinstance(text, np.ndarray) and text.ndim == 2:
        wins = check_windows(text, model.vocab_size, "calibrate")
    else:
        toks = model.encode(text) if isinstance(text, str) else [int(t) for t in text]
        if not toks:
            raise QuellmError("calibration text is empty")
        wins = calibration_windows(toks, n_samples, seq_len, seed)
    obs = _core.Observers(model.config.num_hidden_layers, xtx)
    bar = _Progress(len(wins), "calibrate", progress)
    for i in range(0, len(wins), batch):
        chunk = wins[i: i + batch]
        model.forward(chunk, model.new_state(len(chunk), chunk.shape[1]), all_logits=False, observers=obs)
        bar.update(len(chunk))
    bar.close()
    points: dict[tuple[str, int], PointStats] = {}
    L = model.config.num_hidden_layers
    for layer in range(L + 1):
        for kind in KINDS:
            d = observed(obs, layer, kind, wins.shape[1], L)
            if d is None:
                continue
            points[(kind, layer)] = PointStats(layer, kind, int(d["count"]), d["absmax"], d["sum"], d["sum2"],
                                               d["sum3"], d["sum4"], d.get("xtx"))
    meta = {"n_samples": int(len(wins)), "seq_len": int(wins.shape[1]), "seed": seed,
            "data_free": text is None}
    return Stats(_model_info(model), points, meta)
