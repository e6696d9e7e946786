"""Mamba-1 models on the C++ runtime (cpp/runtime/mamba.cpp)."""

from __future__ import annotations

from typing import Any

import numpy as np

from .. import _core
from ..errors import QuellmError
from ..io.checkpoint import Checkpoint
from ..io.config import MambaConfig
from .base import CausalLM, SequenceState, float32_tensors

__all__ = ["MambaModel", "MambaSeqState"]

# Mamba has no positional limit; this only bounds prompt + generation lengths.
_MAX_LEN = 1 << 30


class MambaSeqState(SequenceState):
    """Conv and SSM states of a batch of sequences (constant size, whatever the length)."""

    def __init__(self, states: list[Any], model: "MambaModel"):
        super().__init__(states)
        self._model = model

    @property
    def states(self) -> list[Any]:
        return self.items

    def conv_state(self, layer: int, seq: int = 0) -> np.ndarray:
        """(d_inner, conv_kernel - 1): the newest pre-conv inputs, oldest first."""
        return self.states[seq].conv_state(self._model._rt, layer)

    def ssm_state(self, layer: int, seq: int = 0) -> np.ndarray:
        """(d_inner, state_size)."""
        return self.states[seq].ssm_state(self._model._rt, layer)


class MambaModel(CausalLM):
    """A Mamba-1 language model (MambaForCausalLM in the Hugging Face layout)."""

    family = "mamba"
    embedding_name = "backbone.embeddings.weight"
    final_norm_name = "backbone.norm_f.weight"

    def __init__(self, config: MambaConfig, tensors: dict[str, np.ndarray], tokenizer: Any = None, path: Any = None):
        super().__init__(config, tokenizer, path)
        cfg = {
            "hidden_size": config.hidden_size,
            "intermediate_size": config.intermediate_size,
            "state_size": config.state_size,
            "conv_kernel": config.conv_kernel,
            "time_step_rank": config.time_step_rank,
            "num_hidden_layers": config.num_hidden_layers,
            "vocab_size": config.vocab_size,
            "layer_norm_epsilon": config.layer_norm_epsilon,
        }
        self._tensors = tensors
        self._rt = _core.MambaModel(cfg, tensors)

    @classmethod
    def from_checkpoint(cls, ckpt: Checkpoint, tokenizer: Any = None) -> "MambaModel":
        if not isinstance(ckpt.config, MambaConfig):
            raise QuellmError(f"{ckpt.path}: not a Mamba checkpoint ({ckpt.config.architecture})")
        return cls(ckpt.config, float32_tensors(ckpt), tokenizer, ckpt.path)

    @property
    def max_len(self) -> int:
        return _MAX_LEN

    def new_state(self, batch: int = 1, capacity: int | None = None) -> MambaSeqState:
        return MambaSeqState([_core.MambaState(self._rt) for _ in range(batch)], self)

    @property
    def norm_eps(self) -> float:
        return float(self.config.layer_norm_epsilon)

    def _layer_states(self, batch: int, capacity: int, n_layers: int) -> list[Any]:
        return [_core.MambaState(self._rt, n_layers) for _ in range(batch)]

    def _forward(self, tokens: np.ndarray, state: MambaSeqState, all_logits: bool, observers: Any) -> np.ndarray:
        if not isinstance(state, MambaSeqState) or state.batch != tokens.shape[0]:
            raise QuellmError(f"forward: state for {getattr(state, 'batch', '?')} sequences, tokens for {tokens.shape[0]}")
        return self._rt.forward(tokens, state.states, all_logits, observers)
