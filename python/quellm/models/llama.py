"""Llama-family models (Llama, Mistral, Qwen2, SmolLM) on the C++ runtime (cpp/runtime/llama.cpp)."""

from __future__ import annotations

from typing import Any

import numpy as np

from .. import _core
from ..errors import QuellmError
from ..io.checkpoint import Checkpoint
from ..io.config import LlamaConfig
from ..reference import rope_inv_freq
from .base import CausalLM, SequenceState, float32_tensors

__all__ = ["LlamaModel", "LlamaState"]


class LlamaState(SequenceState):
    """KV caches of a batch of sequences (keys after RoPE, every layer)."""

    @property
    def caches(self) -> list[Any]:
        return self.items

    def truncate(self, n: int) -> None:
        """Forget positions from ``n`` on (e.g. to reuse a prompt prefix)."""
        for c in self.caches:
            c.truncate(n)


class LlamaModel(CausalLM):
    """A Llama-family decoder. Weights are float32 arrays held once by the runtime (f32
    checkpoints are used straight from their memory map)."""

    family = "llama"
    embedding_name = "model.embed_tokens.weight"
    final_norm_name = "model.norm.weight"

    def __init__(self, config: LlamaConfig, tensors: dict[str, np.ndarray], tokenizer: Any = None, path: Any = None):
        super().__init__(config, tokenizer, path)
        cfg = {
            "hidden_size": config.hidden_size,
            "intermediate_size": config.intermediate_size,
            "num_hidden_layers": config.num_hidden_layers,
            "num_attention_heads": config.num_attention_heads,
            "num_key_value_heads": config.num_key_value_heads,
            "head_dim": config.head_dim,
            "vocab_size": config.vocab_size,
            "max_position_embeddings": config.max_position_embeddings,
            "rms_norm_eps": config.rms_norm_eps,
            "sliding_window": config.sliding_window,
        }
        self._tensors = tensors
        self._rt = _core.LlamaModel(cfg, tensors, rope_inv_freq(config))
        self.kv_cache = {"bits": 0, "clip": 1.0, "hadamard": False}

    def set_kv_cache(self, bits: int = 0, clip: float = 1.0, hadamard: bool = False) -> None:
        """KV cache format of states made from now on: float32 (``bits=0``) or asymmetric int8 /
        int4 per (token, KV head) with clip ratio ``clip``; ``hadamard`` rotates every head by
        H/√head_dim first (queries alike; values rotated back after attention) — exact in float,
        and it spreads outlier channels before the 4-bit rounding (QuaRot)."""
        self._rt.set_kv_cache(int(bits), float(clip), bool(hadamard))
        self.kv_cache = {"bits": int(bits), "clip": float(clip), "hadamard": bool(hadamard)}

    @classmethod
    def from_checkpoint(cls, ckpt: Checkpoint, tokenizer: Any = None) -> "LlamaModel":
        if not isinstance(ckpt.config, LlamaConfig):
            raise QuellmError(f"{ckpt.path}: not a Llama-family checkpoint ({ckpt.config.architecture})")
        return cls(ckpt.config, float32_tensors(ckpt), tokenizer, ckpt.path)

    @property
    def max_len(self) -> int:
        return int(self.config.max_position_embeddings)

    def new_state(self, batch: int = 1, capacity: int | None = None) -> LlamaState:
        cap = self.max_len if capacity is None else int(capacity)
        if not 1 <= cap <= self.max_len:
            raise QuellmError(f"cache capacity must be in [1, {self.max_len}] (max_position_embeddings), got {cap}")
        return LlamaState([_core.KVCache(self._rt, cap) for _ in range(batch)])

    @property
    def norm_eps(self) -> float:
        return float(self.config.rms_norm_eps)

    def _layer_states(self, batch: int, capacity: int, n_layers: int) -> list[Any]:
        return [_core.KVCache(self._rt, capacity, n_layers) for _ in range(batch)]

    def _forward(self, tokens: np.ndarray, state: LlamaState, all_logits: bool, observers: Any) -> np.ndarray:
        if not isinstance(state, LlamaState) or state.batch != tokens.shape[0]:
            raise QuellmError(f"forward: state for {getattr(state, 'batch', '?')} sequences, tokens for {tokens.shape[0]}")
        end = state.len + tokens.shape[1]
        if end > state.caches[0].capacity:
            raise QuellmError(f"forward: {end} positions exceed the state's capacity {state.caches[0].capacity}"
                              + (f" (max_position_embeddings = {self.max_len})" if end > self.max_len else ""))
        return self._rt.forward(tokens, state.caches, all_logits, observers)
