"""The fast Walsh–Hadamard transform (FWHT) for sizes n = m·2^k.

``fwht(x)`` computes, along the last axis of ``x``::

    fwht(x, scale) == x @ H_n.T * scale,   H_n = kron(H_m, H_{2^k})

with ``H_{2^k}`` the Sylvester Hadamard matrix (natural order, as ``scipy.linalg.hadamard``) and
``H_m`` the ±1 Hadamard factor of order m that quellm ships (:mod:`quellm.hadamard`; m = 1 for
powers of two). The default ``scale = 1/sqrt(n)`` makes the transform orthogonal.

For powers of two ``H_n`` is symmetric, so applying the normalised transform twice returns the
input. For m > 1 the factor ``H_m`` need not be symmetric (Paley I matrices are not), so the
inverse is the transposed transform: ``fwht(fwht(x), inverse=True) == x``. When folding a
rotation into weights, use :func:`quellm.hadamard.hadamard_matrix` for the dense matrix and
keep the transpose placement of shared/SPEC.md §3.4.
"""

from __future__ import annotations

import math
from typing import Any

import ml_dtypes
import numpy as np

from . import _core
from .errors import QuellmError
from .hadamard import decompose, fwht_sizes, hadamard_factor

__all__ = ["fwht", "fwht_sizes"]

_FLOAT_IN = (np.dtype(np.float32), np.dtype(np.float16), np.dtype(ml_dtypes.bfloat16), np.dtype(np.float64))


def _prepare(x: Any, out: np.ndarray | None, what: str) -> tuple[np.ndarray, np.ndarray, int]:
    arr = np.asarray(x)
    if arr.dtype not in _FLOAT_IN:
        raise QuellmError(f"{what}: x must be float32, float16, bfloat16 or float64, got {arr.dtype}")
    if arr.ndim == 0:
        raise QuellmError(f"{what}: x must have at least one dimension")
    n = arr.shape[-1]
    if out is None:
        out = np.empty(arr.shape, np.float32)
    else:
        if not isinstance(out, np.ndarray) or out.dtype != np.float32 or not out.flags.c_contiguous:
            raise QuellmError(f"{what}: out must be a C-contiguous float32 numpy array")
        if out.shape != arr.shape:
            raise QuellmError(f"{what}: out has shape {out.shape}, x has shape {arr.shape}")
        if not out.flags.writeable:
            raise QuellmError(f"{what}: out is read-only")
    if out is x:
        src = out  # in place
    else:
        src = np.ascontiguousarray(arr, dtype=np.float32)
        if np.shares_memory(src, out):  # partial overlap: transform a private copy
            src = src.copy()
    return src, out, n


def _factor(m: int, inverse: bool) -> np.ndarray | None:
    if m == 1:
        return None
    h = hadamard_factor(m)
    return np.ascontiguousarray(h.T) if inverse else h


def fwht(x: Any, scale: float | None = None, out: np.ndarray | None = None, *, inverse: bool = False) -> np.ndarray:
    """Walsh–Hadamard transform of the last axis: ``x @ H_n.T * scale``.

    Args:
        x: array of shape ``(..., n)``; float32, float16, bfloat16 or float64 (computed in
            float32). ``n`` must be a supported size (:func:`fwht_sizes`): a power of two or
            ``m·2^k`` for a shipped Hadamard order m (12, 20, 28, 36, 40, 44, 52, 60, 76, 108,
            140, 148, 156, 172, ...).
        scale: multiplies the result; default ``1/sqrt(n)`` (orthogonal transform).
        out: optional float32 C-contiguous array of ``x``'s shape to write into; ``out=x``
            transforms in place.
        inverse: apply ``H_n.T`` instead (``x @ H_n * scale``); with the default scale this is
            the inverse transform. Identical to the forward transform for powers of two.

    Returns:
        float32 array of shape ``(..., n)`` (``out`` when given).

    Raises:
        QuellmError: unsupported n (the message names the nearest supported sizes), a bad
            dtype, or an ``out`` of the wrong shape or dtype.

    Example::

        >>> y = quellm.fwht(np.eye(4, dtype=np.float32))   # rows of H_4 / 2
    """
    src, out, n = _prepare(x, out, "fwht")
    m, _ = decompose(n)
    s = 1.0 / math.sqrt(n) if scale is None else float(scale)
    _core.fwht(src, out, m, _factor(m, inverse), s)
    return out


def fwht_cpp_ref(x: Any, scale: float | None = None, *, inverse: bool = False) -> np.ndarray:
    """The C++ scalar reference (single thread, no SIMD) of :func:`fwht`, for tests."""
    src, out, n = _prepare(x, None, "fwht_cpp_ref")
    m, _ = decompose(n)
    s = 1.0 / math.sqrt(n) if scale is None else float(scale)
    _core.fwht_ref(src, out, m, _factor(m, inverse), s)
    return out
