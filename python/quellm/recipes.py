"""Quantization recipes: what to do to each linear layer, as data, and :func:`quantize`.

A :class:`Recipe` is a small dataclass saved as JSON with the checkpoint: a default
:class:`~quellm.quant.LinearSpec` for every linear, per-layer overrides (``fnmatch`` patterns on
the Hugging Face module names, e.g. ``"model.layers.*.mlp.down_proj"``), the layers kept in
float, and an optional smoothing step (SmoothQuant, shared/SPEC.md §5.1) folded into the float
weights before quantization.

Factories (also by name, ``get("w4a8:group=64,w_clip=0.9")``):

* :func:`rtn` — round-to-nearest with an optional per-channel weight clip search;
* :func:`w8a8`, :func:`w4a16`, :func:`w4a8`, :func:`w4a4` — the usual RTN settings;
* :func:`smoothquant` — W8A8 after migrating activation outliers into the weights;
* :func:`mxfp4` — OCP MXFP4 weights and activations;
* :func:`ovp4` — OliVe outlier-victim-pair 4-bit weights;
* :func:`gptq` — GPTQ weight rounding with the calibration XᵀX;
* :func:`quarot` — QuaRot: fused norms, residual rotation, online Hadamards, rotated 4-bit KV;
* :func:`os_plus` — OS+ channel scaling with a searched threshold (Llama form: scaling only);
* ``hadamard=True`` on any of them rotates every quantized linear's input online (the
  un-fused form of QuaRot's rotation; exact in float).

Example::

    stats = quellm.calibrate(model, text)
    qmodel = quellm.quantize(model, quellm.recipes.smoothquant(alpha=0.5), calibration=stats)
    qmodel.save("smollm2-w8a8")
    quellm.load("smollm2-w8a8")     # runs on the low-bit kernels
"""

from __future__ import annotations

import dataclasses
import fnmatch
import inspect
import json
from collections.abc import Callable
from typing import Any

import numpy as np

from . import layerwise as _layerwise
from . import quarot as _quarot
from .calibrate import calibration_windows
from .errors import QuellmError
from .quant import LinearSpec, QuantLinear, fit_group

__all__ = ["Recipe", "get", "names", "rtn", "w8a8", "w4a16", "w4a8", "w4a4", "mxfp4", "ovp4", "gptq", "quarot", "smoothquant",
           "os_plus",
           "linear_layers", "quantize"]

SMOOTHERS = (None, "smoothquant", "os_plus")


@dataclasses.dataclass
class Recipe:
    """How to quantize a model.

    Attributes:
        name: label stored with the checkpoint.
        linear: spec of every linear layer not kept in float and not overridden.
        overrides: ``fnmatch`` pattern on module names → spec (first match wins).
        keep_float: patterns of linears left in float32 (default: the LM head and Mamba's
            ``dt_proj``, whose input is a strided view).
        smooth: ``None``, ``"smoothquant"`` or ``"os_plus"``.
        alpha: SmoothQuant migration strength.
        os_steps: OS+ threshold candidates tried per group.
        kv_bits: KV cache format: 0 (float32), 8 or 4 (asymmetric per token and head).
        kv_clip: KV quantizer clip ratio (QuaRot: 0.95).
        kv_hadamard: rotate each head by a Hadamard matrix before caching.
        rotate: QuaRot's offline transforms first (fuse the RMSNorm gains, rotate the residual
            stream by a seeded random Hadamard; Llama family) — see :mod:`quellm.quarot`.
        seed: the residual rotation's seed.
    """

    name: str
    linear: LinearSpec
    overrides: dict[str, LinearSpec] = dataclasses.field(default_factory=dict)
    keep_float: tuple[str, ...] = ("lm_head", "*.dt_proj")
    smooth: str | None = None
    alpha: float = 0.5
    os_steps: int = 20
    kv_bits: int = 0
    kv_clip: float = 1.0
    kv_hadamard: bool = False
    rotate: bool = False
    seed: int = 0

    def __post_init__(self) -> None:
        if self.smooth not in SMOOTHERS:
            raise QuellmError(f"recipe {self.name}: smooth must be one of {SMOOTHERS}, got {self.smooth!r}")
        if not 0.0 <= float(self.alpha) <= 1.0:
            raise QuellmError(f"recipe {self.name}: alpha must lie in [0, 1], got {self.alpha}")
        self.keep_float = tuple(self.keep_float)
        if self.kv_bits not in (0, 4, 8) or not 0 < float(self.kv_clip) <= 1:
            raise QuellmError(f"recipe {self.name}: kv_bits must be 0, 4 or 8 and kv_clip in (0, 1]")
        if self.rotate and self.smooth:
            raise QuellmError(f"recipe {self.name}: choose rotation or smoothing, not both")
        if int(self.os_steps) < 1:
            raise QuellmError(f"recipe {self.name}: os_steps must be >= 1, got {self.os_steps}")

    def spec_for(self, name: str) -> LinearSpec | None:
        """The spec of linear ``name`` (None: kept in float)."""
        if any(fnmatch.fnmatchcase(name, p) for p in self.keep_float):
            return None
        for pattern, spec in self.overrides.items():
            if fnmatch.fnmatchcase(name, pattern):
                return spec
        return self.linear

    @property
    def needs_xtx(self) -> bool:
        """Whether :func:`quantize` needs XᵀX in the statistics (GPTQ)."""
        return any(s.w_method == "gptq" for s in [self.linear, *self.overrides.values()])

    @property
    def needs_calibration(self) -> bool:
        specs = [self.linear, *self.overrides.values()]
        return self.smooth is not None or any(s.w_clip == "search" or s.w_method == "gptq" for s in specs)

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "linear": self.linear.to_json(),
                "overrides": {k: v.to_json() for k, v in self.overrides.items()},
                "keep_float": list(self.keep_float), "smooth": self.smooth, "alpha": self.alpha,
                "os_steps": self.os_steps, "kv_bits": self.kv_bits, "kv_clip": self.kv_clip,
                "kv_hadamard": self.kv_hadamard, "rotate": self.rotate, "seed": self.seed}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "Recipe":
        try:
            return cls(d["name"], LinearSpec.from_json(d["linear"]),
                       {k: LinearSpec.from_json(v) for k, v in d.get("overrides", {}).items()},
                       tuple(d.get("keep_float", ())), d.get("smooth"), float(d.get("alpha", 0.5)),
                       int(d.get("os_steps", 20)), int(d.get("kv_bits", 0)), float(d.get("kv_clip", 1.0)),
                       bool(d.get("kv_hadamard", False)), bool(d.get("rotate", False)), int(d.get("seed", 0)))
        except QuellmError:
            raise
        except (KeyError, TypeError, ValueError, OverflowError) as e:  # Overflow: int(Infinity)
            raise QuellmError(f"bad recipe JSON: {type(e).__name__}: {e}") from None


# ---- factories ------------------------------------------------------------------------------

def rtn(w_bits: int = 4, a_bits: int = 16, group: int | None = 128, sym: bool = True,
        w_clip: float | str = "search", a_clip: float = 1.0, hadamard: bool = False, name: str | None = None) -> Recipe:
    """Round-to-nearest: ``w_bits`` ∈ {4, 8} weights in groups of ``group`` (None: per channel,
    fitted down to a divisor of each layer's input size), ``a_bits`` ∈ {4, 8, 16} per-token
    activations (16: float). ``w_clip="search"`` picks each output channel's clip ratio by the
    output error on calibration statistics."""
    if w_bits not in (4, 8) or a_bits not in (4, 8, 16):
        raise QuellmError(f"rtn: w_bits must be 4 or 8 and a_bits 4, 8 or 16, got w{w_bits}a{a_bits}")
    spec = LinearSpec(w_format=f"int{w_bits}", group=group, w_sym=sym, w_clip=w_clip,
                      a_format="none" if a_bits == 16 else f"int{a_bits}", a_clip=a_clip,
                      transform="hadamard" if hadamard else None)
    return Recipe(name or f"rtn-{spec.name}", spec)


def w8a8(hadamard: bool = False, w_clip: float | str = 1.0) -> Recipe:
    """int8 per-channel weights × int8 per-token activations (the SmoothQuant baseline)."""
    return rtn(8, 8, None, w_clip=w_clip, hadamard=hadamard, name="w8a8" + ("-had" if hadamard else ""))


def w4a16(group: int | None = 128, sym: bool = False, w_clip: float | str = "search", hadamard: bool = False) -> Recipe:
    """int4 weight-only (asymmetric by default), float activations."""
    return rtn(4, 16, group, sym, w_clip, hadamard=hadamard, name=f"w4a16-g{group}" + ("-had" if hadamard else ""))


def w4a8(group: int | None = 128, w_clip: float | str = "search", hadamard: bool = False) -> Recipe:
    """int4 symmetric weights × int8 per-token activations."""
    return rtn(4, 8, group, True, w_clip, hadamard=hadamard, name=f"w4a8-g{group}" + ("-had" if hadamard else ""))


def w4a4(group: int | None = 128, w_clip: float | str = "search", a_clip: float = 0.9, hadamard: bool = False) -> Recipe:
    """int4 × int4 per-token (clip 0.9, QuaRot's setting); with ``hadamard=True`` the rotation
    that makes 4-bit activations workable."""
    return rtn(4, 4, group, True, w_clip, a_clip, hadamard, name=f"w4a4-g{group}" + ("-had" if hadamard else ""))


def quarot(w_bits: int = 4, a_bits: int = 4, kv_bits: int = 4, gptq: bool = True, group: int | None = None,
           seed: int = 0, a_clip: float = 0.9, kv_clip: float = 0.95, damp: float = 0.01,
           act_order: bool = False, w_clip: float | str = "search") -> Recipe:
    """QuaRot (§3): fused norms and a seeded random Hadamard on the residual stream (offline),
    online Hadamards before ``o_proj`` and ``down_proj``, Q/K/V rotated per head for a ``kv_bits``
    cache (asymmetric, clip ``kv_clip``), symmetric per-channel (or ``group``) weights by GPTQ
    (``gptq=True``; its Hessians layer by layer with ``quantize(data=...)``, or from
    ``calibrate(..., xtx=True)``) or RTN, each with the weight clip search (``w_clip="search"``,
    QuaRot's ``--w_clip``; or a fixed ratio), per-token activations with clip ``a_clip`` (16: float)."""
    if w_bits not in (4, 8) or a_bits not in (4, 8, 16) or kv_bits not in (0, 4, 8):
        raise QuellmError(f"quarot: w_bits 4|8, a_bits 4|8|16, kv_bits 0|4|8, got w{w_bits}a{a_bits}kv{kv_bits}")
    spec = LinearSpec(w_format=f"int{w_bits}", group=group, w_clip=w_clip,
                      a_format="none" if a_bits == 16 else f"int{a_bits}", a_clip=a_clip if a_bits != 16 else 1.0,
                      w_method="gptq" if gptq else "rtn", damp=damp, act_order=bool(act_order and gptq))
    online = dataclasses.replace(spec, transform="hadamard")
    name = (f"quarot-w{w_bits}a{a_bits}" + (f"kv{kv_bits}" if kv_bits else "") + ("-gptq" if gptq else "")
            + ("" if w_clip == "search" else f"-wclip{w_clip}"))
    return Recipe(name, spec, {"*.o_proj": online, "*.down_proj": online}, kv_bits=kv_bits, kv_clip=kv_clip,
                  kv_hadamard=True, rotate=True, seed=int(seed))


def mxfp4(a_bits: int | str = "mxfp4", hadamard: bool = False) -> Recipe:
    """OCP MXFP4 weights (E2M1 in blocks of 32, E8M0 scales) × MXFP4 activations (or
    ``a_bits="mxfp8"``: MXFP8 E4M3 activations, or ``a_bits=8``: int8 per token), on the integer
    kernels (2·E2M1 values and E4M3 values · 2^9 are integers)."""
    a = "mxfp4" if a_bits in ("mxfp4", 4) else "mxfp8" if a_bits == "mxfp8" else "int8" if a_bits == 8 else None
    if a is None:
        raise QuellmError(f"mxfp4: a_bits must be 'mxfp4' (or 4), 'mxfp8' or 8, got {a_bits!r}")
    spec = LinearSpec(w_format="mxfp4", a_format=a, transform="hadamard" if hadamard else None)
    return Recipe(spec.name, spec)


def ovp4(a_bits: int | str = 8, a_clip: float = 1.0, hadamard: bool = False) -> Recipe:
    """OliVe OVP4 weights (int4 normal type, abfloat outliers, §1; scale searched per output
    channel) × int8/int4 per-token activations, or ``a_bits="ovp4"``: OVP4 activations per token
    (OliVe's W4A4; the scale searched per token over a short k grid at run time)."""
    if a_bits not in (4, 8, "ovp4"):
        raise QuellmError(f"ovp4: a_bits must be 4, 8 or 'ovp4', got {a_bits}")
    a = "ovp4" if a_bits == "ovp4" else f"int{a_bits}"
    spec = LinearSpec(w_format="ovp4", a_format=a, a_clip=a_clip, transform="hadamard" if hadamard else None)
    return Recipe(spec.name, spec)


def gptq(w_bits: int = 4, a_bits: int = 16, group: int | None = 128, sym: bool | None = None, damp: float = 0.01,
         a_clip: float = 1.0, hadamard: bool = False, act_order: bool = False, w_clip: float | str = "search") -> Recipe:
    """GPTQ weights (§8; Hessians XᵀX layer by layer with ``quantize(data=...)``, or from one float
    calibration pass with ``xtx=True``), ``a_bits`` activations. Asymmetric int4 for weight-only,
    else symmetric. ``w_clip="search"`` (default): QuaRot's clip-ratio search for each group's grid
    (SmolLM2-135M W4A16 g128, layer by layer: perplexity 66.4 vs 70.2 with the full range)."""
    sym = (a_bits != 16 or w_bits != 4) if sym is None else sym
    r = rtn(w_bits, a_bits, group, sym, 1.0, a_clip, hadamard)
    spec = dataclasses.replace(r.linear, w_method="gptq", damp=float(damp), act_order=bool(act_order), w_clip=w_clip)
    return Recipe(spec.name + ("-act" if act_order else "") + ("-clip" if w_clip == "search" else ""), spec)


def smoothquant(alpha: float = 0.5, w_bits: int = 8, a_bits: int = 8, group: int | None = None,
                w_clip: float | str = 1.0) -> Recipe:
    """SmoothQuant (§5.1): per input channel ``s = max|X|^α / max|W|^(1−α)`` over each group of
    linears sharing a norm's output (q/k/v, gate/up; Mamba in_proj), folded into the norm gain
    and the weights; then RTN ``w{w_bits}a{a_bits}``."""
    r = rtn(w_bits, a_bits, group, True, w_clip, name=f"smoothquant-a{alpha}-w{w_bits}a{a_bits}")
    return dataclasses.replace(r, smooth="smoothquant", alpha=float(alpha))


def os_plus(w_bits: int = 8, a_bits: int = 8, group: int | None = None, steps: int = 20,
            w_clip: float | str = 1.0) -> Recipe:
    """Outlier Suppression+ scaling (§5.2, the Llama form: no shift). Per smoothing group, for
    thresholds ``t`` from the largest calibrated channel max ``T`` down to ``T / steps``:
    ``s_j = max(1, absmax_j / t)``; keep the ``t`` with the lowest predicted output error

        Σ_j E[x_j²]/s_j² · ‖Δw_j‖²  +  (t / qmax)² / 12 · Σ_j s_j² ‖w_j‖²

    (weight rounding error of ``W·diag(s)`` on the scaled inputs, plus uniform activation
    rounding noise at step ``t/qmax`` through the scaled weights) — a statistics-based proxy for
    the reference's block-output loss on calibration samples, which quellm does not keep."""
    r = rtn(w_bits, a_bits, group, True, w_clip, name=f"os_plus-w{w_bits}a{a_bits}")
    if a_bits == 16:
        raise QuellmError("os_plus: scaling only helps quantized activations (a_bits 4 or 8)")
    return dataclasses.replace(r, smooth="os_plus", os_steps=int(steps))


_FACTORIES: dict[str, Callable[..., Recipe]] = {
    "rtn": rtn, "w8a8": w8a8, "w4a16": w4a16, "w4a8": w4a8, "w4a4": w4a4, "smoothquant": smoothquant,
    "os_plus": os_plus, "gptq": gptq, "mxfp4": mxfp4, "ovp4": ovp4, "quarot": quarot,
}


def names() -> list[str]:
    return sorted(_FACTORIES)


def _value(v: str) -> Any:
    low = v.lower()
    if low in ("none", "null"):
        return None
    if low in ("true", "false"):
        return low == "true"
    for conv in (int, float):
        try:
            return conv(v)
        except ValueError:
            pass
    return v


def get(spec: str) -> Recipe:
    """A recipe from ``NAME[:k=v,...]``, e.g. ``"w4a8"``, ``"smoothquant:alpha=0.8"``,
    ``"rtn:w_bits=4,a_bits=4,hadamard=true"``. Every recipe also takes ``kv_bits``, ``kv_clip``
    and ``kv_hadamard`` (the KV cache format, Llama family)."""
    name, _, args = spec.partition(":")
    if name not in _FACTORIES:
        raise QuellmError(f"unknown recipe {name!r}; available: {', '.join(names())}")
    kw = {}
    for item in filter(None, args.split(",")):
        k, eq, v = item.partition("=")
        if not eq:
            raise QuellmError(f"recipe argument {item!r} must be key=value")
        kw[k.strip()] = _value(v.strip())
    own = inspect.signature(_FACTORIES[name]).parameters  # quarot names its own KV cache arguments
    kv = {k: kw.pop(k) for k in ("kv_bits", "kv_clip", "kv_hadamard") if k in kw and k not in own}
    try:
        r = _FACTORIES[name](**kw)
    except TypeError as e:
        raise QuellmError(f"recipe {name}: {e}") from None
    if kv:
        kvb = int(kv.get("kv_bits", 0))
        suffix = f"-kv{kvb}" if kvb else ""
        r = dataclasses.replace(r, name=r.name + suffix + ("-kvhad" if kv.get("kv_hadamard") else ""), **kv)
    return r


# ---- the model's linears and their calibration points ---------------------------------------

def linear_layers(model: Any) -> list[tuple[str, str, int]]:
    """``(module name, calibration kind, layer index)`` of every linear of ``model``."""
    cfg = model.config
    out: list[tuple[str, str, int]] = []
    n = int(cfg.num_hidden_layers)
    if model.family == "llama":
        for i in range(n):
            p = f"model.layers.{i}."
            out += [(p + f"self_attn.{x}_proj", "attn_in", i) for x in "qkv"]
            out += [(p + "self_attn.o_proj", "o_proj_in", i)]
            out += [(p + "mlp.gate_proj", "mlp_in", i), (p + "mlp.up_proj", "mlp_in", i),
                    (p + "mlp.down_proj", "down_proj_in", i)]
    else:
        for i in range(n):
            p = f"backbone.layers.{i}.mixer."
            out += [(p + "in_proj", "in_proj_in", i), (p + "x_proj", "x_proj_in", i),
                    (p + "dt_proj", "dt_proj_in", i), (p + "out_proj", "out_proj_in", i)]
    out.append(("lm_head", "lm_head_in", n))
    return out


def _smooth_groups(model: Any) -> list[tuple[str, list[str], str, int]]:
    """(norm gain tensor, linears sharing its output, calibration kind, layer)."""
    n = int(model.config.num_hidden_layers)
    if model.family == "llama":
        g = []
        for i in range(n):
            p = f"model.layers.{i}."
            g.append((p + "input_layernorm.weight", [p + f"self_attn.{x}_proj" for x in "qkv"], "attn_in", i))
            g.append((p + "post_attention_layernorm.weight", [p + "mlp.gate_proj", p + "mlp.up_proj"], "mlp_in", i))
        return g
    return [(f"backbone.layers.{i}.norm.weight", [f"backbone.layers.{i}.mixer.in_proj"], "in_proj_in", i)
            for i in range(n)]


def _os_plus_scales(ws: list[np.ndarray], spec: LinearSpec, p: Any, steps: int) -> np.ndarray:
    """OS+ per-channel scales of one group: see :func:`os_plus`."""
    if spec.a_format not in ("int8", "int4"):
        raise QuellmError(f"os_plus: the smoothed layers need int8/int4 activations, got {spec.a_format!r}")
    a = p.absmax.astype(np.float64)
    ex2 = p.sum2.astype(np.float64) / max(p.count, 1)
    top = float(a.max())
    if top == 0.0:  # nothing observed: nothing to scale
        return np.ones_like(a)
    qmax = {"int8": 127, "int4": 7}[spec.a_format]
    best, best_loss = np.ones_like(a), None
    for t in np.linspace(top, top / steps, steps):
        s = np.maximum(1.0, a / t)
        loss = 0.0
        for w in ws:
            ws_ = (w * s).astype(np.float32)
            fmt = spec.weight_format(w.shape[1]) if spec.w_format != "f32" else None
            dw = (fmt.quantize_dequantize(ws_) - ws_).astype(np.float64) if fmt else 0.0 * ws_
            loss += float(((dw * dw).sum(0) * ex2 / (s * s)).sum())
            loss += (t / qmax) ** 2 / 12.0 * float(((ws_.astype(np.float64) ** 2).sum(0)).sum())
        if best_loss is None or loss < best_loss:
            best, best_loss = s, loss
    return best


def _smooth(model: Any, tensors: dict[str, np.ndarray], recipe: Recipe, stats: Any) -> dict[str, np.ndarray]:
    """Per-input-channel scales s per smoothing group (SmoothQuant §5.1 or OS+ §5.2), folded into
    new arrays (the model's are not touched): norm gain γ/s, weights W·diag(s). Returns
    {calibration point "kind/layer": s} so the statistics can be rescaled."""
    scales = {}
    for norm, linears, kind, layer in _smooth_groups(model):
        spec = recipe.spec_for(linears[0])
        if spec is None:
            continue
        if recipe.smooth == "os_plus":
            ws = [tensors[n + ".weight"] for n in linears]
            s = _os_plus_scales(ws, dataclasses.replace(spec, group=fit_group(spec.group, ws[0].shape[1])),
                                stats[kind, layer], recipe.os_steps)
        else:
            a = stats[kind, layer].absmax.astype(np.float64)
            w = np.max([np.abs(tensors[n + ".weight"]).max(axis=0) for n in linears], axis=0).astype(np.float64)
            w = np.maximum(w, 1e-5)
            s = np.maximum(a ** recipe.alpha / w ** (1.0 - recipe.alpha), 1e-5)
        tensors[norm] = (tensors[norm] / s).astype(np.float32)
        for n in linears:
            tensors[n + ".weight"] = (tensors[n + ".weight"] * s).astype(np.float32)
        scales[f"{kind}/{layer}"] = s
    return scales


def _hessian(stats: Any, kind: str, layer: int, s: np.ndarray | None) -> np.ndarray | None:
    """Input second moments of a point (XᵀX when collected, else its diagonal), after smoothing
    by ``s`` (inputs divided by s)."""
    if stats is None:
        return None
    p = stats[kind, layer]
    h = p.xtx if p.xtx is not None else p.sum2
    h = np.asarray(h, np.float64) / max(p.count, 1)
    if s is not None:
        h = h / np.outer(s, s) if h.ndim == 2 else h / (s * s)
    return h


def quantize(model: Any, recipe: Recipe | str, calibration: Any = None, data: Any = None, *, n_samples: int = 32,
             seq_len: int = 512, seed: int = 0, batch: int = 8, progress: bool | None = None) -> Any:
    """A quantized copy of ``model`` (same family and interface), running ``recipe`` on the
    low-bit kernels. The float model and its arrays are left as they were.

    Args:
        model: a float :class:`~quellm.models.CausalLM` (loaded with :func:`quellm.load`).
        recipe: a :class:`Recipe` or a name for :func:`get`.
        calibration: :class:`~quellm.Stats` of this model (required for smoothing and the
            weight clip search; its ``XᵀX`` serve GPTQ unless ``data`` is given).
        data: calibration text or token windows ``(n, seq_len)``: quantize layer by layer
            (:mod:`quellm.layerwise`): each layer's Hessians (GPTQ, clip search) come from the
            outputs of the already-quantized layers before it, and only one layer's ``XᵀX`` is held
            at a time. ``n_samples``/``seq_len``/``seed`` draw windows from a text as
            :func:`~quellm.calibrate` does; ``batch`` windows run per call.

    Returns:
        The quantized model: ``.recipe``, ``.quant_layers`` (name → :class:`QuantLinear`),
        ``.save(dir)``.

    Raises:
        QuellmError: statistics missing or from another model, a spec with no kernel for a
            layer's shape (e.g. a group that does not divide its inputs), non-finite activations.
    """
    if isinstance(recipe, str):
        recipe = get(recipe)
    if getattr(model, "recipe", None) is not None:
        raise QuellmError("quantize: the model is already quantized; start from the float model")
    layerwise = data is not None
    if calibration is None and (recipe.smooth or (recipe.needs_calibration and not layerwise)):
        raise QuellmError(f"recipe {recipe.name} needs calibration statistics (quellm.calibrate(model, text))")
    if calibration is not None:
        calibration.check_model(model)
    tensors = dict(model._tensors)
    gains: dict[str, np.ndarray] = {}
    Q = None
    if recipe.rotate:
        if model.family != "llama":
            raise QuellmError(f"recipe {recipe.name}: the residual rotation is implemented for the Llama family only")
        tensors, gains = _quarot.fuse_norms(tensors, model.config, model.embedding_name)
        tensors, Q = _quarot.rotate_residual(tensors, model.config, model.embedding_name, recipe.seed)
    smooth = _smooth(model, tensors, recipe, calibration) if recipe.smooth else {}

    def make_layer(name: str, kind: str, layer: int, h: np.ndarray | None) -> QuantLinear | None:
        """Quantize one linear; ``h`` is its input XᵀX in the transformed model (layerwise) or
        None (then taken from the statistics of the float model and transformed here)."""
        spec = recipe.spec_for(name)
        if spec is None:
            return None
        w = tensors.get(name + ".weight")
        if w is None:  # tied LM head
            w = tensors[model.embedding_name]
        if spec.w_format not in ("mxfp4", "ovp4") and spec.a_format not in ("mxfp4", "mxfp8"):
            spec = dataclasses.replace(spec, group=fit_group(spec.group, w.shape[1]))
        if not (spec.w_clip == "search" or spec.w_method == "gptq"):
            h = None
        elif not layerwise:
            h = _hessian(calibration, kind, layer, smooth.get(f"{kind}/{layer}"))
            if recipe.rotate:  # the inputs changed: x -> (x / γ)·Q for the linears reading the residual
                reads_residual = kind in ("attn_in", "mlp_in", "lm_head_in")
                h = _quarot.input_transform(h, gains.get(f"{kind}/{layer}"), Q if reads_residual else None)
        try:
            q = QuantLinear(w, tensors.get(name + ".bias"), spec, hessian=h)
        except ValueError as e:  # QuellmError, or what the C++ layer rejects
            raise QuellmError(f"quantize: layer {name}: {e}") from None
        tensors.pop(name + ".bias", None)  # the quantized layer carries it
        return q

    if layerwise:
        if isinstance(data, str):
            toks = model.encode(data)
            if not toks:
                raise QuellmError("quantize: calibration text is empty")
            data = calibration_windows(toks, n_samples, seq_len, seed)
        quant = _layerwise.quantize_layerwise(model, tensors, recipe, linear_layers(model), make_layer, data,
                                              batch=batch, progress=progress)
    else:
        quant = {}
        for name, kind, layer in linear_layers(model):
            q = make_layer(name, kind, layer, None)
            if q is not None:
                quant[name] = q
    return model.with_quantized(tensors, quant, recipe)


def read_quant_json(path: Any) -> tuple[Recipe, dict[str, LinearSpec]]:
    d = json.loads(path.read_text(encoding="utf-8"))
    if d.get("quellm_quant") != 1:
        raise QuellmError(f"{path}: not a quellm quantization file (version {d.get('quellm_quant')!r})")
    return Recipe.from_json(d["recipe"]), {k: LinearSpec.from_json(v) for k, v in d["layers"].items()}
