"""Numpy reference forward passes: the Llama family and Mamba-1 (shared/MODELS.md §2–3).

These are the readable definitions the C++ and CUDA runtime are checked against, and they are
themselves checked against ``transformers`` through the fixtures in ``tests/fixtures/`` (made by
``tests/make_fixtures.py``). Everything is computed in float32, as Hugging Face does for float32
checkpoints; weights stored as bf16/f16 are converted to float32 when read. Only numpy is used.

Shapes use these letters: B batch, T new tokens, S cached + new tokens, H hidden size,
V vocabulary, L layers; Llama: nh query heads, nkv key/value heads, hd head size, I MLP size;
Mamba: Di inner size, N state size, K conv kernel, R dt rank.

Example::

    ckpt = quellm.io.load_checkpoint("tests/fixtures/llama_untied")
    logits, cache = llama_forward(ckpt, ckpt.config, tokens[:5])          # prefill
    step, cache = llama_forward(ckpt, ckpt.config, tokens[5:6], past=cache)  # one decode step
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import numpy as np

from .io.config import LlamaConfig, MambaConfig, RopeConfig

__all__ = [
    "LlamaCache",
    "MambaState",
    "apply_rope",
    "greedy_generate",
    "llama_forward",
    "mamba_conv_sequence",
    "mamba_conv_step",
    "mamba_forward",
    "mamba_scan_step",
    "rmsnorm",
    "rope_cos_sin",
    "rope_inv_freq",
    "rotate_half",
    "silu",
    "softmax",
    "softplus",
]

F32 = np.float32

# ---- small helpers ------------------------------------------------------------------------------


def rmsnorm(x: np.ndarray, weight: np.ndarray, eps: float) -> np.ndarray:
    """``weight * x / sqrt(mean(x**2) + eps)`` over the last axis, in float32 (MODELS.md §2.3).

    The weight is used as stored (no ``1 +``, which would be Gemma's convention).
    """
    x = np.asarray(x, F32)
    var = np.mean(x * x, axis=-1, keepdims=True)
    return np.asarray(weight, F32) * (x / np.sqrt(var + F32(eps)))


def silu(x: np.ndarray) -> np.ndarray:
    """``x * sigmoid(x)``, written so that no value overflows."""
    x = np.asarray(x, F32)
    return x * np.exp(-np.logaddexp(F32(0), -x))


def softplus(x: np.ndarray, threshold: float = 20.0) -> np.ndarray:
    """``log(1 + exp(x))``, and ``x`` itself above ``threshold`` (PyTorch's convention)."""
    x = np.asarray(x, F32)
    return np.where(x > threshold, x, np.logaddexp(F32(0), x)).astype(F32)


def softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """Softmax in float32; ``-inf`` entries get probability 0."""
    x = np.asarray(x, F32)
    e = np.exp(x - np.max(x, axis=axis, keepdims=True))
    return e / np.sum(e, axis=axis, keepdims=True)


def _linear(x: np.ndarray, w: np.ndarray, b: np.ndarray | None = None) -> np.ndarray:
    """``x @ w.T (+ b)`` with ``w`` stored [out_features, in_features] (MODELS.md §1)."""
    y = x @ w.T
    return y + b if b is not None else y


class _Weights:
    """Float32 views of a checkpoint's tensors (a copy only where the stored dtype differs)."""

    def __init__(self, weights: Mapping[str, np.ndarray]):
        self._w = weights

    def __call__(self, name: str) -> np.ndarray:
        return np.asarray(self._w[name], dtype=F32)

    def optional(self, name: str) -> np.ndarray | None:
        return self(name) if name in self._w else None

    def head(self, embedding_name: str) -> np.ndarray:
        """``lm_head.weight`` when the checkpoint has one, else the (tied) embedding."""
        return self("lm_head.weight") if "lm_head.weight" in self._w else self(embedding_name)


def _config(weights: Any, config: Any) -> Any:
    if config is None:
        config = getattr(weights, "config", None)
        if config is None:
            raise ValueError("no config given and the weights carry none (pass ckpt.config)")
    return config


def _tokens(tokens: Any) -> tuple[np.ndarray, bool]:
    """Tokens as [B, T] int64, and whether the caller passed a single sequence [T]."""
    t = np.asarray(tokens)
    if t.ndim not in (1, 2) or t.shape[-1] == 0 or t.dtype.kind not in "iu":
        raise ValueError(f"tokens must be a non-empty integer array [T] or [B, T], got {t.dtype} {t.shape}")
    return (t[None] if t.ndim == 1 else t).astype(np.int64), t.ndim == 1


# ---- RoPE ----------------------------------------------------------------------------------------


def rope_inv_freq(config: LlamaConfig | RopeConfig, head_dim: int | None = None) -> np.ndarray:
    """Inverse frequencies [hd/2] for pair i: ``theta ** (-2i/hd)``, then rope scaling (§2.4).

    ``"linear"`` divides by ``factor``. ``"llama3"`` keeps high frequencies (wavelength
    ``2*pi/inv_freq`` below ``Lo/high_freq_factor``), divides low ones (wavelength above
    ``Lo/low_freq_factor``) by ``factor`` and blends linearly in between, with
    ``s = (Lo/wavelength - low) / (high - low)``. Computed in float64, returned as float32.

    Args:
        config: a :class:`LlamaConfig` (its ``rope`` and ``head_dim`` are used) or a
            :class:`RopeConfig` together with ``head_dim``.
    """
    rope = config.rope if isinstance(config, LlamaConfig) else config
    hd = config.head_dim if isinstance(config, LlamaConfig) else head_dim
    if hd is None:
        raise ValueError("rope_inv_freq: head_dim is required with a RopeConfig")
    inv = rope.theta ** (-np.arange(0, hd, 2, dtype=np.float64) / hd)
    if rope.rope_type == "linear":
        inv = inv / rope.factor
    elif rope.rope_type == "llama3":
        lo, hi, lo_max = rope.low_freq_factor, rope.high_freq_factor, rope.original_max_position_embeddings
        wavelen = 2 * np.pi / inv
        s = (lo_max / wavelen - lo) / (hi - lo)
        blended = (1 - s) * inv / rope.factor + s * inv
        inv = np.where(wavelen < lo_max / hi, inv, np.where(wavelen > lo_max / lo, inv / rope.factor, blended))
    elif rope.rope_type != "default":
        raise ValueError(f"rope_inv_freq: unsupported rope type {rope.rope_type!r}")
    return inv.astype(F32)


def rope_cos_sin(inv_freq: np.ndarray, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """cos and sin [T, hd] for integer ``positions`` [T], laid out ``[f, f]`` as HF does."""
    angles = np.asarray(positions, F32)[:, None] * np.asarray(inv_freq, F32)[None, :]  # [T, hd/2]
    emb = np.concatenate([angles, angles], axis=-1)
    return np.cos(emb), np.sin(emb)


def rotate_half(x: np.ndarray) -> np.ndarray:
    """``[-x2, x1]`` where x1, x2 are the two halves of the last axis."""
    half = x.shape[-1] // 2
    return np.concatenate([-x[..., half:], x[..., :half]], axis=-1)


def apply_rope(x: np.ndarray, cos: np.ndarray, sin: np.ndarray) -> np.ndarray:
    """Rotate ``x`` [..., T, hd] in the "rotate_half" (NeoX) layout: dimension i pairs with i+hd/2.

    ``out_i = x_i cos_i - x_{i+hd/2} sin_i`` and ``out_{i+hd/2} = x_{i+hd/2} cos_i + x_i sin_i``.
    """
    return x * cos + rotate_half(x) * sin


# ---- Llama -----------------------------------------------------------------------------------------


@dataclasses.dataclass
class LlamaCache:
    """Keys (after RoPE) and values per layer, each [B, nkv, S, hd]."""

    keys: list[np.ndarray]
    values: list[np.ndarray]

    @property
    def length(self) -> int:
        """Number of cached positions S."""
        return self.keys[0].shape[2] if self.keys else 0


def _attention(q: np.ndarray, k: np.ndarray, v: np.ndarray, past_len: int) -> np.ndarray:
    """Causal GQA attention. q [B, nh, T, hd], k/v [B, nkv, S, hd] -> [B, T, nh*hd].

    Query head j reads KV head ``j // (nh/nkv)`` (repeat_interleave). Query t sits at absolute
    position ``past_len + t`` and sees keys 0..past_len+t.
    """
    B, nh, T, hd = q.shape
    nkv, S = k.shape[1], k.shape[2]
    group = nh // nkv
    k = np.repeat(k, group, axis=1)
    v = np.repeat(v, group, axis=1)
    scores = (q @ k.transpose(0, 1, 3, 2)) * F32(hd ** -0.5)  # [B, nh, T, S]
    future = np.arange(S)[None, :] > (past_len + np.arange(T))[:, None]  # [T, S]
    scores = np.where(future, F32(-np.inf), scores)
    out = softmax(scores, axis=-1) @ v  # [B, nh, T, hd]
    return out.transpose(0, 2, 1, 3).reshape(B, T, nh * hd)


def llama_forward(
    weights: Mapping[str, np.ndarray],
    config: LlamaConfig | None,
    tokens: Any,
    *,
    past: LlamaCache | None = None,
    collect_hidden: list[np.ndarray] | None = None,
    linears: Mapping[str, Any] | None = None,
    kv_quant: Any = None,
) -> tuple[np.ndarray, LlamaCache]:
    """Forward pass of a Llama-family decoder (Llama, Mistral, Qwen2, SmolLM; MODELS.md §2.3).

    Args:
        weights: name -> array, e.g. a :class:`quellm.io.Checkpoint`; any float dtype.
        config: the model's :class:`LlamaConfig` (``None``: ``weights.config``).
        tokens: int ids [T] or [B, T]; they continue the sequence held in ``past``.
        past: the cache returned by an earlier call, or ``None`` to start at position 0. It is
            not modified.
        collect_hidden: if a list, the residual stream after each layer and then the
            final-norm output are appended to it (L+1 arrays shaped like the logits but with H).
        linears: module name (e.g. ``"model.layers.0.mlp.down_proj"``, ``"lm_head"``) -> a
            function ``x -> y`` used instead of that layer's float matmul (and bias), e.g.
            :meth:`quellm.QuantLinear.simulate` for a fake-quantized reference.
        kv_quant: a function applied to the new keys (after RoPE) and values, arrays
            [B, n_kv, T, head_dim], before they are cached (fake KV cache quantization).

    Returns:
        ``(logits, cache)``: logits [T, V] or [B, T, V] (float32, matching the rank of
        ``tokens``) and a new :class:`LlamaCache` holding ``past`` plus these tokens.
    """
    cfg = _config(weights, config)
    w = _Weights(weights)
    ids, single = _tokens(tokens)
    B, T = ids.shape
    nh, nkv, hd = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim
    past_len = past.length if past is not None else 0
    if past is not None and past.keys[0].shape[0] != B:
        raise ValueError(f"batch size {B} does not match the cache's {past.keys[0].shape[0]}")
    cos, sin = rope_cos_sin(rope_inv_freq(cfg), past_len + np.arange(T))
    qkv_bias = cfg.qkv_bias or cfg.attention_bias

    def bias(name: str, present: bool) -> np.ndarray | None:
        return w(name) if present else None

    def linear(name: str, x: np.ndarray, present: bool) -> np.ndarray:
        if linears is not None and name in linears:
            return np.asarray(linears[name](x), dtype=F32)
        return _linear(x, w(name + ".weight"), bias(name + ".bias", present))

    x = w("model.embed_tokens.weight")[ids]  # [B, T, H]
    keys, values = [], []
    for i in range(cfg.num_hidden_layers):
        p = f"model.layers.{i}."
        h = rmsnorm(x, w(p + "input_layernorm.weight"), cfg.rms_norm_eps)
        a = p + "self_attn."
        q = linear(a + "q_proj", h, qkv_bias)
        k = linear(a + "k_proj", h, qkv_bias)
        v = linear(a + "v_proj", h, qkv_bias)
        q = apply_rope(q.reshape(B, T, nh, hd).transpose(0, 2, 1, 3), cos, sin)
        k = apply_rope(k.reshape(B, T, nkv, hd).transpose(0, 2, 1, 3), cos, sin)
        v = v.reshape(B, T, nkv, hd).transpose(0, 2, 1, 3)
        if kv_quant is not None:
            k, v = np.asarray(kv_quant(k), dtype=F32), np.asarray(kv_quant(v), dtype=F32)
        if past is not None:
            k = np.concatenate([past.keys[i], k], axis=2)
            v = np.concatenate([past.values[i], v], axis=2)
        keys.append(k)
        values.append(v)
        attn = _attention(q, k, v, past_len)
        x = x + linear(a + "o_proj", attn, cfg.attention_bias)

        h = rmsnorm(x, w(p + "post_attention_layernorm.weight"), cfg.rms_norm_eps)
        m = p + "mlp."
        gate = linear(m + "gate_proj", h, cfg.mlp_bias)
        up = linear(m + "up_proj", h, cfg.mlp_bias)
        x = x + linear(m + "down_proj", silu(gate) * up, cfg.mlp_bias)
        if collect_hidden is not None:
            collect_hidden.append(x[0] if single else x)

    x = rmsnorm(x, w("model.norm.weight"), cfg.rms_norm_eps)
    if collect_hidden is not None:
        collect_hidden.append(x[0] if single else x)
    if linears is not None and "lm_head" in linears:
        logits = np.asarray(linears["lm_head"](x), dtype=F32)
    else:
        logits = x @ w.head("model.embed_tokens.weight").T
    return (logits[0] if single else logits), LlamaCache(keys, values)


# ---- Mamba -----------------------------------------------------------------------------------------


@dataclasses.dataclass
class MambaState:
    """Per-layer recurrent state (MODELS.md §3.4).

    ``conv[i]`` [B, Di, K]: the last K pre-conv inputs xs, oldest first, the newest token's in
    column K-1 (the Hugging Face / mamba_ssm convention; zero columns on the left before K
    tokens have been seen). ``ssm[i]`` [B, Di, N]: the SSM state hs.
    """

    conv: list[np.ndarray]
    ssm: list[np.ndarray]

    @staticmethod
    def zeros(config: MambaConfig, batch: int) -> "MambaState":
        Di, N, K = config.intermediate_size, config.state_size, config.conv_kernel
        L = config.num_hidden_layers
        return MambaState([np.zeros((batch, Di, K), F32) for _ in range(L)],
                          [np.zeros((batch, Di, N), F32) for _ in range(L)])


def mamba_conv_sequence(xs: np.ndarray, conv_w: np.ndarray, conv_b: np.ndarray | None,
                        conv_state: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Causal depthwise conv over T tokens, before silu.

    ``out[t, c] = conv_b[c] + sum_k conv_w[c, k] * window[c, t + k]`` where ``window`` is the
    last K-1 state columns followed by the new inputs (PyTorch conv1d is a cross-correlation:
    ``conv_w[:, K-1]`` multiplies the current token).

    Args:
        xs: [B, T, Di] pre-conv inputs; conv_w: [Di, K]; conv_b: [Di] or None;
        conv_state: [B, Di, K] (see :class:`MambaState`; zeros for a fresh sequence).

    Returns:
        ``(pre_activation [B, T, Di], new conv_state [B, Di, K])``.
    """
    K = conv_w.shape[-1]
    T = xs.shape[1]
    window = np.concatenate([conv_state, xs.transpose(0, 2, 1)], axis=-1)  # [B, Di, K+T]
    window = window[..., 1:]  # the oldest state column is outside every token's window
    out = np.zeros(xs.shape, F32)
    for k in range(K):
        out += conv_w[:, k] * window[..., k:k + T].transpose(0, 2, 1)
    if conv_b is not None:
        out = out + conv_b
    return out, window[..., -K:]


def mamba_conv_step(x_t: np.ndarray, conv_w: np.ndarray, conv_b: np.ndarray | None,
                    conv_state: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One token of the causal conv: shift the state left, append ``x_t`` [B, Di], and take
    the dot product of each channel's K columns with its weights. Returns
    ``(pre_activation [B, Di], new conv_state [B, Di, K])``."""
    state = np.concatenate([conv_state[..., 1:], x_t[..., None]], axis=-1)
    out = np.sum(state * conv_w, axis=-1)
    return (out + conv_b if conv_b is not None else out), state


def mamba_scan_step(hs: np.ndarray, u: np.ndarray, dt: np.ndarray, A: np.ndarray,
                    B: np.ndarray, C: np.ndarray, D: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One step of the selective scan (ZOH for A, Euler for B), before gating.

    ``hs = exp(dt*A) * hs + (dt*u) B``, ``y = hs . C + D*u``.

    Args:
        hs: [B, Di, N] state; u, dt: [B, Di]; A: [Di, N] (negative); B, C: [B, N]; D: [Di].

    Returns:
        ``(new hs [B, Di, N], y [B, Di])``.
    """
    dA = np.exp(dt[..., None] * A)
    dBu = (dt[..., None] * B[:, None, :]) * u[..., None]
    hs = dA * hs + dBu
    y = np.einsum("bcn,bn->bc", hs, C) + D * u
    return hs.astype(F32), y.astype(F32)


class _MambaLayer:
    """One block's weights in float32 (A = -exp(A_log) precomputed)."""

    def __init__(self, w: _Weights, cfg: MambaConfig, i: int):
        p = f"backbone.layers.{i}."
        m = p + "mixer."
        self.norm = w(p + "norm.weight")
        self.in_w = w(m + "in_proj.weight")
        self.in_b = w(m + "in_proj.bias") if cfg.use_bias else None
        self.conv_w = w(m + "conv1d.weight")[:, 0, :]  # [Di, 1, K] -> [Di, K]
        self.conv_b = w(m + "conv1d.bias") if cfg.use_conv_bias else None
        self.x_w = w(m + "x_proj.weight")
        self.dt_w = w(m + "dt_proj.weight")
        self.dt_b = w(m + "dt_proj.bias")
        self.A = -np.exp(w(m + "A_log"))
        self.D = w(m + "D")
        self.out_w = w(m + "out_proj.weight")
        self.out_b = w(m + "out_proj.bias") if cfg.use_bias else None
        self.Di, self.R, self.N = cfg.intermediate_size, cfg.time_step_rank, cfg.state_size

    def in_proj(self, h: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """h [..., H] -> (xs, z), each [..., Di]."""
        xz = _linear(h, self.in_w, self.in_b)
        return xz[..., :self.Di], xz[..., self.Di:]

    def ssm_params(self, u: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """u [..., Di] -> (dt [..., Di], B [..., N], C [..., N])."""
        dbc = u @ self.x_w.T
        dt_low, B, C = dbc[..., :self.R], dbc[..., self.R:self.R + self.N], dbc[..., self.R + self.N:]
        return softplus(_linear(dt_low, self.dt_w, self.dt_b)), B, C

    def out_proj(self, y: np.ndarray, z: np.ndarray) -> np.ndarray:
        return _linear(y * silu(z), self.out_w, self.out_b)


def _mamba_mixer_sequence(lay: _MambaLayer, h: np.ndarray, conv_state: np.ndarray,
                          hs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All T tokens of one mixer: projections over the whole sequence, then a loop over t."""
    xs, z = lay.in_proj(h)  # [B, T, Di]
    pre, conv_state = mamba_conv_sequence(xs, lay.conv_w, lay.conv_b, conv_state)
    u = silu(pre)
    dt, B, C = lay.ssm_params(u)
    ys = []
    for t in range(h.shape[1]):
        hs, y = mamba_scan_step(hs, u[:, t], dt[:, t], lay.A, B[:, t], C[:, t], lay.D)
        ys.append(y)
    return lay.out_proj(np.stack(ys, axis=1), z), conv_state, hs


def _mamba_mixer_step(lay: _MambaLayer, h_t: np.ndarray, conv_state: np.ndarray,
                      hs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One token [B, H] of one mixer, in the recurrent form."""
    xs, z = lay.in_proj(h_t)  # [B, Di]
    pre, conv_state = mamba_conv_step(xs, lay.conv_w, lay.conv_b, conv_state)
    u = silu(pre)
    dt, B, C = lay.ssm_params(u)
    hs, y = mamba_scan_step(hs, u, dt, lay.A, B, C, lay.D)
    return lay.out_proj(y, z), conv_state, hs


def mamba_forward(
    weights: Mapping[str, np.ndarray],
    config: MambaConfig | None,
    tokens: Any,
    *,
    state: MambaState | None = None,
    path: str = "auto",
    collect_hidden: list[np.ndarray] | None = None,
) -> tuple[np.ndarray, MambaState]:
    """Forward pass of a Mamba-1 language model (MODELS.md §3.3–3.4).

    Args:
        weights: name -> array, e.g. a :class:`quellm.io.Checkpoint`; any float dtype.
        config: the model's :class:`MambaConfig` (``None``: ``weights.config``).
        tokens: int ids [T] or [B, T], continuing the sequence summarised by ``state``.
        state: the state returned by an earlier call, or ``None`` for a fresh sequence. It is
            not modified.
        path: ``"sequence"`` (projections over all T tokens at once, then the scan loop),
            ``"step"`` (token by token through the single-token recurrent step) or ``"auto"``
            (the step form for one token, the sequence form otherwise). All give the same
            result up to float rounding.
        collect_hidden: if a list, the residual stream after each layer and then the
            final-norm output are appended to it (L+1 arrays).

    Returns:
        ``(logits, state)``: logits [T, V] or [B, T, V] (float32, matching the rank of
        ``tokens``) and the new :class:`MambaState` after these tokens.
    """
    cfg = _config(weights, config)
    if path not in ("auto", "sequence", "step"):
        raise ValueError(f"path must be 'auto', 'sequence' or 'step', got {path!r}")
    w = _Weights(weights)
    ids, single = _tokens(tokens)
    Bsz, T = ids.shape
    if state is None:
        state = MambaState.zeros(cfg, Bsz)
    elif state.conv[0].shape[0] != Bsz:
        raise ValueError(f"batch size {Bsz} does not match the state's {state.conv[0].shape[0]}")
    layers = [_MambaLayer(w, cfg, i) for i in range(cfg.num_hidden_layers)]
    eps = cfg.layer_norm_epsilon
    conv, ssm = list(state.conv), list(state.ssm)
    x = w("backbone.embeddings.weight")[ids]  # [B, T, H]; the residual stream, float32
    if path == "step" or (path == "auto" and T == 1):
        outs = []
        per_layer: list[list[np.ndarray]] = [[] for _ in layers]
        for t in range(T):
            x_t = x[:, t]
            for i, lay in enumerate(layers):
                out, conv[i], ssm[i] = _mamba_mixer_step(lay, rmsnorm(x_t, lay.norm, eps), conv[i], ssm[i])
                x_t = x_t + out
                per_layer[i].append(x_t)
            outs.append(x_t)
        x = np.stack(outs, axis=1)
        hidden = [np.stack(p, axis=1) for p in per_layer]
    else:
        hidden = []
        for i, lay in enumerate(layers):
            out, conv[i], ssm[i] = _mamba_mixer_sequence(lay, rmsnorm(x, lay.norm, eps), conv[i], ssm[i])
            x = x + out
            hidden.append(x)
    x = rmsnorm(x, w("backbone.norm_f.weight"), eps)
    if collect_hidden is not None:
        collect_hidden.extend(h[0] if single else h for h in hidden + [x])
    logits = x @ w.head("backbone.embeddings.weight").T
    return (logits[0] if single else logits), MambaState(conv, ssm)


# ---- generation ------------------------------------------------------------------------------------


def greedy_generate(weights: Mapping[str, np.ndarray], config: LlamaConfig | MambaConfig | None,
                    tokens: Any, max_new_tokens: int) -> np.ndarray:
    """Greedy continuation (argmax at each step, no stop token) of a prompt [T] or [B, T].

    Returns the new ids, [max_new_tokens] or [B, max_new_tokens] int64.
    """
    cfg = _config(weights, config)
    ids, single = _tokens(tokens)
    if isinstance(cfg, MambaConfig):
        logits, cache = mamba_forward(weights, cfg, ids)
    else:
        logits, cache = llama_forward(weights, cfg, ids)
    new = []
    for _ in range(max_new_tokens):
        nxt = np.argmax(logits[:, -1], axis=-1)[:, None]
        new.append(nxt)
        if isinstance(cfg, MambaConfig):
            logits, cache = mamba_forward(weights, cfg, nxt, state=cache)
        else:
            logits, cache = llama_forward(weights, cfg, nxt, past=cache)
    out = np.concatenate(new, axis=1) if new else np.zeros((ids.shape[0], 0), np.int64)
    return out[0] if single else out
