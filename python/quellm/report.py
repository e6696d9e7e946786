"""The outlier report: where a model's outlier channels are, and what a Hadamard rotation does to them.

From calibration statistics (:func:`quellm.calibrate`) it computes, for every quantization point
(kind, layer): the top channels by absmax, the ratio max/median of the per-channel absmax and of
the per-channel RMS, per-channel kurtosis, and the per-channel RMS *after* a Hadamard rotation
``y = x·Rᵀ`` with ``R = H_n/√n`` (the transform of :func:`quellm.fwht`). It also lists channels
that are in the top-k of many layers (persistent outlier channels).

What is estimated after rotation (the statistics hold no rotated activations, so no rotated
absmax or kurtosis can be recovered — the before/after comparison is on the RMS, √E[x²]):

* ``exact``: with XᵀX (``calibrate(..., xtx=True)``) the rotated per-channel second moment is
  ``diag(R XᵀX Rᵀ)/count`` exactly, computed with the FWHT kernel on rows, then columns.
* ``diagonal``: without XᵀX the channel covariance is taken as diagonal (channels uncorrelated):
  ``E[y_j²] ≈ mean_i Var[x_i] + (R·μ)_j²`` (μ the per-channel mean). Exact only when channels are
  uncorrelated; real activations are correlated, so the numbers are indicative.
* ``n/a``: the channel count is not a supported FWHT size (:func:`quellm.fwht_sizes`).

Example::

    s = quellm.report(stats, "report/", top=8)      # or quellm.report("stats.npz", ...)
    print(s.text())                                 # report/index.html + report/img/*.png
"""

from __future__ import annotations

import dataclasses
import html
import math
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from .calibrate import KINDS, PointStats, Stats
from .errors import QuellmError
from .fwht import fwht
from .hadamard import fwht_sizes

__all__ = ["PointSummary", "ReportSummary", "report", "rotated_second_moment"]

_NOTES = {
    "exact": "exact: diag(R XᵀX Rᵀ)/count from the collected XᵀX",
    "diagonal": ("diagonal estimate (no XᵀX: calibrate with xtx=True for the exact value): channels taken as "
                 "uncorrelated, E[y_j²] ≈ mean_i Var[x_i] + (R·μ)_j²"),
    "n/a": "n/a: channel count is not a supported Hadamard size (quellm.fwht_sizes)",
    "off": "not computed (rotate=False)",
}


@dataclasses.dataclass
class PointSummary:
    """The outlier figures of one quantization point (kind, layer)."""

    kind: str
    layer: int
    channels: int
    count: int
    top_channels: list[int]    # by absmax, largest first
    top_absmax: list[float]
    absmax_ratio: float        # max / median of per-channel absmax
    rms_ratio: float           # max / median of per-channel RMS
    rotated_rms_ratio: float | None  # the same after the Hadamard rotation (None: not computed)
    rotation: str              # "exact", "diagonal", "n/a" or "off" (module docstring)
    kurtosis_max: float        # NaN if every channel is constant
    kurtosis_argmax: int | None


@dataclasses.dataclass
class ReportSummary:
    """What :func:`report` found; ``text()`` is the plain-text summary the CLI prints."""

    points: list[PointSummary]
    persistent: dict[str, list[tuple[int, int, int]]]  # kind -> [(channel, layers in top-k, layers)]
    top: int
    model_info: dict[str, Any]
    meta: dict[str, Any]
    out_dir: Path | None = None
    files: list[Path] = dataclasses.field(default_factory=list)

    def kinds(self) -> list[str]:
        return _ordered_kinds({p.kind for p in self.points})

    def point(self, kind: str, layer: int) -> PointSummary:
        for p in self.points:
            if p.kind == kind and p.layer == layer:
                return p
        raise QuellmError(f"no point ({kind!r}, {layer}) in this report")

    def text(self, worst: int = 3) -> str:
        """Per kind: the ``worst`` layers by absmax max/median with their top channels, the RMS
        max/median before -> after rotation, and the persistent outlier channels."""
        mi = self.model_info
        lines = [f"quellm outlier report: {mi.get('architecture', '?')}, {mi.get('num_hidden_layers', '?')} layers, "
                 f"hidden {mi.get('hidden_size', '?')}; {self.meta.get('n_samples', '?')} samples x "
                 f"{self.meta.get('seq_len', '?')} tokens",
                 "ratio = max/median over channels; 'rms a -> b' = RMS ratio before -> after a Hadamard rotation"]
        used = sorted({p.rotation for p in self.points}, key=list(_NOTES).index)
        lines += [f"  rotation {_NOTES[r]}" for r in used]
        for kind in self.kinds():
            pts = [p for p in self.points if p.kind == kind]
            ranked = sorted(pts, key=lambda p: -_sortable(p.absmax_ratio))
            rot = [p.rotated_rms_ratio for p in pts if p.rotated_rms_ratio is not None]
            lines += ["", f"{kind} ({pts[0].channels} channels, {len(pts)} layer{'s' * (len(pts) > 1)}): absmax ratio "
                      f"median {_f(float(np.median([p.absmax_ratio for p in pts])))}, max {_f(ranked[0].absmax_ratio)} "
                      f"(layer {ranked[0].layer}); rms ratio median {_f(float(np.median([p.rms_ratio for p in pts])))}"
                      + (f" -> {_f(float(np.median(rot)))} rotated" if rot else "")]
            for p in ranked[:worst]:
                tops = " ".join(f"{c}:{_f(a)}" for c, a in zip(p.top_channels, p.top_absmax))
                after = "n/a" if p.rotated_rms_ratio is None else _f(p.rotated_rms_ratio)
                lines.append(f"  layer {p.layer:>3}  absmax ratio {_f(p.absmax_ratio):>6}  rms {_f(p.rms_ratio)} -> "
                             f"{after} ({p.rotation})  kurtosis max {_f(p.kurtosis_max)}"
                             + (f" (ch {p.kurtosis_argmax})" if p.kurtosis_argmax is not None else ""))
                lines.append(f"             top channels (channel:absmax) {tops}")
            pers = self.persistent.get(kind, [])
            if pers:
                lines.append(f"  persistent outlier channels (top-{self.top} in >= half the layers): "
                             + ", ".join(f"{c} ({n}/{m})" for c, n, m in pers))
        return "\n".join(lines)


def _f(x: float | None) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    if math.isinf(x):
        return "inf"
    return f"{x:.3g}" if abs(x) < 1e4 else f"{x:.3e}"


def _sortable(x: float) -> float:
    return -1.0 if math.isnan(x) else x


def _ratio(v: np.ndarray) -> float:
    med = float(np.median(v))
    return float(v.max() / med) if med > 0 else (float("inf") if v.max() > 0 else float("nan"))


def _ordered_kinds(kinds: set[str]) -> list[str]:
    return sorted(kinds, key=lambda k: (KINDS.index(k) if k in KINDS else len(KINDS), k))


# ---- rotation estimates ----------------------------------------------------------------------

def rotated_second_moment(p: PointStats, chunk: int = 1024) -> tuple[np.ndarray | None, str]:
    """Per-channel second moment E[y_j²] of the rotated activations ``y = fwht(x)`` (float64 ``(n,)``)
    and how it was obtained: ``"exact"`` from XᵀX, ``"diagonal"`` without it, or ``(None, "n/a")``
    for an unsupported size (module docstring). Memory: one float32 ``(n, n)`` beside XᵀX."""
    n = p.channels
    if n not in fwht_sizes(n):
        return None, "n/a"
    if p.xtx is None:
        var = np.maximum(p.sum2 / p.count - p.mean**2, 0.0)
        rmu = fwht(p.mean).astype(np.float64)  # R·μ
        return var.mean() + rmu**2, "diagonal"
    b = fwht(p.xtx / p.count)  # (n, n) = M Rᵀ, M = XᵀX/count (symmetric)
    out = np.empty(n)
    for j0 in range(0, n, chunk):  # rows j0.. of R M Rᵀ = fwht(((M Rᵀ)ᵀ)[j0..]); keep their diagonal
        j1 = min(n, j0 + chunk)
        rows = fwht(np.ascontiguousarray(b[:, j0:j1].T))
        out[j0:j1] = rows[np.arange(j1 - j0), np.arange(j0, j1)]
    return np.maximum(out, 0.0), "exact"


# ---- analysis --------------------------------------------------------------------------------

@dataclasses.dataclass
class _Point:
    summary: PointSummary
    absmax: np.ndarray
    kurtosis: np.ndarray
    rms: np.ndarray
    rotated_rms: np.ndarray | None


def _check_point(p: PointStats) -> None:
    where = f"statistics of point ({p.kind!r}, {p.layer})"
    if p.count < 1:
        raise QuellmError(f"{where}: count is {p.count}")
    n = p.absmax.shape
    if len(n) != 1 or n[0] < 1 or any(getattr(p, f).shape != n for f in ("sum", "sum2", "sum3", "sum4")):
        raise QuellmError(f"{where}: per-channel arrays must all have one shape (C,), got "
                          f"{[getattr(p, f).shape for f in ('absmax', 'sum', 'sum2', 'sum3', 'sum4')]}")
    if p.xtx is not None and p.xtx.shape != (n[0], n[0]):
        raise QuellmError(f"{where}: XᵀX has shape {p.xtx.shape}, expected {(n[0], n[0])}")
    for f in ("absmax", "sum", "sum2", "sum3", "sum4") + (("xtx",) if p.xtx is not None else ()):
        if not np.all(np.isfinite(getattr(p, f))):
            raise QuellmError(f"{where}: {f} has non-finite values")


def _analyze(p: PointStats, top: int, rotate: bool) -> _Point:
    _check_point(p)
    absmax = np.asarray(p.absmax, np.float64)
    rms = np.sqrt(np.maximum(np.asarray(p.sum2, np.float64) / p.count, 0.0))
    with np.errstate(all="ignore"):
        kurt = np.asarray(p.kurtosis, np.float64)
    order = np.argsort(-absmax, kind="stable")[:top]
    finite = np.isfinite(kurt)
    rot_rms, how = (None, "off")
    if rotate:
        m2, how = rotated_second_moment(p)
        rot_rms = None if m2 is None else np.sqrt(m2)
    s = PointSummary(
        p.kind, p.layer, p.channels, p.count, [int(c) for c in order], [float(absmax[c]) for c in order],
        _ratio(absmax), _ratio(rms), None if rot_rms is None else _ratio(rot_rms), how,
        float(kurt[finite].max()) if finite.any() else float("nan"),
        int(np.flatnonzero(finite)[np.argmax(kurt[finite])]) if finite.any() else None)
    return _Point(s, absmax, kurt, rms, rot_rms)


def _persistent(points: list[_Point], top: int) -> list[tuple[int, int, int]]:
    """Channels in the top-k of at least half (and at least 2) of a kind's layers; none when the
    top-k is half the channels or more (then membership says little)."""
    if len(points) < 2 or len({p.summary.channels for p in points}) != 1 or 2 * top > points[0].summary.channels:
        return []
    hits = np.zeros(points[0].summary.channels, np.int64)
    for p in points:
        hits[p.summary.top_channels] += 1
    need = max(2, math.ceil(len(points) / 2))
    chans = sorted(np.flatnonzero(hits >= need), key=lambda c: (-hits[c], c))
    return [(int(c), int(hits[c]), len(points)) for c in chans]


def _load(stats: Stats | str | os.PathLike[str]) -> Stats:
    if isinstance(stats, Stats):
        return stats
    path = os.fspath(stats)
    if not os.path.isfile(path):
        raise QuellmError(f"{path}: no such statistics file (make one with quellm.calibrate(...).save(path))")
    return Stats.load(path)


# ---- output ----------------------------------------------------------------------------------

def _matplotlib():
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise QuellmError("the report's plots need matplotlib: pip install quellm[report] "
                          "(or ask for the text only: --text-only / plots=False)") from None
    return Figure, FigureCanvasAgg


def _figure(mpl, w: float, h: float):
    Figure, Canvas = mpl
    fig = Figure(figsize=(w, h), dpi=80)  # fixed margins: constrained layout doubles the drawing time
    Canvas(fig)  # Agg canvas on this figure only: no pyplot, no global backend change
    fig.subplots_adjust(left=0.05, right=0.97, bottom=0.2, top=0.8, wspace=0.3)
    return fig


def _logy(ax, ratio: bool = False) -> None:
    """Log y axis with plain-number tick labels; ratios (>= 1) start at 1."""
    from matplotlib.ticker import FormatStrFormatter, LogLocator

    ax.set_yscale("log")
    ax.yaxis.set_minor_locator(LogLocator(subs=(2.0, 5.0)))
    ax.yaxis.set_major_formatter(FormatStrFormatter("%g"))
    ax.yaxis.set_minor_formatter(FormatStrFormatter("%g"))
    ax.tick_params(axis="y", which="minor", labelsize=7)
    if ratio:
        ax.set_ylim(bottom=1.0)


def _plot_point(mpl, pt: _Point, path: Path) -> None:
    s = pt.summary
    fig = _figure(mpl, 13, 3.2)
    a1, a2, a3 = fig.subplots(1, 3)
    a1.bar(range(len(s.top_channels)), s.top_absmax, color="tab:red")
    a1.set_xticks(range(len(s.top_channels)), [str(c) for c in s.top_channels], rotation=45)
    a1.axhline(float(np.median(pt.absmax)), color="k", ls="--", lw=1, label="median")
    a1.set(title=f"top {len(s.top_channels)} channels by absmax (ratio {_f(s.absmax_ratio)})",
           xlabel="channel", ylabel="absmax")
    a1.legend(loc="upper right", fontsize=8)
    ch = np.arange(s.channels)
    a2.plot(ch, pt.kurtosis, ".", ms=3, color="tab:blue")
    a2.plot(s.top_channels, pt.kurtosis[s.top_channels], "o", mfc="none", color="tab:red", label="top absmax")
    if np.any(pt.kurtosis[np.isfinite(pt.kurtosis)] > 0):
        _logy(a2)
    a2.axhline(3.0, color="k", ls="--", lw=1, label="Gaussian (3)")
    a2.set(title=f"kurtosis per channel (max {_f(s.kurtosis_max)})", xlabel="channel")
    a2.legend(loc="upper right", fontsize=8)
    a3.plot(ch, pt.rms, lw=1, color="tab:red", label=f"before (ratio {_f(s.rms_ratio)})")
    if pt.rotated_rms is not None:
        a3.plot(ch, pt.rotated_rms, lw=1, color="tab:green",
                label=f"rotated, {s.rotation} (ratio {_f(s.rotated_rms_ratio)})")
    if np.any(pt.rms > 0):
        _logy(a3)
    a3.set(title="RMS per channel" + ("" if pt.rotated_rms is not None else f" (rotation {s.rotation})"),
           xlabel="channel (rotated: output index)")
    a3.legend(loc="upper right", fontsize=8)
    fig.suptitle(f"{s.kind}, layer {s.layer}")
    fig.savefig(path)


def _plot_kind(mpl, kind: str, pts: list[_Point], path: Path) -> None:
    layers = [p.summary.layer for p in pts]
    same = len(pts) > 1 and len({p.summary.channels for p in pts}) == 1
    fig = _figure(mpl, 17 if same else 13, 3.4)
    axes = fig.subplots(1, 4 if same else 3)
    axes[0].plot(layers, [p.summary.absmax_ratio for p in pts], "o-", color="tab:red")
    _logy(axes[0], ratio=True)
    axes[0].set(title="absmax max/median", xlabel="layer")
    axes[1].plot(layers, [p.summary.rms_ratio for p in pts], "o-", color="tab:red", label="before")
    rot = [(p.summary.layer, p.summary.rotated_rms_ratio) for p in pts if p.summary.rotated_rms_ratio is not None]
    if rot:
        axes[1].plot(*zip(*rot), "s-", color="tab:green", label="after Hadamard")
    _logy(axes[1], ratio=True)
    axes[1].set(title="RMS max/median", xlabel="layer")
    axes[1].legend(fontsize=8)
    kmax = [(p.summary.layer, p.summary.kurtosis_max) for p in pts if math.isfinite(p.summary.kurtosis_max)]
    if kmax:
        axes[2].plot(*zip(*kmax), "o-", color="tab:blue")
        _logy(axes[2])
    axes[2].axhline(3.0, color="k", ls="--", lw=1)
    axes[2].set(title="max kurtosis over channels", xlabel="layer")
    ticks = layers if len(layers) <= 16 else layers[:: math.ceil(len(layers) / 16)]
    for a in axes[:3]:
        a.set_xticks(ticks)
    if same:
        rel = np.stack([p.absmax / max(float(np.median(p.absmax)), 1e-30) for p in pts])
        im = axes[3].imshow(np.log10(np.maximum(rel, 1.0)), aspect="auto", interpolation="nearest",  # <= median: 0
                            cmap="magma", extent=(-0.5, rel.shape[1] - 0.5, layers[-1] + 0.5, layers[0] - 0.5))
        fig.colorbar(im, ax=axes[3], label="log10(absmax / median), >= 0")
        axes[3].set_yticks(ticks)
        axes[3].set(title="channel absmax / layer median", xlabel="channel", ylabel="layer")
    fig.suptitle(f"{kind}: across layers")
    fig.savefig(path)


def _table(rows: list[list[str]], head: list[str]) -> str:
    h = "".join(f"<th>{html.escape(c)}</th>" for c in head)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{h}</tr>{body}</table>"


def _html(summary: ReportSummary, imgs: dict[tuple[str, int | None], str]) -> str:
    e = html.escape
    t = summary.text().split("\n")
    parts = ["<!DOCTYPE html><html><head><meta charset='utf-8'><title>quellm outlier report</title><style>",
             "body{font-family:sans-serif;margin:2em;max-width:1400px}table{border-collapse:collapse;margin:.5em 0}"
             "td,th{border:1px solid #ccc;padding:2px 8px;font-size:13px;text-align:right}img{max-width:100%}"
             "pre{background:#f4f4f4;padding:1em;overflow-x:auto}</style></head><body>",
             "<h1>quellm outlier report</h1>", f"<p>{e(t[0])}</p>",
             "<p>ratio = max/median over channels. After rotation only the per-channel RMS (√E[y²]) can be derived "
             "from the statistics (no rotated absmax or kurtosis), so before/after compares RMS ratios. Rotation "
             "y = x·Rᵀ, R = H<sub>n</sub>/√n (quellm.fwht).</p><ul>"]
    parts += [f"<li>{e(_NOTES[r])}</li>" for r in sorted({p.rotation for p in summary.points}, key=list(_NOTES).index)]
    parts.append("</ul>")
    for kind in summary.kinds():
        pts = [p for p in summary.points if p.kind == kind]
        parts.append(f"<h2>{e(kind)}</h2>")
        if (kind, None) in imgs:
            parts.append(f"<img src='{e(imgs[(kind, None)])}' alt='{e(kind)} across layers'>")
        pers = summary.persistent.get(kind, [])
        if pers:
            parts.append(f"<p>Persistent outlier channels (top-{summary.top} in ≥ half the layers): "
                         + e(", ".join(f"{c} ({n}/{m} layers)" for c, n, m in pers)) + "</p>")
        rows = [[str(p.layer), str(p.channels), _f(p.absmax_ratio),
                 " ".join(f"{c}:{_f(a)}" for c, a in zip(p.top_channels, p.top_absmax)), _f(p.rms_ratio),
                 "n/a" if p.rotated_rms_ratio is None else _f(p.rotated_rms_ratio), p.rotation,
                 _f(p.kurtosis_max) + ("" if p.kurtosis_argmax is None else f" (ch {p.kurtosis_argmax})")] for p in pts]
        parts.append(_table(rows, ["layer", "channels", "absmax ratio", "top channels (channel:absmax)",
                                   "rms ratio", "rotated rms ratio", "rotation", "kurtosis max"]))
        per = [p for p in pts if (kind, p.layer) in imgs]
        if per:
            parts.append(f"<details><summary>per-layer plots ({len(per)})</summary>")
            parts += [f"<img src='{e(imgs[(kind, p.layer)])}' alt='{e(kind)} layer {p.layer}'>" for p in per]
            parts.append("</details>")
    parts.append(f"<h2>Text summary</h2><pre>{e(chr(10).join(t))}</pre></body></html>")
    return "\n".join(parts)


def _write_atomic(out: Path, force: bool, fill) -> None:
    """Build the report in a temporary sibling directory, then rename it onto ``out``."""
    if out.exists() and not out.is_dir():
        raise QuellmError(f"{out}: exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise QuellmError(f"{out}: directory exists and is not empty (use --force / force=True to replace it)")
    out.parent.mkdir(parents=True, exist_ok=True)
    tag = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp, old = out.parent / f".{out.name}.tmp-{tag}", None
    tmp.mkdir()  # not mkdtemp: the report keeps the umask's permissions
    try:
        fill(tmp)
        if out.is_dir() and any(out.iterdir()):
            old = out.parent / f".{out.name}.old-{tag}"
            os.replace(out, old)  # move the old report aside, then swap in the new one
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None and not out.exists() and old.exists():
            os.replace(old, out)
            old = None
        raise
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


def report(stats: Stats | str | os.PathLike[str], out_dir: str | os.PathLike[str] | None = None, *, top: int = 8,
           rotate: bool = True, plots: bool = True, force: bool = False) -> ReportSummary:
    """Analyze calibration statistics for outlier channels; optionally write an HTML report.

    Args:
        stats: a :class:`quellm.Stats` or the path of a saved one (``.npz``).
        out_dir: directory to write ``index.html`` (+ ``img/*.png`` when ``plots``) into, built
            in a temporary sibling and renamed; ``None`` writes nothing (use ``.text()``).
        top: channels listed per point (by absmax), also the k of "persistent in the top-k".
        rotate: estimate per-channel RMS after a Hadamard rotation (module docstring).
        plots: draw PNGs with matplotlib (the ``report`` extra); ``False``: tables only.
        force: replace a non-empty ``out_dir``.

    Returns:
        :class:`ReportSummary` (``.text()`` is the plain-text summary).

    Raises:
        QuellmError: a missing or corrupt stats file, malformed statistics, ``top < 1``, a
            non-empty ``out_dir`` without ``force``, or plots without matplotlib installed.
    """
    if not isinstance(top, int) or top < 1:
        raise QuellmError(f"top must be an integer >= 1, got {top!r}")
    mpl = _matplotlib() if plots and out_dir is not None else None
    st = _load(stats)
    if len(st) == 0:
        raise QuellmError("the statistics hold no quantization points")
    by_kind: dict[str, list[_Point]] = {}
    for kind in _ordered_kinds({k for k, _ in st.points}):
        layers = sorted(layer for k, layer in st.points if k == kind)
        by_kind[kind] = [_analyze(st[kind, layer], top, rotate) for layer in layers]
    summary = ReportSummary([p.summary for pts in by_kind.values() for p in pts],
                            {k: _persistent(v, top) for k, v in by_kind.items()}, top, dict(st.model_info), dict(st.meta))
    if out_dir is None:
        return summary
    out = Path(out_dir)

    def fill(tmp: Path) -> None:
        imgs: dict[tuple[str, int | None], str] = {}
        if mpl is not None:
            (tmp / "img").mkdir()
            for kind, pts in by_kind.items():
                imgs[(kind, None)] = f"img/{kind}.png"
                _plot_kind(mpl, kind, pts, tmp / imgs[(kind, None)])
                for p in pts:
                    imgs[(kind, p.summary.layer)] = f"img/{kind}_layer{p.summary.layer:03d}.png"
                    _plot_point(mpl, p, tmp / imgs[(kind, p.summary.layer)])
        summary.out_dir = out
        summary.files = [out / "index.html"] + [out / v for v in imgs.values()]
        (tmp / "index.html").write_text(_html(summary, imgs), encoding="utf-8")

    try:
        _write_atomic(out, force, fill)
    except BaseException:
        summary.out_dir, summary.files = None, []
        raise
    return summary
