"""GPTQ weight rounding (shared/SPEC.md §8): quantize a linear layer's weights column by
column, pushing each column's rounding error onto the columns not yet quantized through the
inverse Hessian of the layer's inputs, so the layer's *output* error stays small.

For ``W`` (rows = outputs, columns = inputs) and ``H = XᵀX / n`` of the layer's calibration
inputs:

1. dead inputs (``H_ii = 0``): ``H_ii = 1``, ``W[:, i] = 0``; dampening ``H += λI``,
   ``λ = damp · mean(diag H)``;
2. ``U`` = upper Cholesky factor of ``H⁻¹``;
3. for each column ``i`` (in lazy blocks of ``block`` columns; with groups, a group's scale and
   zero point are computed from the current — error-updated — weights when the column loop
   reaches the group's first column): ``q = Quant(W[:, i])``, ``e = (W[:, i] − q) / U_ii``,
   ``W[:, j] −= e · U_ij`` for the later columns ``j`` of the block; after the block, one GEMM
   updates the remaining columns.

With ``act_order`` the columns are processed in order of decreasing ``H_ii`` (the inputs with
the most energy first) and the result is permuted back; groups are then *static*: their
parameters come from the original weights before the loop, so each stored group still covers
consecutive input channels.

With ``clip_search`` (QuaRot's ``--w_clip``) each row's group parameters are not the full range
but the clip ratio of ``CLIP_SEARCH_GRID`` whose round-to-nearest error ``Σ|q − w|^2.4`` over the
group is smallest (ties: the larger ratio) — GPTQ then rounds against those clipped grids.

quellm's calibration gives ``H`` from the float model in one pass (``calibrate(..., xtx=True)``),
not sequentially from the already-quantized earlier layers as in the paper's loop.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from .errors import QuellmError
from .formats import IntFormat, Packed

__all__ = ["CLIP_SEARCH_GRID", "gptq", "gptq_columns", "proxy_loss"]

#: Clip ratios tried by ``gptq(..., clip_search=True)``: 1.0 down to 0.5 in steps of 0.02.
CLIP_SEARCH_GRID = tuple(round(1.0 - 0.02 * i, 2) for i in range(26))


def _inverse_factor(H: np.ndarray) -> np.ndarray:
    """Upper-triangular U with UᵀU = H⁻¹ (float64)."""
    try:
        L = np.linalg.cholesky(H)
    except np.linalg.LinAlgError:
        raise QuellmError("gptq: the Hessian is not positive definite after dampening; raise damp") from None
    Linv = np.linalg.inv(L)
    Hinv = Linv.T @ Linv
    return np.linalg.cholesky(Hinv).T


def prepare_hessian(W: np.ndarray, H: np.ndarray, damp: float) -> tuple[np.ndarray, np.ndarray]:
    """Steps 1–2: (W with dead columns zeroed, float64 copy), U."""
    W = np.array(W, dtype=np.float64)
    H = np.array(H, dtype=np.float64)
    K = W.shape[1]
    if H.shape != (K, K):
        raise QuellmError(f"gptq: Hessian must be ({K}, {K}), got {H.shape}")
    if not (np.isfinite(H).all() and np.isfinite(W).all()):
        raise QuellmError("gptq: non-finite weights or Hessian")
    dead = np.diag(H) == 0
    H[dead, dead] = 1.0
    W[:, dead] = 0.0
    H += damp * float(np.mean(np.diag(H))) * np.eye(K)
    return W, _inverse_factor(H)


def gptq_columns(W: np.ndarray, U: np.ndarray, quant_col: Callable[[np.ndarray, int, np.ndarray], np.ndarray],
                 block: int = 128) -> np.ndarray:
    """Step 3 with a given quantizer: ``quant_col(w_col, i, W_current)`` returns the quantized
    (dequantized-value) column ``i``; ``W_current`` is the error-updated weight matrix (columns
    ``>= i`` current). Returns the quantized matrix (float64)."""
    W = np.array(W, dtype=np.float64)
    N, K = W.shape
    Q = np.zeros_like(W)
    for i1 in range(0, K, block):
        i2 = min(i1 + block, K)
        err = np.zeros((N, i2 - i1))
        for i in range(i1, i2):
            w = W[:, i]
            q = quant_col(w, i, W)
            Q[:, i] = q
            e = (w - q) / U[i, i]
            W[:, i + 1:i2] -= np.outer(e, U[i, i + 1:i2])
            err[:, i - i1] = e
        W[:, i2:] -= err @ U[i1:i2, i2:]
    return Q


def _clipped_params(fmt: IntFormat, cols: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """Per row of ``cols`` (rows, G): the scales (and zero points) of the clip ratio with the
    smallest Σ|RTN(w) − w|^2.4 (QuaRot's weight-clip search)."""
    best_err = np.full(cols.shape[0], np.inf)
    best_s = np.zeros(cols.shape[0], np.float32)
    best_z = None if fmt.sym else np.zeros(cols.shape[0], np.float32)
    w64 = cols.astype(np.float64)
    for c in CLIP_SEARCH_GRID:
        f = IntFormat(fmt.name, fmt.bits, sym=fmt.sym, group=cols.shape[1], clip=c)
        b = f.encode_blocks(cols)
        err = (np.abs(f.decode_blocks(b.codes, b.scales, b.zeros).astype(np.float64) - w64) ** 2.4).sum(axis=1)
        better = err < best_err
        best_err[better] = err[better]
        best_s[better] = np.asarray(b.scales).reshape(-1)[better]
        if best_z is not None:
            best_z[better] = np.asarray(b.zeros).reshape(-1)[better]
    return best_s, best_z


def gptq(W: np.ndarray, H: np.ndarray, fmt: IntFormat, damp: float = 0.01, block: int = 128,
         act_order: bool = False, clip_search: bool = False) -> Packed:
    """GPTQ-quantized ``W`` (out, in) in the integer format ``fmt`` (symmetric or asymmetric,
    per row or per group along ``in``); returns a :class:`Packed` like ``fmt.encode(W)``.
    ``clip_search``: each group's parameters from the clip-ratio search (module docstring)."""
    if fmt.info.scale_granularity == "tensor":
        raise QuellmError("gptq: per-tensor scales are not supported (use per row or per group)")
    N, K = W.shape
    G = fmt.group or K
    Wd, U = prepare_hessian(W, H, damp)
    scales = np.zeros((N, K // G), np.float32)
    zeros = None if fmt.sym else np.zeros((N, K // G), np.float32)
    codes = np.zeros((N, K), np.int64)
    perm = np.argsort(-np.diag(np.asarray(H, np.float64)), kind="stable") if act_order else np.arange(K)

    def set_group(g: int, cols: np.ndarray) -> None:
        cols = np.ascontiguousarray(cols, dtype=np.float32)
        if clip_search:
            s, z = _clipped_params(fmt, cols)
        else:
            b = fmt.encode_blocks(cols)
            s, z = b.scales, b.zeros
        scales[:, g] = s
        if zeros is not None:
            zeros[:, g] = z

    if act_order:  # static groups from the (dead-column-zeroed) original weights
        for g in range(K // G):
            set_group(g, Wd[:, g * G:(g + 1) * G])

    def quant_col(w: np.ndarray, i: int, Wcur: np.ndarray) -> np.ndarray:
        col = int(perm[i])  # the original input channel of loop position i
        g = col // G
        if not act_order and i % G == 0:  # the group's parameters from the current weights
            set_group(g, Wcur[:, i:i + G])
        s = scales[:, g].astype(np.float64)
        z = 0.0 if zeros is None else zeros[:, g].astype(np.float64)
        q = np.clip(np.rint(w.astype(np.float32) / scales[:, g]) + z, fmt.qmin, fmt.qmax)
        codes[:, col] = q
        return (q - z) * s

    if act_order:
        Hp = np.asarray(H, np.float64)[np.ix_(perm, perm)]
        Wd, U = prepare_hessian(np.asarray(W)[:, perm], Hp, damp)
        gptq_columns(Wd, U, quant_col, block=block)
    else:
        gptq_columns(Wd, U, quant_col, block=max(block - block % G, G) if G < K else block)
    # the Packed the format's encoder would produce for these codes and scales
    return fmt.encode(((codes - (0 if zeros is None else np.repeat(zeros, G, axis=1))) *
                       np.repeat(scales, G, axis=1)).astype(np.float32), scale=scales.reshape(-1),
                      **({} if zeros is None else {"zero": zeros.reshape(-1)}))


def proxy_loss(W: np.ndarray, Q: np.ndarray, H: np.ndarray) -> float:
    """Σ_rows (q − w) H (q − w)ᵀ: the layer's output error on the calibration inputs."""
    d = np.asarray(Q, np.float64) - np.asarray(W, np.float64)
    return float(np.einsum("ij,jk,ik->", d, H, d))
