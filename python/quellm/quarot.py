"""QuaRot's offline transforms of a Llama-family model (shared/SPEC.md §3.1–3.2), on float
tensors; the online Hadamards (before ``o_proj`` and ``down_proj``, on Q/K/V per head) are
QuantLinear transforms and the KV cache's rotation at run time.

1. **Fuse the RMSNorm gains** into the linears that read each norm's output: ``W ← W·diag(γ)``,
   ``γ ← 1`` (q/k/v after ``input_layernorm``, gate/up after ``post_attention_layernorm``, the LM
   head after ``model.norm``). A tied LM head is untied first.
2. **Rotate the residual stream** by ``Q = random_hadamard(D, seed)`` (orthogonal, seeded):
   the embedding rows ``E ← E·Q``; linears that read the residual ``W ← W·Q``; linears that
   write it (``o_proj``, ``down_proj``) ``W ← Qᵀ·W``, ``b ← b·Q``. With weightless norms,
   ``RMSNorm(x·Q) = RMSNorm(x)·Q``, so the model computes the same function (exactly in exact
   arithmetic) while every residual channel is a mix of all of them: no outlier channel is left
   for the per-token quantizers.

Both steps return new arrays; the model's own tensors are never modified.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .errors import QuellmError
from .hadamard import decompose, random_hadamard

__all__ = ["fuse_norms", "rotate_residual", "input_transform"]

_F32 = np.float32


def _layers(cfg: Any) -> range:
    return range(int(cfg.num_hidden_layers))


def fuse_norms(tensors: dict[str, Any], cfg: Any, embedding_name: str) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Step 1. Returns (new tensors, {calibration point "kind/layer": γ}) — the gains whose
    division turns the old norm outputs into the new ones."""
    t = dict(tensors)
    gains: dict[str, np.ndarray] = {}

    def fold(norm: str, linears: list[str], point: str) -> None:
        g = np.asarray(t[norm], np.float64)
        for name in linears:
            t[name] = (np.asarray(t[name], np.float64) * g).astype(_F32)
        t[norm] = np.ones_like(np.asarray(t[norm]), dtype=_F32)
        gains[point] = g

    for i in _layers(cfg):
        p = f"model.layers.{i}."
        fold(p + "input_layernorm.weight", [p + f"self_attn.{x}_proj.weight" for x in "qkv"], f"attn_in/{i}")
        fold(p + "post_attention_layernorm.weight", [p + "mlp.gate_proj.weight", p + "mlp.up_proj.weight"],
             f"mlp_in/{i}")
    if "lm_head.weight" not in t:  # untie: the head gets its own copy of the embedding
        t["lm_head.weight"] = np.asarray(t[embedding_name], _F32)
    fold("model.norm.weight", ["lm_head.weight"], f"lm_head_in/{int(cfg.num_hidden_layers)}")
    return t, gains


def rotate_residual(tensors: dict[str, Any], cfg: Any, embedding_name: str, seed: int) -> tuple[dict[str, Any], np.ndarray]:
    """Step 2 (after :func:`fuse_norms`). Returns (new tensors, Q)."""
    D = int(cfg.hidden_size)
    try:
        decompose(D)
    except QuellmError as e:
        raise QuellmError(f"quarot: no Hadamard matrix for hidden_size {D}: {e}") from None
    Q = random_hadamard(D, seed)
    t = dict(tensors)

    def reads(name: str) -> None:
        t[name] = (np.asarray(t[name], np.float64) @ Q).astype(_F32)

    def writes(prefix: str) -> None:
        t[prefix + ".weight"] = (Q.T @ np.asarray(t[prefix + ".weight"], np.float64)).astype(_F32)
        if prefix + ".bias" in t:
            t[prefix + ".bias"] = (np.asarray(t[prefix + ".bias"], np.float64) @ Q).astype(_F32)

    reads(embedding_name)
    for i in _layers(cfg):
        p = f"model.layers.{i}."
        for x in "qkv":
            reads(p + f"self_attn.{x}_proj.weight")
        reads(p + "mlp.gate_proj.weight")
        reads(p + "mlp.up_proj.weight")
        writes(p + "self_attn.o_proj")
        writes(p + "mlp.down_proj")
    reads("lm_head.weight")
    return t, Q


def input_transform(h: np.ndarray | None, gain: np.ndarray | None, Q: np.ndarray | None) -> np.ndarray | None:
    """Second moments of a linear's new input ``x' = (x / γ)·Q`` from those of ``x``:
    ``Qᵀ diag(1/γ) H diag(1/γ) Q`` (a diagonal ``H`` cannot be rotated: None)."""
    if h is None:
        return None
    if gain is not None:
        g = np.where(gain == 0, 1.0, gain)
        h = h / np.outer(g, g) if h.ndim == 2 else h / (g * g)
    if Q is not None:
        if h.ndim != 2:
            return None
        h = Q.T @ h @ Q
    return h
