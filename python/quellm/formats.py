"""Numpy twins of every quellm number format: the bit-exact specification of each encoding.

The C++ scalar references (``*_ref``), the AVX2/AVX-512 fast paths and the CUDA kernels are
checked byte for byte against this module, so every rule below is written to be re-implemented
in C with integer and IEEE-754 float32 arithmetic (compile with ``-ffp-contract=off``: no FMA).
Section numbers (§) refer to ``SPEC.md``.

Registry (``names()``; ``get(name, **params)`` returns a :class:`Format`)::

    name          family  element            scale per             params (defaults)
    int4, int8    int     two's compl./uint  f32 row|group|tensor  sym=True, granularity="row",
                                                                   group=None, clip=1.0, narrow=False
    ovp4          ovp     OliVe int4+abfloat f32 row|tensor        granularity="row",
    ovp4_flint    ovp     flint4+abfloat                           both_outliers="keep_first"
    ovp8          ovp     int8+abfloat8
    mxfp8_e4m3 mxfp8_e5m2 mxfp6_e3m2 mxfp6_e2m3 mxfp4 mxint8
                  mx      OCP MX element     E8M0 per 32           rounding="rne"
    nvfp4         nvfp4   E2M1               E4M3 per 16 + f32     rounding="rne"
    bfp           bfp     sign-magnitude     E8M0-style exponent   mantissa_bits=4, block=32,
                                             per block             rounding="rne"

``get("int4", group=128)`` is per-group int4 (granularity "group" is implied by ``group``);
``granularity`` takes ``"tensor"``, ``"row"`` (aliases ``"channel"``, ``"token"``) or ``"group"``.
4-bit OliVe type selection (int4 vs flint4 by MSE, §1.4 step 2) is :func:`ovp4_select`.

Canonical layout. ``encode(x, axis)`` moves ``axis`` (the GEMM reduction axis K) last and views
``x`` as a matrix ``(rows, K)`` in C order. Then::

    Packed.codes   (rows, K * element_bits / 8)  uint8, row-major, packed along K
    Packed.scales  (rows, K / block_size)        block formats (one scale per block)
                   (rows, 1)                     per-row formats
                   (1, 1)                        per-tensor formats
    Packed.zeros   same shape as scales          float32, asymmetric int only
    Packed.tensor_scale  (1,) float32            nvfp4 only

The per-block contract (``encode_blocks``/``decode_blocks``) works on ``(n_blocks, block_len)``
float32 arrays where ``block_len`` is the block size, or the row length K for per-row and
per-tensor formats (per-tensor formats compute one scale over all blocks given and return
``scales`` of shape ``(1,)``). ``codes`` is then ``(n_blocks, bytes_per_block)`` and ``scales``
``(n_blocks,)``.

Byte layouts (element ``i`` of a block / row):

* 4-bit codes: two per byte, element ``2j`` in bits 0-3 (low nibble), ``2j+1`` in bits 4-7.
  Example (§3.7): int4 ``[-8, 7, 3, -1]`` -> ``0x78 0xF3``.
* 6-bit codes: four per three bytes, a little-endian bit stream: element ``4j+t`` occupies
  bits ``6t .. 6t+5`` of the 24-bit word ``b0 | b1 << 8 | b2 << 16`` of bytes ``3j .. 3j+2``.
* 8-bit codes: one per byte.
* int4 symmetric: 4-bit two's complement, ``q = clamp(RNE(x/s), -8, 7)`` (§3.6, QuaRot; the
  extra negative code is used), ``narrow=True`` clamps to ``[-7, 7]``. int8 symmetric: the same
  rule, ``[-128, 127]`` (``narrow``: ``[-127, 127]``, the LLM.int8() range). Asymmetric
  (Z-inclusive, §0): unsigned codes ``0 .. 2^b-1`` with f32 zero points.
* OVP: pairs ``(2j, 2j+1)`` along K; 4-bit: one byte per pair, element ``2j`` low nibble;
  8-bit: two bytes. Identifier ``0x8`` / ``0x80`` in the victim's slot (§1.3).
* MX elements: OCP bit patterns ``S|E|M`` (E2M1, E2M3, E3M2, E4M3, E5M2), MXINT8 as 8-bit two's
  complement ``k`` (value ``k/64``). Scales E8M0 (``X = 2^(code-127)``, ``0xFF`` = NaN).
* nvfp4: E2M1 elements, E4M3 block scale bits (``float8_e4m3fn``), one f32 tensor scale.
* bfp: sign-magnitude mantissa, sign in the top bit of the ``m``-bit code, ``+0`` only.

Arithmetic: inputs are converted to float32 first (RNE); then float32 throughout, each
operation rounded once in the order written; divisions are true IEEE divisions (not
multiplication by a reciprocal); powers of two are applied exactly (on the exponent bits).

Lengths along the encoded axis must be a multiple of ``info.align`` (the block size, 2 for
OVP pairs and int4 nibbles); anything else raises :class:`~quellm.errors.QuellmError` (a
``ValueError``) - nothing is padded implicitly. Non-finite input: MX, BFP and nvfp4 mark the
block NaN (scale ``0xFF`` / E4M3 ``0x7F``, zero codes, decodes to NaN); int and OVP raise.

Backends: ``encode``/``decode``/``quantize_dequantize`` take ``backend="auto" | "numpy" |
"cpp"``. ``"auto"`` (default) and ``"cpp"`` run the C++ kernels (``cpp/formats.h``: scalar
``*_ref`` references, AVX2/AVX-512 paths chosen at run time, OpenMP over rows; CUDA through
:func:`quellm.cuda.encode`), bit-identical to this module, which ``"numpy"`` runs. The OVP
scale search (§1.4 step 1) keeps its float64 statistics and error sums in numpy in every
backend; only the quantization of each candidate scale runs in C++. ``encode_blocks`` /
``decode_blocks`` are always numpy.

Saving: :meth:`Packed.to_tensors` gives plain uint8/float32 arrays (format and parameters as a
small uint8 JSON tensor) for ``safetensors.numpy.save_file``; :meth:`Packed.from_tensors`
reads them back.

Example::

    from quellm import formats
    f = formats.get("mxfp4")
    p = f.encode(w)                  # w: (out, in) float32, in % 32 == 0; blocks along `in`
    p.codes.shape, p.scales.shape    # (out, in // 2) uint8, (out, in // 32) uint8
    w_hat = p.decode()               # float32, w.shape
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from . import _core
from .errors import QuellmError

__all__ = [
    "FORMATS",
    "FLOAT_ELEMENTS",
    "Blocks",
    "FloatSpec",
    "Format",
    "FormatInfo",
    "Packed",
    "decode_e8m0",
    "decode_float",
    "encode_e8m0",
    "encode_float",
    "floor_log2_e8m0",
    "get",
    "names",
    "ovp4_select",
    "pack_codes",
    "pack_int4",
    "unpack_codes",
    "unpack_int4",
]

_F32 = np.float32
_ROUNDINGS = ("rne", "rna")


# ---- float32 bit helpers ---------------------------------------------------------------------

def _bit_length(v: np.ndarray) -> np.ndarray:
    """Number of significant bits of non-negative int64 values below 2^53 (C: ``32 - clz``)."""
    return np.frexp(v.astype(np.float64))[1].astype(np.int64)


def _f32_split(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Split finite float32 values into ``(sign, sig, e2, ex)`` (all int64).

    ``|x| = sig * 2^e2`` with ``sig`` the 24-bit significand (implicit bit added for normals,
    ``e2 = max(biased_exp, 1) - 150``), and ``ex = floor(log2|x|)`` (``e2 - 1`` for zero).
    """
    u = np.ascontiguousarray(x, dtype=_F32).view(np.uint32).astype(np.int64)
    sign = (u >> 31) & 1
    be = (u >> 23) & 0xFF
    man = u & 0x7FFFFF
    sig = np.where(be > 0, man | 0x800000, man)
    e2 = np.maximum(be, 1) - 150
    ex = e2 + _bit_length(sig) - 1
    return sign, sig, e2, ex


def _round_shift(sig: np.ndarray, shift: np.ndarray, rounding: str) -> np.ndarray:
    """``round(sig / 2^shift)`` for ``sig >= 0`` (< 2^24) and ``shift >= 1``.

    ``rounding``: ``"rne"`` ties to even, ``"rna"`` ties away from zero (on magnitudes: up).
    Shifts of 25 or more give 0 (the value is below half a unit); callers guarantee ``shift >= 1``.
    """
    shift = np.minimum(shift, 40)
    q = sig >> shift
    rem = sig - (q << shift)
    half = np.left_shift(np.int64(1), shift - 1)
    if rounding == "rne":
        up = (rem > half) | ((rem == half) & ((q & 1) == 1))
    else:
        up = rem >= half
    return q + up.astype(np.int64)


def _pow2_f32(k: np.ndarray) -> np.ndarray:
    """Exact float32 ``2^k`` for integer ``k`` in ``[-149, 127]`` (subnormals built from bits)."""
    k = np.asarray(k, dtype=np.int64)
    bits = np.where(k >= -126, (k + 127) << 23, np.left_shift(1, np.clip(k + 149, 0, 22)))
    return bits.astype(np.uint32).view(_F32)


# ---- element casts ---------------------------------------------------------------------------

@dataclass(frozen=True)
class FloatSpec:
    """A small float element format ``S | E (ebits) | M (mbits)``.

    Value: ``E > 0``: ``(-1)^S 2^(E-bias) (1 + M/2^m)``; ``E = 0``: ``(-1)^S 2^(1-bias) M/2^m``.
    ``max_code`` is the magnitude code (``E|M``) of the largest finite value; ``nan_code`` and
    ``inf_code`` the magnitude codes of NaN and infinity where the format has them.
    """

    name: str
    ebits: int
    mbits: int
    bias: int
    max_code: int
    nan_code: int | None = None
    inf_code: int | None = None

    @property
    def bits(self) -> int:
        return 1 + self.ebits + self.mbits

    @property
    def emax(self) -> int:
        """Exponent of the largest finite value (``emax_elem`` of §2.2)."""
        return (self.max_code >> self.mbits) - self.bias

    @property
    def max_value(self) -> float:
        return float(_float_table(self)[self.max_code])


#: The float element formats of MX (§2.2) and nvfp4, by short name.
FLOAT_ELEMENTS: dict[str, FloatSpec] = {
    "e2m1": FloatSpec("e2m1", 2, 1, 1, 0x07),
    "e2m3": FloatSpec("e2m3", 2, 3, 1, 0x1F),
    "e3m2": FloatSpec("e3m2", 3, 2, 3, 0x1F),
    "e4m3": FloatSpec("e4m3", 4, 3, 7, 0x7E, nan_code=0x7F),
    "e5m2": FloatSpec("e5m2", 5, 2, 15, 0x7B, nan_code=0x7F, inf_code=0x7C),
}

_TABLES: dict[str, np.ndarray] = {}


def _float_table(spec: FloatSpec) -> np.ndarray:
    """Decode table: float32 value of every code ``0 .. 2^bits - 1``."""
    t = _TABLES.get(spec.name)
    if t is None:
        codes = np.arange(1 << spec.bits, dtype=np.int64)
        sign = np.where(codes >> (spec.bits - 1), -1.0, 1.0)
        e = (codes >> spec.mbits) & ((1 << spec.ebits) - 1)
        m = codes & ((1 << spec.mbits) - 1)
        mag = np.where(e > 0, np.ldexp(1.0 + m / (1 << spec.mbits), e - spec.bias),
                       np.ldexp(m / (1 << spec.mbits), 1 - spec.bias))
        t = sign * mag
        mag_code = codes & ((1 << (spec.bits - 1)) - 1)
        if spec.inf_code is not None:
            t = np.where(mag_code == spec.inf_code, sign * np.inf, t)
            t = np.where(mag_code > spec.inf_code, np.nan, t)
        elif spec.nan_code is not None:
            t = np.where(mag_code == spec.nan_code, np.nan, t)
        t = t.astype(_F32)
        t.flags.writeable = False
        _TABLES[spec.name] = t
    return t


def _float_codes(sign, sig, e2, ex, spec: FloatSpec, rounding: str, offset) -> np.ndarray:
    """Element codes of ``|x| / 2^offset`` (``|x| = sig 2^e2``, ``ex = floor(log2|x|)``), saturating.

    The target exponent is ``et = max(ex - offset, 1 - bias)`` and the quantum ``2^(et - m)``;
    ``q = round(|x| / 2^offset / quantum)`` and the magnitude code is ``((et + bias - 1) << m) + q``
    (this one formula covers subnormals, normals and a rounding carry into the next binade),
    clamped to ``max_code``. The sign bit is kept, so negative values that round to 0 give -0.
    """
    et = np.maximum(ex - offset, 1 - spec.bias)
    q = _round_shift(sig, et - spec.mbits - (e2 - offset), rounding)
    mag = np.minimum(((et + spec.bias - 1) << spec.mbits) + q, spec.max_code)
    return ((sign << (spec.bits - 1)) | mag).astype(np.uint8)


def _check_rounding(rounding: str) -> str:
    if rounding not in _ROUNDINGS:
        raise QuellmError(f"rounding must be 'rne' (ties to even) or 'rna' (ties away), got {rounding!r}")
    return rounding


def encode_float(x: Any, elem: str, rounding: str = "rne") -> np.ndarray:
    """Cast float32 values to element codes of ``elem`` (``"e2m1" | "e2m3" | "e3m2" | "e4m3" | "e5m2"``).

    Saturating ("satfinite") cast: finite values beyond the largest finite value and ±Inf give
    ±max; NaN gives the format's NaN code (E4M3 ``0x7F``, E5M2 ``0x7F``) and raises
    :class:`QuellmError` for formats without NaN (E2M1, E2M3, E3M2). Rounding ``"rne"`` (default,
    = ``ml_dtypes`` and ``cvt.rn``) or ``"rna"``. Returns uint8 codes, same shape as ``x``.
    """
    spec = FLOAT_ELEMENTS[elem]
    _check_rounding(rounding)
    with np.errstate(over="ignore", invalid="ignore"):
        x = np.asarray(x, dtype=_F32)
    nan = np.isnan(x)
    if nan.any() and spec.nan_code is None:
        raise QuellmError(f"{elem} has no NaN: cannot encode NaN")
    sign, sig, e2, ex = _f32_split(np.where(nan, _F32(0), x))
    codes = _float_codes(sign, sig, e2, ex, spec, rounding, 0)
    if spec.nan_code is not None:
        codes = np.where(nan, np.uint8(spec.nan_code), codes)
    return codes.reshape(x.shape)


def decode_float(codes: Any, elem: str) -> np.ndarray:
    """Element codes of ``elem`` to float32 values (NaN/Inf codes decode to NaN/Inf)."""
    spec = FLOAT_ELEMENTS[elem]
    return _float_table(spec)[np.asarray(codes, dtype=np.uint8) & ((1 << spec.bits) - 1)]


def floor_log2_e8m0(x: Any) -> np.ndarray:
    """E8M0 code ``floor(log2 x) + 127`` read from the float32 exponent field (MX §2.3 step 3).

    Finite values: the biased exponent field itself (0 for zero and float32 subnormals, i.e.
    ``e = -127``); NaN and ±Inf give ``0xFF``. The sign is ignored (callers pass ``max|x|``).
    """
    with np.errstate(over="ignore"):
        x = np.asarray(x, dtype=_F32)
    be = (np.ascontiguousarray(x).view(np.uint32) >> 23) & 0xFF
    return be.astype(np.uint8).reshape(x.shape)


def encode_e8m0(x: Any) -> np.ndarray:
    """Cast float32 to E8M0 (nearest power of two, ties up = ``ml_dtypes.float8_e8m0fnu``).

    Normal ``x > 0``: ``biased_exp + (mantissa >= 0x400000)``, saturated at 254 (``2^127``;
    ``ml_dtypes`` gives NaN above ``1.5 * 2^127``). Subnormal ``x``: 1 if ``x >= 1.5 * 2^-127``
    else 0 (values below ``2^-127`` clamp to it). ``x <= 0``, NaN and ±Inf: ``0xFF`` (NaN).
    """
    with np.errstate(over="ignore"):
        x = np.asarray(x, dtype=_F32)
    u = np.ascontiguousarray(x).view(np.uint32).astype(np.int64)
    be = (u >> 23) & 0xFF
    man = u & 0x7FFFFF
    code = np.where(be > 0, np.minimum(be + (man >= 0x400000), 254), (man >= 0x600000).astype(np.int64))
    bad = ~np.isfinite(x) | (x <= 0)
    return np.where(bad, 255, code.reshape(x.shape)).astype(np.uint8)


def decode_e8m0(codes: Any) -> np.ndarray:
    """E8M0 codes to float32: ``2^(code - 127)`` (code 0 is ``2^-127``, a float32 subnormal); 0xFF is NaN."""
    c = np.asarray(codes, dtype=np.uint8).astype(np.int64)
    v = _pow2_f32(np.minimum(c, 254) - 127)
    return np.where(c == 255, _F32(np.nan), v).astype(_F32)


# ---- bit packing -----------------------------------------------------------------------------

def _block_exponent(xb: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Shared by MX and BFP: ``(finite, x, e)`` per block row — ``finite`` marks blocks with no
    NaN/Inf, ``x`` is the float32 block with non-finite blocks zeroed, and ``e`` is
    ``floor(log2(max |x|))`` of each block (-127 for an all-zero or all-subnormal block)."""
    xb = np.asarray(xb, dtype=_F32)
    finite = np.isfinite(xb).all(axis=1)
    x = np.where(finite[:, None], xb, _F32(0))
    be = floor_log2_e8m0(np.max(np.abs(x), axis=1)).astype(np.int64)
    return finite, x, np.where(be > 0, be - 127, -127)


def pack_codes(codes: np.ndarray, bits: int) -> np.ndarray:
    """Pack ``(n, L)`` codes of ``bits`` = 4, 6 or 8 along the last axis into uint8 ``(n, L*bits/8)``.

    4 bits: element ``2j`` in the low nibble of byte ``j``. 6 bits: element ``4j+t`` in bits
    ``6t .. 6t+5`` of the little-endian 24-bit word of bytes ``3j .. 3j+2``. 8 bits: unchanged.
    """
    c = np.asarray(codes).astype(np.uint32)
    n, length = c.shape
    if bits in (4, 6) and length % (2 if bits == 4 else 4):
        raise QuellmError(f"{bits}-bit packing needs a multiple of {2 if bits == 4 else 4} codes per row, got {length}")
    if bits == 8:
        return c.astype(np.uint8)
    if bits == 4:
        return (c[:, 0::2] | (c[:, 1::2] << 4)).astype(np.uint8)
    if bits == 6:
        g = c.reshape(n, length // 4, 4)
        w = g[..., 0] | (g[..., 1] << 6) | (g[..., 2] << 12) | (g[..., 3] << 18)
        out = np.stack([w & 0xFF, (w >> 8) & 0xFF, w >> 16], axis=-1)
        return out.reshape(n, length // 4 * 3).astype(np.uint8)
    raise QuellmError(f"cannot pack {bits}-bit codes (4, 6 or 8)")


def unpack_codes(packed: np.ndarray, bits: int) -> np.ndarray:
    """Inverse of :func:`pack_codes`: uint8 ``(n, B)`` to codes ``(n, B*8/bits)`` (uint8)."""
    p = np.asarray(packed, dtype=np.uint8)
    n, nb = p.shape
    if bits == 8:
        return p.copy()
    if bits == 4:
        out = np.empty((n, nb * 2), dtype=np.uint8)
        out[:, 0::2] = p & 0xF
        out[:, 1::2] = p >> 4
        return out
    if bits == 6:
        g = p.reshape(n, nb // 3, 3).astype(np.uint32)
        w = g[..., 0] | (g[..., 1] << 8) | (g[..., 2] << 16)
        out = np.stack([(w >> (6 * t)) & 0x3F for t in range(4)], axis=-1)
        return out.reshape(n, nb // 3 * 4).astype(np.uint8)
    raise QuellmError(f"cannot unpack {bits}-bit codes (4, 6 or 8)")


def pack_int4(q: Any) -> np.ndarray:
    """Signed int4 values ``-8..7``, shape ``(..., 2k)`` -> uint8 ``(..., k)`` (two's complement nibbles,
    element ``2j`` low). ``pack_int4([-8, 7, 3, -1])`` is ``[0x78, 0xF3]`` (§3.7)."""
    q = np.asarray(q)
    if q.shape[-1] % 2:
        raise QuellmError(f"pack_int4 needs an even last dimension, got {q.shape}")
    if q.size and (q.min() < -8 or q.max() > 7):
        raise QuellmError("pack_int4 values must lie in [-8, 7]")
    flat = (q.reshape(-1, q.shape[-1]).astype(np.int64) & 0xF)
    return pack_codes(flat, 4).reshape(q.shape[:-1] + (q.shape[-1] // 2,))


def unpack_int4(p: Any) -> np.ndarray:
    """Inverse of :func:`pack_int4`: uint8 ``(..., k)`` -> int8 ``(..., 2k)``."""
    p = np.asarray(p, dtype=np.uint8)
    c = unpack_codes(p.reshape(-1, p.shape[-1]), 4).astype(np.int8)
    c = np.where(c >= 8, c - 16, c).astype(np.int8)
    return c.reshape(p.shape[:-1] + (p.shape[-1] * 2,))


# ---- API types -------------------------------------------------------------------------------

@dataclass(frozen=True)
class FormatInfo:
    """One row of the trait table (``FORMATS``); the C++ table asserts it matches.

    ``block_size``/``bytes_per_block`` are None for per-row and per-tensor formats (a row of K
    elements takes ``K * element_bits / 8`` bytes). ``align``: lengths along the encoded axis
    must be a multiple of it. ``scale_dtype``: ``"f32"``, ``"e8m0"`` or ``"e4m3"`` (stored as
    uint8 bits). ``bits_per_element`` includes per-block scales (and zero points); for per-row
    and per-tensor formats it is ``element_bits`` (the row scale's share depends on K).
    """

    name: str
    family: str
    element_bits: int
    block_size: int | None
    bytes_per_block: int | None
    scale_dtype: str
    scale_granularity: str  # "block", "row" or "tensor"
    align: int
    bits_per_element: float
    zero_point: bool = False
    tensor_scale: bool = False


class Blocks(NamedTuple):
    """What ``encode_blocks`` returns and ``decode_blocks(*blocks)`` takes.

    codes: uint8 ``(n_blocks, bytes_per_block)``; scales: ``(n_blocks,)`` (``(1,)`` for
    per-tensor formats), float32 or uint8 bits by format; zeros: float32 like scales
    (asymmetric int only); tensor_scale: float32 ``(1,)`` (nvfp4 only).
    """

    codes: np.ndarray
    scales: np.ndarray
    zeros: np.ndarray | None = None
    tensor_scale: np.ndarray | None = None


@dataclass(eq=False)
class Packed:
    """An encoded tensor in the canonical layout (see the module docstring for shapes).

    ``format``/``params`` name the :class:`Format` (``get(format, **params)``); ``shape`` is the
    original shape and ``axis`` the (non-negative) encoded axis.
    """

    format: str
    params: dict[str, Any]
    codes: np.ndarray
    scales: np.ndarray
    shape: tuple[int, ...]
    axis: int
    zeros: np.ndarray | None = None
    tensor_scale: np.ndarray | None = None

    @property
    def fmt(self) -> "Format":
        return get(self.format, **self.params)

    def decode(self, backend: str = "auto") -> np.ndarray:
        """float32 array of ``shape``: the dequantized tensor (``backend`` as :meth:`Format.decode`)."""
        return self.fmt.decode(self, backend=backend)

    @property
    def nbytes(self) -> int:
        """Bytes of codes, scales, zero points and tensor scale together."""
        return sum(a.nbytes for a in (self.codes, self.scales, self.zeros, self.tensor_scale) if a is not None)

    def to_tensors(self, prefix: str) -> dict[str, np.ndarray]:
        """Tensors to save with safetensors: ``{prefix}.codes``, ``{prefix}.scales``, and where
        they apply ``{prefix}.zeros``, ``{prefix}.tensor_scale``; plus ``{prefix}.format``, a
        uint8 tensor holding UTF-8 JSON ``{"quellm_packed": 1, "format", "params", "shape",
        "axis"}`` (keys sorted), so one file can hold many packed tensors without metadata."""
        k = (lambda s: f"{prefix}.{s}") if prefix else (lambda s: s)
        meta = json.dumps({"quellm_packed": 1, "format": self.format, "params": self.params,
                           "shape": list(self.shape), "axis": self.axis}, sort_keys=True)
        out = {k("format"): np.frombuffer(meta.encode(), dtype=np.uint8).copy(),
               k("codes"): np.ascontiguousarray(self.codes),
               k("scales"): np.ascontiguousarray(self.scales)}
        if self.zeros is not None:
            out[k("zeros")] = np.ascontiguousarray(self.zeros)
        if self.tensor_scale is not None:
            out[k("tensor_scale")] = np.ascontiguousarray(self.tensor_scale)
        return out

    @classmethod
    def from_tensors(cls, tensors: dict[str, np.ndarray], prefix: str) -> "Packed":
        """Inverse of :meth:`to_tensors`; raises :class:`QuellmError` on missing or bad entries."""
        k = (lambda s: f"{prefix}.{s}") if prefix else (lambda s: s)
        try:
            meta = json.loads(np.asarray(tensors[k("format")], dtype=np.uint8).tobytes().decode())
            if meta.get("quellm_packed") != 1:
                raise QuellmError(f"{k('format')}: unknown packed-tensor version {meta.get('quellm_packed')!r}")
            p = cls(format=meta["format"], params=dict(meta["params"]), codes=np.asarray(tensors[k("codes")]),
                    scales=np.asarray(tensors[k("scales")]), shape=tuple(int(s) for s in meta["shape"]),
                    axis=int(meta["axis"]), zeros=tensors.get(k("zeros")),
                    tensor_scale=tensors.get(k("tensor_scale")))
        except KeyError as e:
            raise QuellmError(f"packed tensor {prefix!r}: missing entry {e}") from None
        except QuellmError:
            raise
        except (ValueError, TypeError, AttributeError, OverflowError, RecursionError) as e:
            # bad JSON or UTF-8 (ValueError subclasses), a "shape" or "axis" that is not a number,
            # params that are not a mapping, JSON nested too deeply to parse
            raise QuellmError(f"packed tensor {prefix!r}: malformed {k('format')}: {type(e).__name__}: {e}") from None
        try:
            fmt = p.fmt
        except QuellmError:
            raise
        except (ValueError, TypeError, OverflowError) as e:  # a parameter of the wrong type, e.g. group="x"
            raise QuellmError(f"packed tensor {prefix!r}: bad parameters {p.params!r} for format "
                              f"{p.format!r}: {type(e).__name__}: {e}") from None
        fmt._check_packed(p)
        return p


class Format:
    """A number format: encodes float32 tensors to :class:`Packed` and back.

    Subclasses define ``encode_blocks``/``decode_blocks`` on ``(n_blocks, block_len)`` arrays
    (the C++ contract); ``encode``/``decode`` add the axis handling and layout.
    """

    name: str
    params: dict[str, Any]
    info: FormatInfo
    #: keyword arguments ``encode``/``encode_blocks`` accept (given scales etc.)
    encode_kwargs: tuple[str, ...] = ()

    @property
    def block_size(self) -> int | None:
        return self.info.block_size

    @property
    def bits_per_element(self) -> float:
        return self.info.bits_per_element

    def __repr__(self) -> str:
        ps = ", ".join(f"{k}={v!r}" for k, v in self.params.items())
        return f"Format({self.name!r}{', ' if ps else ''}{ps})"

    # -- tensor level --------------------------------------------------------------------------
    def encode(self, x: Any, axis: int = -1, *, backend: str = "auto", **kw: Any) -> Packed:
        """Encode ``x`` (any real dtype; converted to float32 with RNE first) along ``axis``.

        Keywords (only where ``encode_kwargs`` lists them): ``scale`` (int, OVP) and ``zero``
        (asymmetric int): a scalar or one value per entry of ``Packed.scales`` (row-major), used
        instead of the data-derived ones; ``tensor_scale`` (nvfp4): the float32 tensor scale.
        ``backend``: ``"numpy"`` (this module's twin), ``"cpp"`` (quellm._core: SIMD, threads) or
        ``"auto"`` (C++ whenever it implements the format, which is every format; bit-identical).

        Raises:
            QuellmError: empty or 0-d input, ``x.shape[axis]`` not a multiple of ``info.align``,
                non-finite input for formats without NaN, or an unsupported keyword.
        """
        for key in kw:
            if key not in self.encode_kwargs:
                ok = ", ".join(self.encode_kwargs) or "nothing"
                raise QuellmError(f"{self.name}: encode takes no {key!r} (accepts: {ok})")
        with np.errstate(over="ignore"):
            x = np.asarray(x, dtype=_F32)
        if x.ndim == 0 or x.size == 0:
            raise QuellmError(f"{self.name}: cannot encode an empty or 0-d array (shape {x.shape})")
        ax = axis + x.ndim if axis < 0 else axis
        if not 0 <= ax < x.ndim:
            raise QuellmError(f"{self.name}: axis {axis} out of range for shape {x.shape}")
        k = x.shape[ax]
        self._check_len(k)
        xm = np.moveaxis(x, ax, -1)
        rows = xm.size // k
        blen = self.info.block_size or k
        if _use_cpp(self, backend):
            b = self._encode_cpp(np.ascontiguousarray(xm).reshape(rows, k), **kw)
        else:
            b = self.encode_blocks(np.ascontiguousarray(xm).reshape(-1, blen), **kw)
        per = self.info.scale_granularity
        sshape = (1, 1) if per == "tensor" else (rows, -1)
        return Packed(self.name, dict(self.params), b.codes.reshape(rows, -1), b.scales.reshape(sshape),
                      tuple(x.shape), ax,
                      None if b.zeros is None else b.zeros.reshape(sshape),
                      b.tensor_scale)

    def decode(self, packed: Packed, *, backend: str = "auto") -> np.ndarray:
        """float32 array of ``packed.shape`` (``backend`` as :meth:`encode`)."""
        self._check_packed(packed)
        shape = list(packed.shape)
        k = shape.pop(packed.axis)
        rows = packed.codes.shape[0]
        blen = self.info.block_size or k
        nb = rows * k // blen
        sc = packed.scales.reshape(-1)
        zs = None if packed.zeros is None else packed.zeros.reshape(-1)
        if _use_cpp(self, backend) and rows:
            out = self._decode_cpp(packed.codes, sc, zs, packed.tensor_scale, rows, k)
        else:
            # the stored values may be Inf/NaN (NaN block scales, f32 scales read from a file): their
            # products are the decoded values, not a reason to warn
            with np.errstate(over="ignore", invalid="ignore"):
                out = self.decode_blocks(packed.codes.reshape(nb, -1), sc, zs, packed.tensor_scale)
        return np.ascontiguousarray(np.moveaxis(out.reshape(*shape, k), -1, packed.axis))

    def quantize_dequantize(self, x: Any, axis: int = -1, *, backend: str = "auto", **kw: Any) -> np.ndarray:
        """``decode(encode(x, axis, **kw))``."""
        return self.decode(self.encode(x, axis, backend=backend, **kw), backend=backend)

    # -- C++ backend (quellm._core.format_encode / format_decode, cpp/formats.h) ---------------
    def _cpp_params(self) -> dict[str, Any]:
        """Parameters of the C++ call (``FormatParams``), without the buffers."""
        return {}

    def _planes(self, rows: int, k: int) -> tuple[Blocks, int]:
        """Uninitialised output planes of a ``(rows, K)`` encode, and the number of scales."""
        info = self.info
        ns = 1 if info.scale_granularity == "tensor" else rows * k // (info.block_size or k)
        return Blocks(np.empty((rows, k * info.element_bits // 8), np.uint8),
                      np.empty(ns, np.float32 if info.scale_dtype == "f32" else np.uint8),
                      np.empty(ns, _F32) if info.zero_point else None,
                      np.empty(1, _F32) if info.tensor_scale else None), ns

    def _encode_cpp(self, x2: np.ndarray, ref: bool = False, **kw: Any) -> Blocks:
        """Encode the ``(rows, K)`` float32 matrix with the C++ kernels; ``kw`` as encode."""
        b, ns = self._planes(*x2.shape)
        params = self._cpp_params() | self._cpp_given(x2, ns, b.scales, b.zeros, b.tensor_scale, **kw)
        _call_core(_core.format_encode, self.name, x2, b.codes, b.scales, b.zeros, b.tensor_scale, ref, params)
        return b

    def _cpp_given(self, x2: np.ndarray, ns: int, scales: np.ndarray, zeros: np.ndarray | None,
                   ts: np.ndarray | None, **kw: Any) -> dict[str, Any]:
        """Fill the given (not data-derived) scale planes from ``kw``; returns the flags."""
        return {}

    def _decode_cpp(self, codes, scales, zeros, tensor_scale, rows: int, k: int, ref: bool = False) -> np.ndarray:
        y = np.empty((rows, k), _F32)
        # the planes may be read-only (memory-mapped files): the binding takes writable buffers
        c = lambda a: None if a is None else np.require(a, requirements=["C", "W"]).reshape(-1)  # noqa: E731
        _call_core(_core.format_decode, self.name, y, np.require(codes, requirements=["C", "W"]), c(scales), c(zeros),
                   c(tensor_scale), ref, self._cpp_params())
        return y

    # -- block level ---------------------------------------------------------------------------
    def encode_blocks(self, xb: np.ndarray, **kw: Any) -> Blocks:  # pragma: no cover - abstract
        raise NotImplementedError

    def decode_blocks(self, codes: np.ndarray, scales: np.ndarray, zeros: np.ndarray | None = None,
                      tensor_scale: np.ndarray | None = None) -> np.ndarray:  # pragma: no cover
        raise NotImplementedError

    # -- checks --------------------------------------------------------------------------------
    def _check_len(self, k: int) -> None:
        if k % self.info.align:
            raise QuellmError(f"{self.name}: length {k} along the encoded axis is not a multiple of "
                              f"{self.info.align} (pad the input explicitly)")

    def _check_finite(self, xb: np.ndarray) -> None:
        if not np.isfinite(xb).all():
            raise QuellmError(f"{self.name}: input contains NaN or Inf, which this format cannot encode")

    def _check_packed(self, p: Packed) -> None:
        if p.format != self.name or p.params != self.params:
            raise QuellmError(f"packed tensor is {p.format} {p.params}, not {self.name} {self.params}")
        if not (isinstance(p.codes, np.ndarray) and p.codes.dtype == np.uint8 and p.codes.ndim == 2):
            raise QuellmError(f"{self.name}: codes must be a 2-D uint8 array")
        if not p.shape or not all(isinstance(d, (int, np.integer)) and d > 0 for d in p.shape):
            raise QuellmError(f"{self.name}: shape {p.shape} must be one or more positive sizes (encode "
                              "never makes an empty or 0-d tensor)")
        if not 0 <= p.axis < len(p.shape):
            raise QuellmError(f"{self.name}: axis {p.axis} out of range for shape {p.shape}")
        k = p.shape[p.axis]
        self._check_len(k)
        rows = math.prod(p.shape) // k if k else 0
        if p.codes.shape != (rows, k * self.info.element_bits // 8):
            raise QuellmError(f"{self.name}: codes shape {p.codes.shape} does not fit shape {p.shape}")
        blen = self.info.block_size or k
        want = {"tensor": (1, 1), "row": (rows, 1), "block": (rows, k // blen)}[self.info.scale_granularity]
        if p.scales.shape != want:
            raise QuellmError(f"{self.name}: scales shape {p.scales.shape}, expected {want}")
        if self.info.zero_point and (p.zeros is None or p.zeros.shape != want):
            raise QuellmError(f"{self.name}: zero points missing or not of shape {want}")
        if self.info.tensor_scale and (p.tensor_scale is None or p.tensor_scale.shape != (1,)):
            raise QuellmError(f"{self.name}: tensor_scale missing or not of shape (1,)")
        sdt = np.float32 if self.info.scale_dtype == "f32" else np.uint8
        for arr, what, dt in ((p.scales, "scales", sdt), (p.zeros, "zeros", np.float32),
                              (p.tensor_scale, "tensor_scale", np.float32)):
            if arr is not None and np.asarray(arr).dtype != dt:
                raise QuellmError(f"{self.name}: {what} must be {np.dtype(dt).name}, got {np.asarray(arr).dtype}")


def _given(v: Any, n: int, what: str, fmt: str, positive: bool) -> np.ndarray:
    """A user-given per-block value (scalar or ``n`` values) as float32 ``(n,)``."""
    with np.errstate(over="ignore"):
        a = np.asarray(v, dtype=_F32).reshape(-1)
    if a.size == 1:
        a = np.full(n, a[0], dtype=_F32)
    if a.size != n:
        raise QuellmError(f"{fmt}: {what} has {a.size} values, expected 1 or {n}")
    if not np.isfinite(a).all() or (positive and (a <= 0).any()):
        raise QuellmError(f"{fmt}: {what} must be finite{' and positive' if positive else ''}")
    return a


_BACKENDS = ("auto", "numpy", "cpp")


def _use_cpp(fmt: Format, backend: str) -> bool:
    """Whether ``backend`` selects the C++ kernels for ``fmt`` (every format has them)."""
    if backend not in _BACKENDS:
        raise QuellmError(f"backend must be 'auto', 'numpy' or 'cpp', got {backend!r}")
    return backend != "numpy"


def _call_core(fn: Any, *args: Any) -> None:
    """Run a _core formats call; its ValueErrors become QuellmError without the file:line prefix."""
    try:
        fn(*args)
    except ValueError as e:
        raise QuellmError(re.sub(r"^[\w.]+:\d+: ", "", str(e))) from None


# ---- int4 / int8 (§0, §3.6, §3.7) ------------------------------------------------------------

class IntFormat(Format):
    """Uniform integer quantizer, symmetric or asymmetric (Z-inclusive), 4 or 8 bits.

    Per block (a group, a row, or the whole tensor), float32 arithmetic:

    * symmetric: ``s = (clip * max|x|) / qmax`` (``qmax`` = 7 or 127; ``s = 1`` if that is 0),
      ``q = clamp(RNE(x / s), qmin, qmax)`` with ``qmin = -(qmax+1)`` (``narrow``: ``-qmax``);
      ``x^ = q * s``. Codes: two's complement (int4: nibbles).
    * asymmetric: ``lo = clip * min(min x, 0)``, ``hi = clip * max(max x, 0)`` (``lo = -1, hi = 1``
      if both are 0), ``s = (hi - lo) / (2^b - 1)`` (1 if that underflows to 0),
      ``z = RNE(-lo / s)``, ``q = clamp(RNE(x / s) + z, 0, 2^b - 1)``, ``x^ = (q - z) * s``.
      Codes unsigned; ``z`` stored as float32 (an integer value).

    ``encode(..., scale=, zero=)`` uses given scales (and zero points) instead, e.g. static
    activation scales. NaN/Inf input raises.
    """

    encode_kwargs = ("scale", "zero")

    def __init__(self, name: str, bits: int, sym: bool = True, granularity: str = "row",
                 group: int | None = None, clip: float = 1.0, narrow: bool = False):
        gran = {"channel": "row", "token": "row"}.get(granularity, granularity)
        if group is not None:
            if gran not in ("row", "group"):
                raise QuellmError(f"{name}: group={group} conflicts with granularity={granularity!r}")
            gran = "group"
        if gran not in ("tensor", "row", "group"):
            raise QuellmError(f"{name}: granularity must be tensor, row (channel, token) or group, got {granularity!r}")
        if gran == "group" and (group is None or int(group) <= 0 or (bits == 4 and int(group) % 2)):
            even = " even" if bits == 4 else ""
            raise QuellmError(f"{name}: per-group quantization needs a positive{even} group size")
        if not (0.0 < float(clip) <= 1.0):
            raise QuellmError(f"{name}: clip ratio must lie in (0, 1], got {clip}")
        self.name, self.bits, self.sym = name, bits, bool(sym)
        self.group = None if group is None else int(group)
        self.clip, self.narrow = float(clip), bool(narrow)
        self.params = {"sym": self.sym, "granularity": gran, "group": self.group, "clip": self.clip,
                       "narrow": self.narrow}
        if self.sym:
            self.qmax = (1 << (bits - 1)) - 1
            self.qmin = -self.qmax if self.narrow else -self.qmax - 1
        else:
            self.qmin, self.qmax = 0, (1 << bits) - 1
        overhead = (32.0 if self.sym else 64.0) / self.group if self.group else 0.0
        self.info = FormatInfo(
            name, "int", bits, self.group, None if self.group is None else self.group * bits // 8,
            "f32", {"group": "block"}.get(gran, gran),
            self.group or (2 if bits == 4 else 1), bits + overhead, zero_point=not self.sym)

    def encode_blocks(self, xb: np.ndarray, scale: Any = None, zero: Any = None) -> Blocks:
        xb = np.asarray(xb, dtype=_F32)
        self._check_finite(xb)
        per_tensor = self.info.scale_granularity == "tensor"
        ns = 1 if per_tensor else xb.shape[0]
        red = (lambda a, f: f(a, keepdims=False).reshape(1)) if per_tensor else (lambda a, f: f(a, axis=1))
        clip = _F32(self.clip)
        with np.errstate(over="ignore", under="ignore"):
            if self.sym:
                if zero is not None:
                    raise QuellmError(f"{self.name}: symmetric quantization takes no zero point")
                if scale is None:
                    s = (clip * red(np.abs(xb), np.max)) / _F32(self.qmax)
                    s = np.where(s == 0, _F32(1), s).astype(_F32)
                else:
                    s = _given(scale, ns, "scale", self.name, True)
                q = np.clip(np.rint(xb / s[:, None]), self.qmin, self.qmax).astype(np.int64)
                z = None
            else:
                if scale is None:
                    if zero is not None:
                        raise QuellmError(f"{self.name}: a given zero point needs a given scale")
                    lo = clip * np.minimum(red(xb, np.min), _F32(0))
                    hi = clip * np.maximum(red(xb, np.max), _F32(0))
                    both0 = (lo == 0) & (hi == 0)
                    lo = np.where(both0, _F32(-1), lo)
                    hi = np.where(both0, _F32(1), hi)
                    s = (hi - lo) / _F32(self.qmax)
                    if not np.isfinite(s).all():
                        raise QuellmError(f"{self.name}: value range exceeds float32")
                    s = np.where(s == 0, _F32(1), s).astype(_F32)
                    z = (np.rint(-lo / s) + _F32(0)).astype(_F32)  # +0, not -0 (np.min's zero sign is unordered)
                else:
                    s = _given(scale, ns, "scale", self.name, True)
                    z = _given(0.0 if zero is None else zero, ns, "zero", self.name, False)
                q = np.clip(np.rint(xb / s[:, None]) + z[:, None], self.qmin, self.qmax).astype(np.int64)
        codes = pack_codes(q & ((1 << self.bits) - 1), self.bits)
        return Blocks(codes, s.astype(_F32), z)

    def _cpp_params(self) -> dict[str, Any]:
        g = self.params["granularity"]
        return {"sym": self.sym, "narrow": self.narrow, "granularity": "block" if g == "group" else g,
                "group": self.group, "clip": self.clip}

    def _cpp_given(self, x2, ns, scales, zeros, ts, scale: Any = None, zero: Any = None) -> dict[str, Any]:
        if self.sym and zero is not None:
            raise QuellmError(f"{self.name}: symmetric quantization takes no zero point")
        if scale is None:
            if zero is not None:
                raise QuellmError(f"{self.name}: a given zero point needs a given scale")
            return {}
        scales[:] = _given(scale, ns, "scale", self.name, True)
        if not self.sym:
            zeros[:] = _given(0.0 if zero is None else zero, ns, "zero", self.name, False)
        return {"scales_given": True}

    def decode_blocks(self, codes, scales, zeros=None, tensor_scale=None) -> np.ndarray:
        c = unpack_codes(np.asarray(codes, dtype=np.uint8), self.bits).astype(np.int64)
        s = np.asarray(scales, dtype=_F32).reshape(-1)[:, None]
        if self.sym:
            q = np.where(c >= 1 << (self.bits - 1), c - (1 << self.bits), c).astype(_F32)
        else:
            q = c.astype(_F32) - np.asarray(zeros, dtype=_F32).reshape(-1)[:, None]
        with np.errstate(over="ignore"):
            return (q * s).astype(_F32)


# ---- OliVe OVP (§1) --------------------------------------------------------------------------

class _OvpType:
    """Grids and code tables of one OVP normal type (values in units of the scale ``s``)."""

    def __init__(self, kind: str):
        self.kind = kind
        if kind == "int4":
            normal = [(v, v & 0xF) for v in range(-7, 8)]
            bits, bias, ob_m = 4, 3, 1
        elif kind == "flint4":
            mags = [0, 1, 2, 3, 4, 6, 8, 16]
            normal = [(0, 0)] + [(sg * m, (8 if sg < 0 else 0) | i) for i, m in enumerate(mags) if m for sg in (1, -1)]
            bits, bias, ob_m = 4, 4, 1
        elif kind == "int8":
            normal = [(v, v & 0xFF) for v in range(-127, 128)]
            bits, bias, ob_m = 8, 7, 5
        else:  # pragma: no cover
            raise ValueError(kind)
        # abfloat: S | E (2 bits) | M (ob_m bits), value (1 + M/2^m) 2^(E+bias); E=M=0 reserved.
        outl = []
        for e in range(4):
            for m in range(1 << ob_m):
                if e == 0 and m == 0:
                    continue
                v = (1 + m / (1 << ob_m)) * 2.0 ** (e + bias)
                c = (e << ob_m) | m
                outl += [(v, c), (-v, c | (1 << (bits - 1)))]
        self.bits = bits
        self.ident = 1 << (bits - 1)
        self.normal_max = max(v for v, _ in normal)
        pts = sorted([(v, c, False) for v, c in normal] + [(v, c, True) for v, c in outl])
        self.grid = np.array([p[0] for p in pts], dtype=np.float64)
        self.grid_f32 = self.grid.astype(_F32)
        self.grid_codes = np.array([p[1] for p in pts], dtype=np.int64)
        is_out = np.array([p[2] for p in pts])
        self.mids = ((self.grid[:-1] + self.grid[1:]) / 2).astype(_F32)
        # Tie at a midpoint: the reference keeps the last minimum of [normals asc, outliers asc],
        # i.e. the upper point unless the lower is an outlier and the upper a normal (at -9.5).
        self.tie_up = ~(is_out[:-1] & ~is_out[1:])
        n = 1 << bits
        self.normal_table = np.zeros(n, dtype=_F32)
        self.outlier_table = np.zeros(n, dtype=_F32)  # reserved codes decode to 0
        for v, c in normal:
            self.normal_table[c] = v
        for v, c in outl:
            self.outlier_table[c] = v

        # Every midpoint is a multiple of 1/2, so the snap depends only on the half-unit cell
        # t = floor(2v) and on whether v lies exactly on the cell's lower edge t/2: tabulate it.
        assert np.array_equal(self.mids * 2, np.floor(self.mids * 2))
        self._lim = int(2 * self.grid[-1]) + 2
        cells = np.arange(-self._lim, self._lim + 1, dtype=np.float64)
        self._snap_inside = self.snap_reference(((2 * cells + 1) / 4).astype(_F32))
        self._snap_edge = self.snap_reference((cells / 2).astype(_F32))

    def snap_reference(self, v: np.ndarray) -> np.ndarray:
        """Index into ``grid`` of the nearest point to float32 ``v`` (§1.4 step 3 tie rule): the
        number of midpoints below ``v``, plus one if ``v`` equals a midpoint whose tie goes up."""
        idx = np.searchsorted(self.mids, v, side="left")
        at = np.minimum(idx, self.mids.size - 1)
        tie = (idx < self.mids.size) & (self.mids[at] == v)
        return idx + (tie & self.tie_up[at])

    def snap(self, v: np.ndarray) -> np.ndarray:
        """Same result as :meth:`snap_reference`, by table lookup on ``floor(2v)`` (faster)."""
        with np.errstate(over="ignore", invalid="ignore"):
            t2 = np.floor(v * _F32(2))
            edge = t2 * _F32(0.5) == v
            ti = (np.clip(t2, -self._lim, self._lim) + self._lim).astype(np.int64)
        return np.where(edge, self._snap_edge[ti], self._snap_inside[ti])

    def quantize(self, v: np.ndarray, keep_larger: bool, codes: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
        """Grid values (after the pair rule) and codes (if asked) of ``v = x/s``, shape ``(n, K)``, K even."""
        idx = self.snap(v)
        q = self.grid_f32[idx]
        out = np.abs(q) > self.normal_max
        o_lo, o_hi = out[:, 0::2], out[:, 1::2]
        if keep_larger:
            keep_lo = o_lo & (~o_hi | (np.abs(v[:, 0::2]) >= np.abs(v[:, 1::2])))
        else:
            keep_lo = o_lo
        victim = np.zeros_like(out)
        victim[:, 1::2] = keep_lo
        victim[:, 0::2] = o_hi & ~keep_lo
        q = np.where(victim, _F32(0), q)
        code = np.where(victim, self.ident, self.grid_codes[idx]) if codes else None
        return q, code


_OVP_TYPES: dict[str, _OvpType] = {}


def _ovp_type(kind: str) -> _OvpType:
    if kind not in _OVP_TYPES:
        _OVP_TYPES[kind] = _OvpType(kind)
    return _OVP_TYPES[kind]


#: OliVe §1.4 step 1: alpha_k = x_max * k / 100 for these k (88 candidates).
OVP_SEARCH_K = tuple(range(75, 250, 2))


class OvpFormat(Format):
    """OliVe outlier-victim pair quantization (§1): 4-bit (int4 or flint4 normal type) or 8-bit.

    Encode with scale ``s`` (float32, per row or per tensor): ``v = x / s`` (float32 division);
    snap ``v`` to the nearest point of ``normal grid ∪ abfloat grid`` comparing against the exact
    midpoints, a tie goes to the upper point except between an abfloat value and the normal
    value above it (``-9.5 -> -12``); values beyond the largest abfloat saturate. Pair rule on
    ``(2j, 2j+1)``: an element whose snapped value exceeds ``normal_max`` is an outlier; with
    ``both_outliers="keep_first"`` (reference) the first outlier of a pair is kept and its
    partner becomes the victim; ``"keep_larger"`` keeps the one with larger ``|v|`` (ties: first).
    The victim's slot holds the identifier (``0x8``/``0x80``), its value is 0. Decode per §1.3,
    ``x^ = value * s`` (float32); ``1000 1000`` and reserved abfloat codes decode to 0.

    Codes: int4 normal = 4-bit two's complement (-7..7); flint4 normal = sign | 3-bit index into
    ``{0,1,2,3,4,6,8,16}`` (0 is ``0000``); abfloat4 = ``S|E1E0|M0``, value
    ``(1+M/2) 2^(E+bias)``, bias 3 (int4) or 4 (flint4); int8 normal = two's complement byte
    (-127..127); abfloat8 = ``S|E(2)|M(5)``, ``(1+M/32) 2^(E+7)``.

    Without a given scale, the §1.4 step 1 search runs per row / per tensor: ``x_max =
    max(|mu+3 sigma|, |mu-3 sigma|)`` (float64 mean and unbiased std), candidates ``s_k =
    float32(x_max * k / 100 / normal_max)`` for ``k`` in ``OVP_SEARCH_K``; the first candidate
    with the smallest mean squared error (float64) wins; ``s = 1`` when ``s_k`` is 0 (all-zero
    row). The search is calibration: its float64 statistics are not part of the bit-exact
    contract (a C++ port may differ on near-ties); ``encode`` given a scale is.

    The search runs the full quantizer for all 88 candidates, in C++ (``backend="cpp"``, OpenMP
    over rows) or numpy; pass ``scale=`` to skip it.

    Lengths must be even (pairs); odd lengths raise - pad with one zero (§1.5) explicitly.
    NaN/Inf input raises. Unsigned (non-negative) activation grids are not implemented.
    """

    encode_kwargs = ("scale",)

    def __init__(self, name: str, kind: str, granularity: str = "row", both_outliers: str = "keep_first"):
        gran = {"channel": "row", "token": "row"}.get(granularity, granularity)
        if gran not in ("row", "tensor"):
            raise QuellmError(f"{name}: granularity must be 'row' or 'tensor', got {granularity!r}")
        if both_outliers not in ("keep_first", "keep_larger"):
            raise QuellmError(f"{name}: both_outliers must be 'keep_first' or 'keep_larger', got {both_outliers!r}")
        self.name, self.kind, self.t = name, kind, _ovp_type(kind)
        self.keep_larger = both_outliers == "keep_larger"
        self.params = {"granularity": gran, "both_outliers": both_outliers}
        b = self.t.bits
        self.info = FormatInfo(name, "ovp", b, None, None, "f32", gran, 2, float(b))

    def _groups(self, xb: np.ndarray) -> np.ndarray:
        return xb.reshape(1, -1) if self.params["granularity"] == "tensor" else xb

    def _qdq(self, g: np.ndarray, s: np.ndarray, codes: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
        with np.errstate(over="ignore"):
            v = g / s[:, None]
            q, code = self.t.quantize(v, self.keep_larger, codes)
            return (q.astype(_F32) * s[:, None]).astype(_F32), code  # may overflow to inf near f32 max

    def search_scale(self, xb: np.ndarray, backend: str = "auto", ks: Any = OVP_SEARCH_K) -> tuple[np.ndarray, np.ndarray]:
        """§1.4 step 1 on ``(n, K)`` float32 blocks: float32 scales ``(n,)`` (``(1,)`` per tensor) and
        their mean squared errors (float64), over the candidates ``k`` in ``ks``. The C++ search
        (``backend="cpp"``, the default when compiled; OpenMP over rows) sums in 16 interleaved parts
        where numpy sums pairwise, so the two can pick different candidates on near-ties."""
        g = self._groups(np.asarray(xb, dtype=_F32))
        if _use_cpp(self, backend):
            self._check_finite(g)
            s, mse = _core.ovp_search_scales(self.name, np.ascontiguousarray(g), [int(k) for k in ks], self.keep_larger)
            return s, mse
        x64 = g.astype(np.float64)
        mu = x64.mean(axis=1)
        sd = x64.std(axis=1, ddof=1)
        xmax = np.maximum(np.abs(mu + 3 * sd), np.abs(mu - 3 * sd))
        f32max = float(np.finfo(_F32).max)
        cands = np.stack([np.minimum(xmax * k / 100 / self.t.normal_max, f32max) for k in ks]).astype(_F32)
        cands = np.where(cands > 0, cands, _F32(1)).astype(_F32)  # (88, n)
        # Squared errors of every candidate, in chunks of about 2^16 elements for cache locality:
        # whole rows per chunk (per-row sums do not depend on the chunking), or column chunks
        # of the single per-tensor row.
        sse = np.zeros(cands.shape)
        n, k = g.shape
        step = max(1, (1 << 16) // k)
        cstep = k if n > 1 or k <= 1 << 17 else 1 << 16
        for r0 in range(0, n, step):
            for c0 in range(0, k, cstep):
                gc = g[r0:r0 + step, c0:c0 + cstep]
                xc = gc.astype(np.float64)
                for i in range(cands.shape[0]):
                    xh = self._qdq(gc, cands[i, r0:r0 + step], codes=False)[0]
                    sse[i, r0:r0 + step] += np.sum((xh.astype(np.float64) - xc) ** 2, axis=1)
        mse = sse / k
        best = np.argmin(mse, axis=0)  # the first minimum, i.e. the smallest k on a tie
        cols = np.arange(n)
        return cands[best, cols], mse[best, cols]

    def _cpp_params(self) -> dict[str, Any]:
        return {"granularity": self.params["granularity"], "keep_larger": self.keep_larger}

    def _cpp_given(self, x2, ns, scales, zeros, ts, scale: Any = None) -> dict[str, Any]:
        if scale is None:
            self._check_finite(x2)
            scales[:] = self.search_scale(x2, backend="cpp")[0]
        else:
            scales[:] = _given(scale, ns, "scale", self.name, True)
        return {"scales_given": True}

    def encode_blocks(self, xb: np.ndarray, scale: Any = None) -> Blocks:
        xb = np.asarray(xb, dtype=_F32)
        self._check_finite(xb)
        if xb.shape[1] % 2:
            raise QuellmError(f"{self.name}: rows must have an even length (pairs)")
        g = self._groups(xb)
        s = self.search_scale(xb, backend="numpy")[0] if scale is None else _given(scale, g.shape[0], "scale", self.name, True)
        _, code = self._qdq(g, s)
        code = code.reshape(xb.shape)
        if self.t.bits == 4:
            packed = pack_codes(code, 4)
        else:
            packed = code.astype(np.uint8)
        return Blocks(packed, s)

    def decode_blocks(self, codes, scales, zeros=None, tensor_scale=None) -> np.ndarray:
        codes = np.asarray(codes, dtype=np.uint8)
        if self.t.bits == 4:
            lo, hi = codes & 0xF, codes >> 4
        else:
            lo, hi = codes[:, 0::2], codes[:, 1::2]
        ident = self.t.ident
        lo_id, hi_id = lo == ident, hi == ident
        nt, ot = self.t.normal_table, self.t.outlier_table
        v_lo = np.where(lo_id, _F32(0), np.where(hi_id, ot[lo], nt[lo]))
        v_hi = np.where(hi_id, _F32(0), np.where(lo_id, ot[hi], nt[hi]))
        v = np.empty((codes.shape[0], lo.shape[1] * 2), dtype=_F32)
        v[:, 0::2], v[:, 1::2] = v_lo, v_hi
        s = np.asarray(scales, dtype=_F32).reshape(-1)
        if s.size == 1:  # per-tensor
            return (v * s[0]).astype(_F32)
        with np.errstate(over="ignore"):
            return (v * s[:, None]).astype(_F32)


def ovp4_select(x: Any, axis: int = -1, granularity: str = "tensor",
                both_outliers: str = "keep_first") -> tuple[str, dict[str, float]]:
    """OliVe 4-bit type selection (§1.4 step 2): ``("ovp4" | "ovp4_flint", {name: sse})``.

    Runs the scale search with the int4 and the flint4 normal types and returns the one with the
    lower total squared error (int4 on a tie), with both errors. Encode with
    ``get(choice, granularity=..., both_outliers=...)``.
    """
    sse = {}
    for name in ("ovp4", "ovp4_flint"):
        f = get(name, granularity=granularity, both_outliers=both_outliers)
        xh = f.quantize_dequantize(x, axis)
        sse[name] = float(np.sum((xh.astype(np.float64) - np.asarray(x, dtype=_F32).astype(np.float64)) ** 2))
    return ("ovp4" if sse["ovp4"] <= sse["ovp4_flint"] else "ovp4_flint"), sse


# ---- OCP MX (§2.1-2.6) -----------------------------------------------------------------------

class MxFormat(Format):
    """OCP Microscaling: blocks of 32 along the axis, one E8M0 scale each (§2.3).

    Per block: if any element is NaN or ±Inf the scale code is ``0xFF`` and every element code 0
    (decodes to 32 NaN). Otherwise ``e = floor(log2 amax)`` from the float32 exponent field
    (``biased_exp - 127``; -127 for zero/subnormal amax), ``shared = clamp(e - emax_elem, -127,
    127)``, scale code ``shared + 127``. Elements: ``p = x / 2^shared`` rounded to the element
    format (``rounding`` ``"rne"`` or ``"rna"``) with saturation to ±max, computed exactly on
    the float32 bits (no float division). Float elements keep the sign of values that round to
    zero (``-0``); MXINT8 is ``k = clamp(round(64 p), -127, 127)`` as a two's-complement byte
    (``0x80`` = -2.0 is never produced but decodes). Decode: ``x^ = value(P) * 2^(code-127)``
    in float32 (exact for everything the encoder emits).
    """

    def __init__(self, name: str, elem: str, rounding: str = "rne"):
        self.name, self.elem = name, elem
        self.rounding = _check_rounding(rounding)
        self.params = {"rounding": rounding}
        if elem == "int8":
            self.spec, bits, self.emax = None, 8, 0
        else:
            self.spec = FLOAT_ELEMENTS[elem]
            bits, self.emax = self.spec.bits, self.spec.emax
        self.bits = bits
        self.info = FormatInfo(name, "mx", bits, 32, 32 * bits // 8, "e8m0", "block", 32, bits + 8 / 32)

    def encode_blocks(self, xb: np.ndarray) -> Blocks:
        finite, x, e = _block_exponent(xb)
        shared = np.clip(e - self.emax, -127, 127)
        sign, sig, e2, ex = _f32_split(x)
        off = shared[:, None]
        if self.spec is not None:
            codes = _float_codes(sign, sig, e2, ex, self.spec, self.rounding, off)
        else:  # MXINT8: quantum 2^(shared - 6)
            k = np.minimum(_round_shift(sig, (off - 6) - e2, self.rounding), 127)
            codes = np.where(sign == 1, (-k) & 0xFF, k).astype(np.uint8)
        codes = np.where(finite[:, None], codes, np.uint8(0))
        scales = np.where(finite, shared + 127, 255).astype(np.uint8)
        return Blocks(pack_codes(codes, self.bits), scales)

    def _cpp_params(self) -> dict[str, Any]:
        return {"rna": self.rounding == "rna"}

    def element_values(self) -> np.ndarray:
        """float32 value of every element code (the decode table)."""
        if self.spec is None:
            return (np.arange(256, dtype=np.uint8).view(np.int8).astype(_F32) / _F32(64)).astype(_F32)
        return _float_table(self.spec)

    def decode_blocks(self, codes, scales, zeros=None, tensor_scale=None) -> np.ndarray:
        c = unpack_codes(np.asarray(codes, dtype=np.uint8), self.bits)
        v = self.element_values()[c]
        x = decode_e8m0(np.asarray(scales, dtype=np.uint8).reshape(-1))
        with np.errstate(over="ignore", invalid="ignore"):
            return (v * x[:, None]).astype(_F32)


# ---- NVFP4 -----------------------------------------------------------------------------------

class Nvfp4Format(Format):
    """NVFP4: E2M1 elements in blocks of 16, an E4M3 block scale, one float32 tensor scale.

    Tensor scale (float32): ``ts = amax_t / 2688`` (``2688 = 6 * 448``; ``amax_t`` = max |x|
    over the finite elements of the whole tensor; ``ts = 1`` if that is 0), or given with
    ``encode(..., tensor_scale=)``. Per block, in float32: ``r = (amax_b / 6) / ts``,
    ``sb = e4m3(r)`` (RNE, saturating to 448), ``d = value(sb) * ts``; if ``d == 0`` all codes
    are 0, else ``P = e2m1(x / d)`` (``rounding``, saturating to ±6). A block containing NaN/Inf
    gets scale code ``0x7F`` (E4M3 NaN) and zero codes. Decode: ``x^ = (value(P) * value(sb)) *
    ts`` (the inner product is exact), NaN for NaN scales. Scales are stored as uint8 bits
    (view as ``ml_dtypes.float8_e4m3fn``).
    """

    encode_kwargs = ("tensor_scale",)

    def __init__(self, name: str, rounding: str = "rne"):
        self.name = name
        self.rounding = _check_rounding(rounding)
        self.params = {"rounding": rounding}
        self.info = FormatInfo(name, "nvfp4", 4, 16, 8, "e4m3", "block", 16, 4.5, tensor_scale=True)

    def _cpp_params(self) -> dict[str, Any]:
        return {"rna": self.rounding == "rna"}

    def _cpp_given(self, x2, ns, scales, zeros, ts, tensor_scale: Any = None) -> dict[str, Any]:
        if tensor_scale is None:
            return {}
        ts[:] = _given(tensor_scale, 1, "tensor_scale", self.name, True)
        return {"tensor_scale_given": True}

    def encode_blocks(self, xb: np.ndarray, tensor_scale: Any = None) -> Blocks:
        xb = np.asarray(xb, dtype=_F32)
        finite = np.isfinite(xb).all(axis=1)
        x = np.where(finite[:, None], xb, _F32(0))
        amax_b = np.max(np.abs(x), axis=1)
        with np.errstate(over="ignore", under="ignore", divide="ignore", invalid="ignore"):
            if tensor_scale is None:
                ts = _F32(np.max(amax_b)) / _F32(2688)
                ts = _F32(1) if ts == 0 else _F32(ts)
            else:
                ts = _given(tensor_scale, 1, "tensor_scale", self.name, True)[0]
            r = (amax_b / _F32(6)) / ts
            sb = encode_float(r, "e4m3")
            d = decode_float(sb, "e4m3") * ts
            p = np.where(d[:, None] > 0, x / np.where(d > 0, d, _F32(1))[:, None], _F32(0)).astype(_F32)
        codes = encode_float(p, "e2m1", self.rounding)
        codes = np.where((d > 0)[:, None] & finite[:, None], codes, np.uint8(0))
        sb = np.where(finite, sb, np.uint8(0x7F)).astype(np.uint8)
        return Blocks(pack_codes(codes, 4), sb, None, np.array([ts], dtype=_F32))

    def decode_blocks(self, codes, scales, zeros=None, tensor_scale=None) -> np.ndarray:
        v = decode_float(unpack_codes(np.asarray(codes, dtype=np.uint8), 4), "e2m1")
        sb = decode_float(np.asarray(scales, dtype=np.uint8).reshape(-1), "e4m3")
        ts = np.asarray(tensor_scale, dtype=_F32).reshape(-1)[0]
        with np.errstate(over="ignore", invalid="ignore"):
            return ((v * sb[:, None]) * ts).astype(_F32)


# ---- BFP (§2.7) ------------------------------------------------------------------------------

class BfpFormat(Format):
    """Block floating point BFP[m|8]{block} (§2.7): shared 8-bit exponent, m-bit sign-magnitude ints.

    Per block: NaN/Inf anywhere -> exponent code ``0xFF`` and zero codes (decodes to NaN, as MX).
    Else ``E = floor(log2 amax)`` from the float32 exponent field (-127 for zero/subnormal),
    stored as ``E + 127``; quantum ``d = 2^(E + 2 - m)``; ``q = min(round(|x| / d), 2^(m-1) - 1)``
    (``rounding`` RNE or RNA on the exact float32 bits; a rounding carry to ``2^(m-1)`` saturates
    to the largest magnitude - the exponent is never bumped); code ``sign << (m-1) | q``, with
    ``+0`` for zero magnitudes (``-0`` decodes as 0). Decode ``x^ = ±q * d`` (float32, exact).
    ``mantissa_bits`` 4 (BFP12), 6 (BFP14) or 8 (BFP16); ``block * mantissa_bits`` must be a
    multiple of 8 (16 for 6-bit packing: block a multiple of 4). With ``mantissa_bits=8,
    block=32`` the decoded values equal MXINT8's.
    """

    def __init__(self, name: str, mantissa_bits: int = 4, block: int = 32, rounding: str = "rne"):
        m, b = int(mantissa_bits), int(block)
        if m not in (4, 6, 8):
            raise QuellmError(f"{name}: mantissa_bits must be 4, 6 or 8, got {mantissa_bits}")
        if b <= 0 or (b * m) % 8 or (m == 6 and b % 4):
            raise QuellmError(f"{name}: block {block} cannot be packed with {m}-bit codes")
        self.name, self.m, self.block = name, m, b
        self.rounding = _check_rounding(rounding)
        self.params = {"mantissa_bits": m, "block": b, "rounding": rounding}
        self.info = FormatInfo(name, "bfp", m, b, b * m // 8, "e8m0", "block", b, m + 8 / b)

    def encode_blocks(self, xb: np.ndarray) -> Blocks:
        finite, x, e = _block_exponent(xb)
        sign, sig, e2, _ = _f32_split(x)
        q = np.minimum(_round_shift(sig, (e[:, None] + 2 - self.m) - e2, self.rounding), (1 << (self.m - 1)) - 1)
        codes = np.where(q > 0, (sign << (self.m - 1)) | q, 0)
        codes = np.where(finite[:, None], codes, 0).astype(np.uint8)
        return Blocks(pack_codes(codes, self.m), np.where(finite, e + 127, 255).astype(np.uint8))

    def _cpp_params(self) -> dict[str, Any]:
        return {"mantissa_bits": self.m, "block": self.block, "rna": self.rounding == "rna"}

    def decode_blocks(self, codes, scales, zeros=None, tensor_scale=None) -> np.ndarray:
        c = unpack_codes(np.asarray(codes, dtype=np.uint8), self.m).astype(np.int64)
        mag = (c & ((1 << (self.m - 1)) - 1)).astype(_F32)
        v = np.where(c >> (self.m - 1), -mag, mag)
        sc = np.asarray(scales, dtype=np.uint8).reshape(-1).astype(np.int64)
        d = _pow2_f32(np.minimum(sc, 254) - 127 + 2 - self.m)
        out = (v * d[:, None]).astype(_F32)
        return np.where((sc == 255)[:, None], _F32(np.nan), out).astype(_F32)


# ---- registry --------------------------------------------------------------------------------

_INT_DEFAULTS = {"sym": True, "granularity": "row", "group": None, "clip": 1.0, "narrow": False}
_OVP_DEFAULTS = {"granularity": "row", "both_outliers": "keep_first"}
_MX_DEFAULTS = {"rounding": "rne"}

#: name -> (constructor taking the parameters, accepted parameters with their defaults)
_REGISTRY: dict[str, tuple[Any, dict[str, Any]]] = {
    "int4": (lambda **p: IntFormat("int4", 4, **p), _INT_DEFAULTS),
    "int8": (lambda **p: IntFormat("int8", 8, **p), _INT_DEFAULTS),
    "ovp4": (lambda **p: OvpFormat("ovp4", "int4", **p), _OVP_DEFAULTS),
    "ovp4_flint": (lambda **p: OvpFormat("ovp4_flint", "flint4", **p), _OVP_DEFAULTS),
    "ovp8": (lambda **p: OvpFormat("ovp8", "int8", **p), _OVP_DEFAULTS),
    "mxfp8_e4m3": (lambda **p: MxFormat("mxfp8_e4m3", "e4m3", **p), _MX_DEFAULTS),
    "mxfp8_e5m2": (lambda **p: MxFormat("mxfp8_e5m2", "e5m2", **p), _MX_DEFAULTS),
    "mxfp6_e3m2": (lambda **p: MxFormat("mxfp6_e3m2", "e3m2", **p), _MX_DEFAULTS),
    "mxfp6_e2m3": (lambda **p: MxFormat("mxfp6_e2m3", "e2m3", **p), _MX_DEFAULTS),
    "mxfp4": (lambda **p: MxFormat("mxfp4", "e2m1", **p), _MX_DEFAULTS),
    "mxint8": (lambda **p: MxFormat("mxint8", "int8", **p), _MX_DEFAULTS),
    "nvfp4": (lambda **p: Nvfp4Format("nvfp4", **p), _MX_DEFAULTS),
    "bfp": (lambda **p: BfpFormat("bfp", **p), {"mantissa_bits": 4, "block": 32, "rounding": "rne"}),
}


def names() -> list[str]:
    """Registry keys of every format, in a fixed order."""
    return list(_REGISTRY)


def get(name: str, **params: Any) -> Format:
    """The format ``name`` with ``params`` (see the module docstring for each format's parameters).

    Example::

        f = quellm.formats.get("int4", group=128)
        p = f.encode(w)                  # w: (out, in) float32, groups of 128 along `in`
        w_hat = p.decode()

    Raises:
        QuellmError: unknown name, unknown parameter or invalid value.
    """
    try:
        make, defaults = _REGISTRY[name]
    except KeyError:
        raise QuellmError(f"unknown format {name!r}; known: {', '.join(_REGISTRY)}") from None
    bad = set(params) - set(defaults)
    if bad:
        raise QuellmError(f"{name}: unknown parameter(s) {sorted(bad)}; accepted: {sorted(defaults)}")
    return make(**params)


#: Trait table of the default-parameter format of every registry key.
FORMATS: dict[str, FormatInfo] = {n: get(n).info for n in _REGISTRY}
