"""The quantized linear layer: what every linear of a quantized model runs.

``y = x·Wᵀ + b`` as

    x (float32 rows) → [transform: none | Hadamard] → [activation quantizer: none | int8 | int4]
                     → low-bit GEMM for (weight format × activation format) → scales, bias

A :class:`LinearSpec` says how one layer is quantized; :class:`QuantLinear` packs a weight once
(offline) and runs :meth:`QuantLinear.forward` with the C++ kernels (``cpp/quant_linear.cpp``).
:meth:`QuantLinear.simulate` is the numpy fake-quantization of the same spec (quantize,
dequantize, float matmul): the reference the kernels are tested against.

Kernels per (weight, activation) pair — :func:`supported_pairs`:

==========  ===========  ================================================================
weights     activations  kernel
==========  ===========  ================================================================
f32         none         f32 GEMM (also with a Hadamard transform: a float rotation)
int4/int8   none         W4A16 / W8A16: dequantize in registers, f32 FMA
int4/int8   int8/int4    W4A8, W8A8, W4A4, W8A4: exact int32 dot products (VNNI)
mxfp4       mxfp4/int8   2·E2M1 values are integers: the same int32 kernels, scales per 32
ovp4        int8/int4    OliVe pairs decoded in registers to integers (outliers up to ±96)
int4/int8   mxfp4        (weights in groups of 32)
mxfp4       mxfp8        E4M3 values · 2^9 are 18-bit integers: int32 products, scales per 32
int4/int8   mxfp8        (weights in groups of 32)
ovp4/int4/  ovp4         OliVe pairs per token (scale searched per token over OVP_ACT_SEARCH_K),
int8                     decoded to integers (≤ ±96): the int32 kernels
==========  ===========  ================================================================

Weights: symmetric (or asymmetric int4, weight-only) per output channel or per group of
``group`` inputs; activations: dynamic per-token symmetric with a clip ratio.

Example::

    ql = quellm.QuantLinear(W, b, w_format="int4", group=128, a_format="int8")
    y = ql(x)                       # x (..., in) -> (..., out), float32
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from . import _core, formats
from .errors import QuellmError
from .formats import IntFormat, Packed
from .fwht import fwht
from .hadamard import decompose, hadamard_factor

__all__ = ["CLIP_GRID", "LinearSpec", "QuantLinear", "fit_group", "supported_pairs"]

W_FORMATS = ("f32", "int8", "int4", "mxfp4", "ovp4")
A_FORMATS = ("none", "int8", "int4", "mxfp4", "mxfp8", "ovp4")
TRANSFORMS = (None, "hadamard")
#: Clip ratios tried by the weight clip search (``w_clip="search"``).
CLIP_GRID = (1.0, 0.95, 0.9, 0.85, 0.8, 0.75, 0.7, 0.65, 0.6, 0.55, 0.5)


def supported_pairs() -> list[tuple[str, str]]:
    """The (weight format, activation format) pairs with a kernel."""
    return [("f32", "none"), ("int4", "none"), ("int8", "none"), ("int4", "int8"), ("int4", "int4"),
            ("int8", "int8"), ("int8", "int4"), ("mxfp4", "mxfp4"), ("mxfp4", "int8"), ("int4", "mxfp4"),
            ("int8", "mxfp4"), ("ovp4", "int8"), ("ovp4", "int4"), ("mxfp4", "mxfp8"), ("int4", "mxfp8"),
            ("int8", "mxfp8"), ("ovp4", "ovp4"), ("int4", "ovp4"), ("int8", "ovp4")]


@dataclasses.dataclass(frozen=True)
class LinearSpec:
    """How one linear layer is quantized.

    Attributes:
        w_format: ``"f32"`` (kept in float), ``"int8"`` or ``"int4"``.
        group: weight group size along the input dimension; ``None`` = one scale per output
            channel.
        w_sym: symmetric weights (``False``: asymmetric int4 with zero points, weight-only).
        w_clip: weight clip ratio in (0, 1], or ``"search"``: per output channel, the ratio of
            :data:`CLIP_GRID` that minimises the layer's output error on calibration statistics.
        a_format: ``"none"`` (float activations), ``"int8"`` or ``"int4"`` (dynamic per token),
            ``"mxfp4"`` / ``"mxfp8"`` (OCP MX E2M1 / E4M3 blocks of 32) or ``"ovp4"`` (OliVe pairs
            per token); :func:`supported_pairs` lists the weight × activation pairs.
        a_clip: activation clip ratio in (0, 1] (QuaRot uses 0.9 at 4 bits).
        transform: ``None`` or ``"hadamard"`` (rotate the input by H/√n online, the weights offline).
        w_method: ``"rtn"`` (round to nearest) or ``"gptq"`` (GPTQ, needs the input XᵀX).
        damp: GPTQ dampening (fraction of the mean Hessian diagonal).
        act_order: GPTQ processes inputs by decreasing Hessian diagonal (static groups).
    """

    w_format: str = "int8"
    group: int | None = None
    w_sym: bool = True
    w_clip: float | str = 1.0
    a_format: str = "none"
    a_clip: float = 1.0
    transform: str | None = None
    w_method: str = "rtn"
    damp: float = 0.01
    act_order: bool = False

    def __post_init__(self) -> None:
        if self.w_format not in W_FORMATS:
            raise QuellmError(f"weight format must be one of {W_FORMATS}, got {self.w_format!r}")
        if self.a_format not in A_FORMATS:
            raise QuellmError(f"activation format must be one of {A_FORMATS}, got {self.a_format!r}")
        if (self.w_format, self.a_format) not in supported_pairs():
            pairs = ", ".join(f"{w}×{a}" for w, a in supported_pairs())
            raise QuellmError(f"no kernel for weights {self.w_format} × activations {self.a_format}; "
                              f"supported pairs: {pairs}")
        if self.transform not in TRANSFORMS:
            raise QuellmError(f"transform must be None or 'hadamard', got {self.transform!r}")
        if self.group is not None and (not isinstance(self.group, int) or self.group < 1):
            raise QuellmError(f"group must be a positive int or None, got {self.group!r}")
        if self.group is not None and self.a_format != "none" and self.group % 4:
            raise QuellmError(f"integer-activation kernels need a group size that is a multiple of 4, got {self.group}")
        if self.group is not None and self.w_format == "int4" and self.group % 2:
            raise QuellmError(f"int4 weights need an even group size, got {self.group}")
        if self.w_format == "ovp4" and (self.group is not None or not self.w_sym or self.w_clip != 1.0):
            raise QuellmError("ovp4 weights have one searched scale per output channel: no group, asymmetry or clip")
        if self.w_format == "mxfp4" and (self.group not in (None, 32) or not self.w_sym or self.w_clip != 1.0):
            raise QuellmError("mxfp4 weights come in blocks of 32 with a power-of-two scale: no group, "
                              "asymmetry or clip options")
        if self.a_format in ("mxfp4", "mxfp8") and self.w_format in ("int4", "int8") and self.group != 32:
            raise QuellmError(f"{self.a_format} activations need integer weights in groups of 32, got group {self.group}")
        if not self.w_sym and (self.w_format != "int4" or self.a_format != "none"):
            raise QuellmError("asymmetric weights are supported for int4 weight-only layers (a_format 'none')")
        if self.w_clip != "search" and not (isinstance(self.w_clip, (int, float)) and 0 < float(self.w_clip) <= 1):
            raise QuellmError(f"w_clip must lie in (0, 1] or be 'search', got {self.w_clip!r}")
        if not 0 < float(self.a_clip) <= 1:
            raise QuellmError(f"a_clip must lie in (0, 1], got {self.a_clip!r}")
        if self.w_method not in ("rtn", "gptq"):
            raise QuellmError(f"w_method must be 'rtn' or 'gptq', got {self.w_method!r}")
        if self.w_method == "gptq" and (self.w_format not in ("int4", "int8") or self.w_clip not in (1.0, "search")):
            raise QuellmError("gptq needs int4/int8 weights, and w_clip 1.0 or 'search'")
        if not 0 <= float(self.damp) < 1:
            raise QuellmError(f"damp must lie in [0, 1), got {self.damp!r}")

    @property
    def w_bits(self) -> int:
        return {"f32": 32, "int8": 8, "int4": 4, "mxfp4": 4, "ovp4": 4}[self.w_format]

    @property
    def name(self) -> str:
        """Short name, e.g. ``w4a8-g128`` or ``w8a8+had``."""
        if self.w_format == "f32":
            n = "f32"
        elif "ovp4" in (self.w_format, self.a_format):
            w = "ovp4" if self.w_format == "ovp4" else f"{self.w_bits}"
            a = "ovp4" if self.a_format == "ovp4" else self.a_format[3:]
            n = f"w{w}a{a}" + (f"-g{self.group}" if self.group and self.w_format != "ovp4" else "")
        elif self.w_format == "mxfp4" or self.a_format in ("mxfp4", "mxfp8"):
            w = "mxfp4" if self.w_format == "mxfp4" else f"{self.w_bits}"
            a = {"none": "16", "mxfp4": "mxfp4", "mxfp8": "mxfp8"}.get(self.a_format, self.a_format[3:])
            n = f"w{w}a{a}" if w != a else f"{w}"
        else:
            a = "16" if self.a_format == "none" else self.a_format[3:]
            n = f"w{self.w_bits}a{a}" + (f"-g{self.group}" if self.group else "") + ("" if self.w_sym else "-asym")
        return n + ("-gptq" if self.w_method == "gptq" else "") + ("+had" if self.transform else "")

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "LinearSpec":
        try:
            return cls(**d)
        except TypeError as e:
            raise QuellmError(f"bad linear spec {d!r}: {e}") from None

    def weight_format(self, in_features: int) -> Any:
        """The numpy twin that encodes this spec's weights (rows of ``in_features``)."""
        if self.w_format == "f32":
            raise QuellmError("f32 weights have no integer format")
        if self.w_format == "mxfp4":
            if in_features % 32:
                raise QuellmError(f"mxfp4 needs in_features to be a multiple of 32, got {in_features}")
            return formats.get("mxfp4")
        if self.w_format == "ovp4":
            if in_features % 8:
                raise QuellmError(f"ovp4 kernels need in_features to be a multiple of 8, got {in_features}")
            return formats.get("ovp4")
        group = self.group if self.group is not None else in_features
        if in_features % group:
            raise QuellmError(f"group size {group} does not divide in_features = {in_features}")
        return IntFormat(self.w_format, self.w_bits, sym=self.w_sym, group=group)

    def activation_format(self) -> Any:
        if self.a_format == "none":
            return None
        if self.a_format in ("mxfp4", "mxfp8"):
            return formats.get("mxfp4" if self.a_format == "mxfp4" else "mxfp8_e4m3")
        if self.a_format == "ovp4":
            return _OvpActivations()
        bits = int(self.a_format[3:])
        return IntFormat(self.a_format, bits, sym=True, granularity="token", clip=float(self.a_clip), narrow=True)


class _OvpActivations:
    """OVP4 activations as the kernels quantize them (quantize_rows_ovp4): per token, the scale of
    OliVe's search over ``OVP_ACT_SEARCH_K`` (the C++ search — numpy's float64 sums can differ on
    near-ties), then the numpy twin encodes and decodes at that scale."""

    def quantize_dequantize(self, rows: np.ndarray) -> np.ndarray:
        rows = np.ascontiguousarray(rows, dtype=np.float32)
        fmt = formats.get("ovp4")
        s, _ = _core.ovp_search_scales(fmt.name, rows, list(_core.OVP_ACT_SEARCH_K), False)
        return fmt.quantize_dequantize(rows, scale=s, backend="numpy")


def fit_group(group: int | None, in_features: int) -> int | None:
    """``group`` if it divides ``in_features``, else the largest multiple of 8 below it that does
    (SmolLM2's 576 inputs take 96 for a requested 128), else None (per channel)."""
    if group is None or in_features % group == 0:
        return group
    for g in range(group - group % 8, 7, -8):
        if in_features % g == 0:
            return g
    return None


def _hadamard_rows(x: np.ndarray) -> np.ndarray:
    """Rows of ``x`` times H_n/√n (the online transform's arithmetic: the FWHT kernel)."""
    return fwht(np.ascontiguousarray(x, dtype=np.float32))


def _encode_weight(spec: LinearSpec, w: np.ndarray, hessian: np.ndarray | None) -> Any:
    """Packed weights for ``spec``; the clip search (per output row) minimises
    ``(w − ŵ) H (w − ŵ)ᵀ`` with ``H`` the input second-moment matrix (or its diagonal)."""
    fmt = spec.weight_format(w.shape[1])
    if spec.w_format in ("mxfp4", "ovp4"):
        return fmt.encode(w)  # OVP4: the §1.4 scale search per row
    if spec.w_method == "gptq":
        if hessian is None or hessian.ndim != 2:
            raise QuellmError("gptq needs the inputs' XᵀX (calibrate with xtx=True)")
        from .gptq import gptq

        return gptq(w, hessian, fmt, damp=float(spec.damp), act_order=bool(spec.act_order),
                    clip_search=spec.w_clip == "search")
    if spec.w_clip != "search":
        if float(spec.w_clip) == 1.0:
            return fmt.encode(w)
        return IntFormat(fmt.name, fmt.bits, sym=fmt.sym, group=fmt.group, clip=float(spec.w_clip)).encode(w)
    best, best_err = None, None
    for c in CLIP_GRID:
        p = IntFormat(fmt.name, fmt.bits, sym=fmt.sym, group=fmt.group, clip=c).encode(w)
        d = (p.decode() - w).astype(np.float64)
        if hessian is not None and hessian.ndim == 2:
            err = np.einsum("ij,ij->i", d @ hessian, d)
        else:
            err = (d * d) @ (np.ones(w.shape[1]) if hessian is None else hessian)
        if best is None:
            best, best_err = p, err
            continue
        take = err < best_err  # rows where this ratio is strictly better (ties keep the larger clip)
        best.codes[take] = p.codes[take]
        best.scales[take] = p.scales[take]
        if best.zeros is not None:
            best.zeros[take] = p.zeros[take]
        best_err = np.where(take, err, best_err)
    return best


class QuantLinear:
    """A linear layer with quantized weights (and optionally activations), run by C++ kernels.

    Args:
        weight: ``(out, in)`` float array (HF layout); never modified.
        bias: ``(out,)`` or None.
        spec: a :class:`LinearSpec`; or pass its fields as keywords
            (``w_format=``, ``group=``, ``a_format=``, ...).
        hessian: for ``w_clip="search"``: the ``(in, in)`` input second-moment matrix XᵀX or
            its diagonal ``(in,)`` (None: plain weight MSE); for GPTQ: XᵀX, required.

    Raises:
        QuellmError: a format pair without a kernel, a group that does not divide ``in``, a
            Hadamard transform of an unsupported size, non-finite weights.
    """

    def __init__(self, weight: Any, bias: Any = None, spec: LinearSpec | None = None, *,
                 hessian: np.ndarray | None = None, **fields: Any):
        if spec is None:
            spec = LinearSpec(**fields)
        elif fields:
            raise QuellmError("pass either spec or its fields, not both")
        w = np.asarray(weight, dtype=np.float32)
        if w.ndim != 2 or w.size == 0:
            raise QuellmError(f"QuantLinear: weight must be a non-empty (out, in) matrix, got shape {w.shape}")
        if not np.isfinite(w).all():
            raise QuellmError("QuantLinear: weight has non-finite values")
        if spec.transform == "hadamard":
            decompose(w.shape[1])  # raises for unsupported sizes, naming the nearest ones
            w = _hadamard_rows(w)
            if hessian is not None:  # rotate the statistics with the weights: H' = R H Rᵀ
                hessian = (_hadamard_rows(_hadamard_rows(hessian).T).T if hessian.ndim == 2
                           else None)
        if spec.w_format == "f32":
            core = _core.QuantLinear.from_f32(np.ascontiguousarray(w))
            packed = None
        else:
            packed = _encode_weight(spec, w, hessian)
            core = self._core_from_packed(spec, packed.codes, packed.scales, packed.zeros)
        self._init(spec, core, bias)

    @staticmethod
    def _core_from_packed(spec: LinearSpec, codes: np.ndarray, scales: np.ndarray, zeros: np.ndarray | None) -> Any:
        codes = np.ascontiguousarray(codes)
        if spec.w_format == "mxfp4":
            return _core.QuantLinear.from_mx4(codes, np.ascontiguousarray(scales, dtype=np.uint8), spec.a_format)
        if spec.w_format == "ovp4":
            return _core.QuantLinear.from_ovp4(codes, np.ascontiguousarray(scales, dtype=np.float32), spec.a_format,
                                               float(spec.a_clip))
        if spec.w_format == "int8":
            codes = codes.view(np.int8)
        return _core.QuantLinear.from_int(spec.w_bits, codes, np.ascontiguousarray(scales, dtype=np.float32),
                                          None if zeros is None else np.ascontiguousarray(zeros, dtype=np.float32),
                                          spec.a_format, float(spec.a_clip))

    def _init(self, spec: LinearSpec, core: Any, bias: Any) -> None:
        self.spec = spec
        self._core = core
        if bias is not None:
            b = np.ascontiguousarray(bias, dtype=np.float32)
            if b.shape != (core.out_features,):
                raise QuellmError(f"QuantLinear: bias must have shape ({core.out_features},), got {b.shape}")
            core.set_bias(b)
        core.set_activation(spec.a_format, float(spec.a_clip))
        if spec.transform == "hadamard":
            m, _ = decompose(core.in_features)
            core.set_hadamard(m, None if m == 1 else hadamard_factor(m))

    @classmethod
    def from_tensors(cls, spec: LinearSpec, tensors: dict[str, np.ndarray], out_features: int,
                     in_features: int) -> "QuantLinear":
        """Rebuild from :meth:`to_tensors` output (``weight`` or ``qweight``/``scales``[/``zeros``],
        optional ``bias``), checking shapes against ``(out_features, in_features)``."""
        self = cls.__new__(cls)
        # name -> (shape, dtype) of what the spec needs; anything else is an error
        if spec.w_format == "f32":
            want = {"weight": ((out_features, in_features), np.float32)}
        else:
            group = 32 if spec.w_format == "mxfp4" else spec.group or in_features
            if in_features % group:
                raise QuellmError(f"quantized linear: group {group} does not divide in_features {in_features}")
            want = {"qweight": ((out_features, in_features // 2 if spec.w_bits == 4 else in_features),
                                np.uint8 if spec.w_bits == 4 else np.int8),
                    "scales": ((out_features, in_features // group), np.uint8 if spec.w_format == "mxfp4" else np.float32)}
            if not spec.w_sym:
                want["zeros"] = (want["scales"][0], np.float32)
        want["bias"] = ((out_features,), np.float32)
        extra = set(tensors) - set(want)
        if extra:
            raise QuellmError(f"quantized linear: unexpected tensors {sorted(extra)} for a {spec.name} layer")
        for k, (shape, dtype) in want.items():
            if k not in tensors:
                if k == "bias":
                    continue
                raise QuellmError(f"quantized linear: tensor {k!r} is missing")
            a = tensors[k]
            if tuple(a.shape) != shape or a.dtype != dtype:
                raise QuellmError(f"quantized linear: {k!r} is {a.dtype} {tuple(a.shape)}, expected "
                                  f"{np.dtype(dtype).name} {shape}")
        try:
            if spec.w_format == "f32":
                core = _core.QuantLinear.from_f32(np.ascontiguousarray(tensors["weight"]))
            else:
                core = cls._core_from_packed(spec, tensors["qweight"], tensors["scales"], tensors.get("zeros"))
            self._init(spec, core, tensors.get("bias"))
        except ValueError as e:  # what the C++ layer rejects (NaN scales, bad zero points, shapes)
            raise QuellmError(f"quantized linear: {e}") from None
        return self

    def to_tensors(self) -> dict[str, np.ndarray]:
        """Canonical tensors to save: ``weight`` (f32) or ``qweight`` (int4: uint8 (out, in/2),
        element 2i in the low nibble; int8: int8 (out, in); mxfp4: uint8 E2M1 codes (out, in/2)),
        ``scales`` (out, in/group) float32 (mxfp4: uint8 E8M0 codes (out, in/32)),
        ``zeros`` (asymmetric), and ``bias``. Weights are stored rotated when the spec has a
        Hadamard transform."""
        ex = self._core.export()
        out = {"weight": ex[0]} if self.spec.w_format == "f32" else {"qweight": ex[0], "scales": ex[1]}
        if self.spec.w_format == "mxfp4":  # the kernels hold 2^(code-127)/2: back to E8M0 codes
            out["scales"] = (np.frexp(ex[1])[1] + 127).astype(np.uint8)
        if len(ex) == 3 and ex[2] is not None:
            out["zeros"] = ex[2]
        if self._core.bias is not None:
            out["bias"] = self._core.bias
        return out

    # ---- properties ------------------------------------------------------------------------
    @property
    def out_features(self) -> int:
        return int(self._core.out_features)

    @property
    def in_features(self) -> int:
        return int(self._core.in_features)

    @property
    def kernel(self) -> str:
        """The kernel that runs: ``f32``, ``w4a16``, ``w8a8``, ``w4a4``, ..."""
        return str(self._core.kernel)

    @property
    def nbytes(self) -> int:
        """Bytes held for weights, scales, zero points and bias."""
        return int(self._core.nbytes)

    def __repr__(self) -> str:
        return f"QuantLinear({self.out_features}×{self.in_features}, {self.spec.name}, kernel={self.kernel})"

    # ---- compute ---------------------------------------------------------------------------
    def _rows(self, x: Any) -> tuple[np.ndarray, tuple[int, ...]]:
        a = np.asarray(x)
        if a.ndim == 0 or a.shape[-1] != self.in_features:
            raise QuellmError(f"QuantLinear: input must have shape (..., {self.in_features}), got {a.shape}")
        return np.ascontiguousarray(a.reshape(-1, self.in_features), dtype=np.float32), a.shape[:-1]

    def forward(self, x: Any) -> np.ndarray:
        """``(..., in) -> (..., out)`` float32 with the low-bit kernels. Activation quantization
        rejects non-finite inputs (ValueError naming row and column); weight-only and f32 layers
        propagate NaN/Inf like a float matmul."""
        return self._core.forward(x)  # converts to float32 and checks the shape in C++

    __call__ = forward

    def dequantized_weight(self) -> np.ndarray:
        """The float32 weights the kernels multiply by (rotated when the spec has a transform)."""
        t = self.to_tensors()
        if self.spec.w_format == "f32":
            return t["weight"]
        fmt = self.spec.weight_format(self.in_features)
        return Packed(fmt.name, dict(fmt.params), t["qweight"].view(np.uint8), t["scales"],
                      (self.out_features, self.in_features), 1, t.get("zeros")).decode()

    def simulate(self, x: Any) -> np.ndarray:
        """numpy fake quantization of the same spec: transform, quantize-dequantize the
        activations with the numpy twin, float64 matmul with :meth:`dequantized_weight`."""
        rows, lead = self._rows(x)
        if self.spec.transform == "hadamard":
            rows = _hadamard_rows(rows)
        af = self.spec.activation_format()
        if af is not None:
            rows = af.quantize_dequantize(rows)
        y = rows.astype(np.float64) @ self.dequantized_weight().astype(np.float64).T
        if self._core.bias is not None:
            y += self._core.bias
        return y.astype(np.float32).reshape(*lead, self.out_features)

