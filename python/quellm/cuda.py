"""quellm's CUDA kernels on device arrays.

Device arrays are :class:`DeviceArray` (quellm's own, created with :func:`to_device`) or any
object exposing ``__cuda_array_interface__`` (CuPy, Numba, PyTorch, ...) with float32 or
float16 data in C order. Everything here raises :class:`quellm.QuellmError` with the reason
when quellm was built without CUDA or no device is usable.
"""

from __future__ import annotations

import math
from typing import Any

import ml_dtypes
import numpy as np

from . import _core
from ._info import cuda_available
from .errors import QuellmError
from .hadamard import decompose, hadamard_factor

__all__ = ["DeviceArray", "Linear", "available", "decode", "encode", "fwht", "mamba_conv", "mamba_scan", "to_device",
           "to_host"]

_NP = {"float32": np.dtype(np.float32), "float16": np.dtype(np.float16), "bfloat16": np.dtype(ml_dtypes.bfloat16)}
_TYPESTR = {"<f4": "float32", "<f2": "float16"}


def available() -> bool:
    """True when a CUDA device can be used."""
    return cuda_available()[0]


def _require() -> None:
    ok, why = cuda_available()
    if not ok:
        raise QuellmError(f"CUDA is not available: {why}")


if _core.HAS_CUDA:
    DeviceArray = _core.DeviceArray

    def _cai(self: Any) -> dict[str, Any]:
        if self.dtype == "bfloat16":
            raise AttributeError("bfloat16 has no __cuda_array_interface__ type string")
        return {"shape": self.shape, "typestr": "<f4" if self.dtype == "float32" else "<f2",
                "data": (self.ptr, False), "version": 3, "strides": None, "stream": None}

    DeviceArray.__cuda_array_interface__ = property(_cai)
else:  # pragma: no cover - exercised only in CUDA-less builds
    class DeviceArray:  # type: ignore[no-redef]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            raise QuellmError("quellm was built without CUDA")


def to_device(x: Any) -> "DeviceArray":
    """Copy a numpy array (float32, float16 or bfloat16) to a new :class:`DeviceArray`."""
    _require()
    arr = np.ascontiguousarray(x)
    for name, dt in _NP.items():
        if arr.dtype == dt:
            d = DeviceArray(list(arr.shape), name)
            d.copy_from_host(arr.reshape(-1).view(np.uint8))
            return d
    raise QuellmError(f"to_device: dtype must be float32, float16 or bfloat16, got {arr.dtype}")


def to_host(d: "DeviceArray") -> np.ndarray:
    """Copy a :class:`DeviceArray` back to a new numpy array."""
    out = np.empty(d.shape, _NP[d.dtype])
    d.copy_to_host(out.reshape(-1).view(np.uint8))
    return out


def _describe(x: Any, what: str) -> tuple[int, tuple[int, ...], str]:
    if isinstance(x, DeviceArray):
        return x.ptr, tuple(x.shape), x.dtype
    cai = getattr(x, "__cuda_array_interface__", None)
    if cai is None:
        raise QuellmError(f"{what}: expected a quellm DeviceArray or an object with __cuda_array_interface__, got {type(x).__name__}")
    if cai.get("strides") not in (None,):
        shape = tuple(cai["shape"])
        item = 4 if cai["typestr"] == "<f4" else 2
        want = tuple(int(np.prod(shape[i + 1:])) * item for i in range(len(shape)))
        if tuple(cai["strides"]) != want:
            raise QuellmError(f"{what}: device array must be C-contiguous")
    if cai["typestr"] not in _TYPESTR:
        raise QuellmError(f"{what}: device dtype must be float32 or float16, got typestr {cai['typestr']}")
    return int(cai["data"][0]), tuple(cai["shape"]), _TYPESTR[cai["typestr"]]


def fwht(x: Any, scale: float | None = None, out: Any = None, *, inverse: bool = False,
         out_dtype: str | None = None, stream: int = 0) -> Any:
    """:func:`quellm.fwht` on the GPU: ``x @ H_n.T * scale`` along the last axis.

    Args:
        x: device array ``(..., n)``, float32 / float16 / bfloat16 (computed in float32).
        scale: default ``1/sqrt(n)``.
        out: device array of x's shape to write into (may be ``x``); by default a new
            :class:`DeviceArray` of dtype ``out_dtype`` (default: x's dtype).
        inverse: apply ``H_n.T`` (the inverse with the default scale).
        stream: a ``cudaStream_t`` as an integer (0 = the default stream). The call returns
            once the work is queued on that stream.
    """
    _require()
    xp, shape, xt = _describe(x, "fwht")
    if not shape:
        raise QuellmError("fwht: x must have at least one dimension")
    n = shape[-1]
    m, _ = decompose(n)
    if out is None:
        out = DeviceArray(list(shape), out_dtype or xt)
    op, oshape, ot = _describe(out, "fwht out")
    if oshape != shape:
        raise QuellmError(f"fwht: out has shape {oshape}, x has shape {shape}")
    hm = None
    if m > 1:
        hm = hadamard_factor(m)
        hm = np.ascontiguousarray(hm.T) if inverse else hm
    rows = int(np.prod(shape[:-1], dtype=np.int64)) if len(shape) > 1 else 1
    s = 1.0 / math.sqrt(n) if scale is None else float(scale)
    _core.fwht_cuda(xp, xt, op, ot, rows, n, m, hm, s, stream)
    return out


def _f32(x: Any, shape: tuple[int, ...], what: str) -> int:
    p, sh, dt = _describe(x, what)
    if dt != "float32" or sh != shape:
        raise QuellmError(f"{what}: expected a float32 device array of shape {shape}, got {dt} {sh}")
    return p


def mamba_conv(xs: Any, conv_w: Any, conv_b: Any, conv_state: Any, *, stream: int = 0) -> "DeviceArray":
    """Causal depthwise conv + SiLU of a Mamba layer on the GPU (cf. MODELS.md §3.3).

    Args:
        xs: ``(B, T, Di)`` pre-conv inputs (float32/float16/bfloat16).
        conv_w: ``(Di, K)`` float32; ``conv_b``: ``(Di,)`` float32 or None.
        conv_state: ``(B, Di, K-1)`` float32, the previous K-1 inputs (oldest first); updated.

    Returns:
        ``u = silu(conv(xs))`` of shape ``(B, T, Di)`` in xs's dtype.
    """
    _require()
    xp, (B, T, Di), act = _describe(xs, "mamba_conv xs")
    _, (Di2, K), _ = _describe(conv_w, "mamba_conv conv_w")
    if Di2 != Di:
        raise QuellmError(f"mamba_conv: conv_w has {Di2} channels, xs has {Di}")
    wp = _f32(conv_w, (Di, K), "mamba_conv conv_w")
    bp = 0 if conv_b is None else _f32(conv_b, (Di,), "mamba_conv conv_b")
    sp = _f32(conv_state, (B, Di, K - 1), "mamba_conv conv_state")
    u = DeviceArray([B, T, Di], act)
    _core.mamba_conv_cuda(xp, Di, wp, bp, sp, u.ptr, act, B, T, Di, K, stream)
    return u


def mamba_scan(u: Any, dt: Any, bc: Any, A: Any, D: Any, z: Any, ssm_state: Any, *, dt_softplus: bool = True,
               stream: int = 0) -> "DeviceArray":
    """Selective scan of a Mamba layer on the GPU, with D skip and SiLU(z) gating.

    Args:
        u, dt: ``(B, T, Di)`` (dt before softplus when ``dt_softplus``).
        bc: ``(B, T, 2N)``: B in columns ``[0, N)``, C in ``[N, 2N)``.
        A: ``(Di, N)`` float32 (= −exp(A_log)); D: ``(Di,)`` float32.
        z: ``(B, T, Di)`` gate or None. ssm_state: ``(B, Di, N)`` float32, updated.

    Returns:
        y ``(B, T, Di)`` in u's dtype.
    """
    _require()
    up, (B, T, Di), act = _describe(u, "mamba_scan u")
    dp, dsh, dact = _describe(dt, "mamba_scan dt")
    bp, bsh, bact = _describe(bc, "mamba_scan bc")
    if dsh != (B, T, Di) or len(bsh) != 3 or bsh[:2] != (B, T) or bsh[2] % 2 or {dact, bact} != {act}:
        raise QuellmError("mamba_scan: dt must be (B, T, Di) and bc (B, T, 2N), in u's dtype")
    N = bsh[2] // 2
    zp = 0
    if z is not None:
        zp, zsh, zact = _describe(z, "mamba_scan z")
        if zsh != (B, T, Di) or zact != act:
            raise QuellmError("mamba_scan: z must be (B, T, Di) in u's dtype")
    ap = _f32(A, (Di, N), "mamba_scan A")
    Dp = _f32(D, (Di,), "mamba_scan D")
    sp = _f32(ssm_state, (B, Di, N), "mamba_scan ssm_state")
    y = DeviceArray([B, T, Di], act)
    _core.mamba_scan_cuda(up, dp, bp, 2 * N, zp, Di, ap, Dp, sp, y.ptr, act, dt_softplus, B, T, Di, N, stream)
    return y


def encode(fmt: Any, x: Any, **kw: Any) -> Any:
    """``fmt.encode(x)`` (a :class:`quellm.formats.Format`, blocks along the last axis) on the GPU.

    Args:
        fmt: the format, e.g. ``quellm.formats.get("mxfp4")``.
        x: float32 device array ``(..., K)``.
        **kw: as ``fmt.encode`` (``scale``, ``zero``, ``tensor_scale``). OVP without ``scale``
            copies x to the host for the scale search (numpy statistics, as ``fmt.encode``).

    Returns:
        A host :class:`quellm.formats.Packed`, bit-identical to ``fmt.encode(to_host(x))``.
    """
    from .formats import _call_core

    _require()
    xp, shape, dt = _describe(x, "formats encode")
    if dt != "float32" or not shape:
        raise QuellmError(f"formats encode: expected a float32 device array with a last axis, got {dt} {shape}")
    for key in kw:
        if key not in fmt.encode_kwargs:
            raise QuellmError(f"{fmt.name}: encode takes no {key!r}")
    k = shape[-1]
    rows = int(np.prod(shape[:-1], dtype=np.int64)) if len(shape) > 1 else 1
    if rows * k == 0:
        raise QuellmError(f"{fmt.name}: cannot encode an empty array (shape {shape})")
    fmt._check_len(k)
    b, ns = fmt._planes(rows, k)
    host = to_host(x).reshape(rows, k) if fmt.info.family == "ovp" and kw.get("scale") is None else None
    params = fmt._cpp_params() | fmt._cpp_given(host, ns, b.scales, b.zeros, b.tensor_scale, **kw)
    _call_core(_core.format_encode_cuda, fmt.name, xp, rows, k, b.codes, b.scales, b.zeros, b.tensor_scale, params)
    from .formats import Packed

    sshape = (1, 1) if fmt.info.scale_granularity == "tensor" else (rows, -1)
    return Packed(fmt.name, dict(fmt.params), b.codes, b.scales.reshape(sshape), tuple(shape), len(shape) - 1,
                  None if b.zeros is None else b.zeros.reshape(sshape), b.tensor_scale)


def decode(packed: Any) -> "DeviceArray":
    """``packed.decode()`` on the GPU: a float32 :class:`DeviceArray` of ``packed.shape`` (the
    encoded axis must be the last one). Host planes are copied to the device for the call."""
    from .formats import _call_core

    _require()
    fmt = packed.fmt
    fmt._check_packed(packed)
    if packed.axis != len(packed.shape) - 1:
        raise QuellmError("formats decode on the GPU: the encoded axis must be the last one")
    k = packed.shape[-1]
    rows = packed.codes.shape[0]
    y = DeviceArray(list(packed.shape), "float32")
    flat = lambda a: None if a is None else np.ascontiguousarray(a).reshape(-1)  # noqa: E731
    _call_core(_core.format_decode_cuda, fmt.name, y.ptr, rows, k, np.ascontiguousarray(packed.codes),
               flat(packed.scales), flat(packed.zeros), flat(packed.tensor_scale), fmt._cpp_params())
    return y


class Linear:
    """A :class:`quellm.QuantLinear` uploaded to the GPU: ``y = x·Wᵀ (+ b)`` with the same
    pipeline as :meth:`quellm.QuantLinear.forward` (Hadamard transform, activation quantizer,
    low-bit GEMM, scales and bias), run by the kernels of ``cuda/gemm.cu``.

    The weights stay in their format on the device (int4 / int8 / MXFP4 / OVP4 codes, or float
    weights in ``act``); nothing is dequantized to float in device memory.

    Args:
        layer: a :class:`quellm.QuantLinear` (or its ``_core`` object).
        act: dtype of the inputs and outputs: ``"float16"`` (default), ``"bfloat16"`` or
            ``"float32"``.

    Example::

        ql = quellm.QuantLinear(W, b, w_format="int4", group=128, a_format="int8")
        lin = quellm.cuda.Linear(ql, act="float16")
        y = quellm.cuda.to_host(lin(quellm.cuda.to_device(x.astype(np.float16))))
    """

    def __init__(self, layer: Any, act: str = "float16"):
        _require()
        core = getattr(layer, "_core", layer)
        if not isinstance(core, _core.QuantLinear):
            raise QuellmError(f"cuda.Linear: expected a quellm.QuantLinear, got {type(layer).__name__}")
        if act not in _NP:
            raise QuellmError(f"cuda.Linear: act must be float32, float16 or bfloat16, got {act!r}")
        self._dev = _core.CudaLinear(core, act)
        self._ws: dict[int, Any] = {}

    @property
    def in_features(self) -> int:
        return int(self._dev.in_features)

    @property
    def out_features(self) -> int:
        return int(self._dev.out_features)

    @property
    def act(self) -> str:
        return str(self._dev.act)

    @property
    def kernel(self) -> str:
        """``f16`` / ``bf16`` / ``f32`` for float weights, else as :attr:`quellm.QuantLinear.kernel`."""
        return str(self._dev.kernel)

    @property
    def nbytes(self) -> int:
        """Device bytes held (weights, scales, zero points, bias, Hadamard factor)."""
        return int(self._dev.nbytes)

    def workspace_bytes(self, rows: int) -> int:
        """Device scratch bytes one forward of ``rows`` rows needs."""
        return int(self._dev.workspace_bytes(int(rows)))

    def forward(self, x: Any, out: Any = None, *, stream: int = 0) -> Any:
        """``(..., in) -> (..., out)`` on the device, dtype :attr:`act`.

        Args:
            x: device array ``(..., in_features)`` of dtype :attr:`act`.
            out: device array ``(..., out_features)`` to write (must not alias x); default new.
            stream: a ``cudaStream_t`` as an integer; the call returns once the work is queued.
        """
        xp, shape, xt = _describe(x, "cuda.Linear x")
        if not shape or shape[-1] != self.in_features or xt != self.act:
            raise QuellmError(f"cuda.Linear: x must be {self.act} (..., {self.in_features}), got {xt} {shape}")
        rows = int(np.prod(shape[:-1], dtype=np.int64)) if len(shape) > 1 else 1
        oshape = (*shape[:-1], self.out_features)
        if out is None:
            out = DeviceArray(list(oshape), self.act)
        op, osh, ot = _describe(out, "cuda.Linear out")
        if osh != oshape or ot != self.act:
            raise QuellmError(f"cuda.Linear: out must be {self.act} {oshape}, got {ot} {osh}")
        nbytes = self.workspace_bytes(rows)
        wp = 0
        if nbytes:
            ws = self._ws.get(rows)
            if ws is None:
                ws = DeviceArray([(nbytes + 3) // 4], "float32")
                self._ws = {rows: ws}  # keep one (the latest) size alive
            wp = ws.ptr
        self._dev.forward(xp, rows, op, wp, stream)
        return out

    __call__ = forward

    def __repr__(self) -> str:
        return f"cuda.Linear({self.out_features}×{self.in_features}, kernel={self.kernel}, act={self.act})"
