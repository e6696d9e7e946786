"""What every quellm language model shares: tokenization, forward, generation.

A model family (Llama, Mamba) implements three hooks — :meth:`CausalLM.new_state`,
:meth:`CausalLM._forward` and :attr:`CausalLM.max_len` — and inherits ``forward``,
``generate``, and the evaluation functions of :mod:`quellm.eval`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import QuellmError
from ..io.config import ModelConfig

__all__ = ["CausalLM", "GenerationResult", "SequenceState", "float32_tensors", "sample_next"]


class SequenceState:
    """Per-sequence runtime state of a batch (KV caches, SSM states): ``items[b]`` belongs to
    sequence ``b``; all advance together."""

    def __init__(self, items: list[Any]):
        self.items = items

    @property
    def batch(self) -> int:
        return len(self.items)

    @property
    def len(self) -> int:
        """Tokens consumed so far."""
        return int(self.items[0].len)


def float32_tensors(ckpt: Any) -> dict[str, np.ndarray]:
    """Every tensor of a checkpoint as a C-contiguous float32 array: f32 tensors are used in
    place from the memory map, others (bf16, f16) are converted once."""
    out = {}
    for name in ckpt:
        a = ckpt[name]
        out[name] = a if a.dtype == np.float32 and a.flags.c_contiguous else np.ascontiguousarray(a, dtype=np.float32)
    return out


class GenerationResult(str):
    """The generated text (a ``str``), with ``.tokens`` (new ids) and timing attributes."""

    tokens: list[int]
    prompt_tokens: int
    prefill_seconds: float
    decode_seconds: float

    @property
    def decode_tokens_per_second(self) -> float:
        n = max(len(self.tokens) - 1, 0)
        return n / self.decode_seconds if self.decode_seconds > 0 else float("nan")


def sample_next(logits: np.ndarray, rng: np.random.Generator, temperature: float = 0.0,
                top_k: int = 0, top_p: float = 1.0) -> int:
    """Pick the next token from one row of logits.

    ``temperature == 0`` is greedy (argmax, lowest id on ties). Otherwise softmax of
    ``logits / temperature`` restricted to the ``top_k`` most likely tokens (0 = all) and to the
    smallest set whose probability reaches ``top_p``, sampled with ``rng``.
    """
    if not np.all(np.isfinite(logits)):
        raise QuellmError("generate: the model produced non-finite logits")
    if temperature <= 0:
        return int(np.argmax(logits))
    z = logits.astype(np.float64) / temperature
    order = np.argsort(-z, kind="stable")
    if top_k > 0:
        order = order[:top_k]
    p = np.exp(z[order] - z[order[0]])
    p /= p.sum()
    if top_p < 1.0:
        keep = int(np.searchsorted(np.cumsum(p), top_p) + 1)
        order, p = order[:keep], p[:keep] / p[:keep].sum()
    return int(order[rng.choice(len(order), p=p)])


class CausalLM:
    """A causal language model running on quellm's C++ runtime.

    Attributes:
        config: the typed config (:class:`~quellm.io.LlamaConfig` / :class:`~quellm.io.MambaConfig`).
        tokenizer: a ``tokenizers.Tokenizer`` or None.
        path: where it was loaded from (or None).
    """

    family = "base"
    #: Where the forward pass runs: "cpu" (this class) or "cuda" (:class:`quellm.models.gpu.GpuModel`).
    device = "cpu"
    embedding_name = ""
    #: The recipe a quantized model was made with (None: float model).
    recipe: Any = None
    #: Quantized linears by module name (empty for a float model).
    quant_layers: dict[str, Any] = {}
    _tensors: dict[str, Any]

    def __init__(self, config: ModelConfig, tokenizer: Any = None, path: str | os.PathLike[str] | None = None):
        self.config = config
        self.tokenizer = tokenizer
        self.path = Path(path) if path is not None else None

    # ---- device --------------------------------------------------------------------------------
    def to(self, device: str = "cuda", *, dtype: str = "float16", graphs: bool = True) -> "CausalLM":
        """This model on ``device``: ``"cpu"`` (itself), ``"cuda"`` (a new GPU model with the same
        API; weights uploaded once — float layers as ``dtype``, quantized layers packed as they
        are) or ``"auto"`` (the GPU when one is usable, else the CPU with a message on stderr).

        ``dtype``: the GPU activation dtype, "float16" (default), "bfloat16" or "float32" (float
        weights then stay float32 too). ``graphs``: replay
        decode steps from CUDA graphs (also disabled by ``QUELLM_CUDA_GRAPHS=0``).

        Raises:
            QuellmError: ``"cuda"`` without CUDA in this build, without a usable GPU (missing,
                compute capability below 8.0), or out of device memory.
        """
        from .gpu import to_device

        return to_device(self, device, dtype=dtype, graphs=graphs)

    # ---- quantized models ----------------------------------------------------------------------
    def with_quantized(self, tensors: dict[str, np.ndarray], quant: dict[str, Any], recipe: Any) -> "CausalLM":
        """A model of the same family whose linears ``quant`` (name → QuantLinear) run on the
        low-bit kernels; ``tensors`` are the remaining float tensors (norms possibly smoothed)."""
        rt_tensors: dict[str, Any] = {k: v for k, v in tensors.items() if k.removesuffix(".weight") not in quant}
        rt_tensors.update({name + ".weight": q._core for name, q in quant.items()})
        m = type(self)(self.config, rt_tensors, self.tokenizer, self.path)
        m._float_tensors = {k: v for k, v in rt_tensors.items() if isinstance(v, np.ndarray)}
        m.recipe, m.quant_layers = recipe, dict(quant)
        if recipe.kv_bits or recipe.kv_hadamard:
            if not hasattr(m, "set_kv_cache"):
                raise QuellmError(f"recipe {recipe.name}: KV cache quantization needs a model with a KV cache "
                                  f"({self.family} has none)")
            m.set_kv_cache(recipe.kv_bits, recipe.kv_clip, recipe.kv_hadamard)
        return m

    @property
    def nbytes(self) -> int:
        """Bytes of weights the runtime holds (float tensors + packed quantized layers)."""
        floats = getattr(self, "_float_tensors", self._tensors)
        return sum(int(v.nbytes) for v in floats.values()) + sum(q.nbytes for q in self.quant_layers.values())

    def save(self, directory: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
        """Write the model as a checkpoint directory (atomically; an existing directory only with
        ``overwrite``): float tensors and, for a quantized model, the packed low-bit weights and
        the recipe (``quellm_quant.json``). :func:`quellm.load` reads it back."""
        from .quantized import save_model

        return save_model(self, directory, overwrite=overwrite)

    # ---- hooks for the families -------------------------------------------------------------
    @property
    def max_len(self) -> int:
        """Longest sequence (prompt + generation) the model accepts."""
        raise NotImplementedError

    def new_state(self, batch: int = 1, capacity: int | None = None) -> Any:
        """Fresh per-sequence state (KV caches or SSM states) for ``batch`` sequences."""
        raise NotImplementedError

    def _forward(self, tokens: np.ndarray, state: Any, all_logits: bool, observers: Any) -> np.ndarray:
        raise NotImplementedError

    def _layer_states(self, batch: int, capacity: int, n_layers: int) -> list[Any]:
        """Fresh runtime states holding ``n_layers`` consecutive layers."""
        raise NotImplementedError

    #: Name of the final norm's gain and its epsilon (the lm_head reads its output).
    final_norm_name: str = ""

    @property
    def norm_eps(self) -> float:
        raise NotImplementedError

    # ---- shared ------------------------------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        return int(self.config.vocab_size)

    def _check_tokens(self, tokens: Any) -> tuple[np.ndarray, bool]:
        arr = np.asarray(tokens)
        if arr.size == 0:
            raise QuellmError("forward: empty token sequence")
        if arr.dtype.kind not in "iu":
            raise QuellmError(f"forward: token ids must be integers, got dtype {arr.dtype}")
        single = arr.ndim == 1
        if single:
            arr = arr[None, :]
        if arr.ndim != 2:
            raise QuellmError(f"forward: tokens must have shape (T,) or (B, T), got {arr.shape}")
        if (arr.min() < 0 or arr.max() >= self.vocab_size):
            bad = int(arr[(arr < 0) | (arr >= self.vocab_size)][0])
            raise QuellmError(f"forward: token id {bad} out of range [0, {self.vocab_size})")
        return np.ascontiguousarray(arr, dtype=np.int32), single

    def forward(self, tokens: Any, state: Any = None, *, all_logits: bool = True, observers: Any = None) -> np.ndarray:
        """Logits for ``tokens``.

        Args:
            tokens: ids of shape ``(T,)`` or ``(B, T)``.
            state: from :meth:`new_state`; continued in place (prefill, then decode steps).
                Default: a fresh state, used once.
            all_logits: logits for every position ``(…, T, V)``, else for the last ``(…, V)``.
            observers: a ``quellm._core.Observers`` accumulating calibration statistics
                (see :func:`quellm.calibrate`).

        Returns:
            float32 logits; the batch axis is dropped for 1-D ``tokens``.
        """
        arr, single = self._check_tokens(tokens)
        if state is None:
            state = self.new_state(arr.shape[0], arr.shape[1])
        out = self._forward(arr, state, all_logits, observers)
        return out[0] if single else out

    def forward_layers(self, hidden: Any, start: int, stop: int, *, observers: Any = None) -> np.ndarray:
        """Decoder layers ``[start, stop)`` on the residual stream of fresh sequences.

        ``hidden`` is float32 ``(B, T, hidden_size)`` at positions ``0 … T−1`` (for ``start = 0``:
        the token embeddings); returns the stream after layer ``stop − 1`` as a new array (the
        input is not modified). Layer-by-layer calibration and GPTQ use it to carry a
        calibration batch through the network one layer at a time.
        """
        x = np.asarray(hidden)
        L = int(self.config.num_hidden_layers)
        if x.ndim != 3 or x.shape[2] != self.config.hidden_size or x.shape[0] < 1 or x.shape[1] < 1:
            raise QuellmError(f"forward_layers: hidden must have shape (B, T, {self.config.hidden_size}), got {x.shape}")
        if not 0 <= start <= stop <= L:
            raise QuellmError(f"forward_layers: layers [{start}, {stop}) out of range [0, {L}]")
        if x.shape[1] > self.max_len:
            raise QuellmError(f"forward_layers: {x.shape[1]} positions exceed the model's {self.max_len}")
        if stop == start:
            return np.array(x, np.float32)
        states = self._layer_states(x.shape[0], x.shape[1], stop - start)
        return self._rt.forward_layers(np.ascontiguousarray(x, np.float32), states, start, stop, observers)

    # ---- text ---------------------------------------------------------------------------------
    def _need_tokenizer(self) -> Any:
        if self.tokenizer is None:
            raise QuellmError("this model has no tokenizer (no tokenizer.json was found); pass token ids")
        return self.tokenizer

    def encode(self, text: str) -> list[int]:
        return list(self._need_tokenizer().encode(text, add_special_tokens=False).ids)

    def decode(self, ids: Sequence[int]) -> str:
        return self._need_tokenizer().decode(list(ids), skip_special_tokens=False)

    def _eos_ids(self) -> set[int]:
        eos = getattr(self.config, "eos_token_id", None)
        if eos is None:
            return set()
        return set(eos) if isinstance(eos, list) else {int(eos)}

    def generate(
        self,
        prompt: str | Sequence[int],
        max_new_tokens: int = 64,
        *,
        temperature: float = 0.0,
        top_k: int = 0,
        top_p: float = 1.0,
        seed: int = 0,
        stop_at_eos: bool = True,
        stream: Callable[[str], None] | None = None,
    ) -> GenerationResult:
        """Continue ``prompt`` (text, or a list of token ids) by up to ``max_new_tokens`` tokens.

        Greedy by default (``temperature=0``); otherwise sampling with ``top_k`` / ``top_p`` from
        a generator seeded by ``seed`` (same seed, same text). ``stream`` receives each new piece
        of text as it is produced. Returns the new text (a ``str`` subclass carrying ``.tokens``
        and prefill/decode timings).
        """
        ids = self.encode(prompt) if isinstance(prompt, str) else [int(t) for t in prompt]
        if not ids:
            raise QuellmError("generate: empty prompt")
        if max_new_tokens < 0:
            raise QuellmError("generate: max_new_tokens must be >= 0")
        total = len(ids) + max_new_tokens
        if total > self.max_len:
            raise QuellmError(f"generate: prompt ({len(ids)}) + max_new_tokens ({max_new_tokens}) exceeds the "
                              f"model's maximum length {self.max_len}")
        rng = np.random.default_rng(seed)
        state = self.new_state(1, total)
        eos = self._eos_ids() if stop_at_eos else set()
        new: list[int] = []
        t0 = time.perf_counter()
        logits = self.forward(ids, state, all_logits=False) if max_new_tokens else None
        t1 = time.perf_counter()
        text_so_far = ""
        while logits is not None and len(new) < max_new_tokens:
            tok = sample_next(logits, rng, temperature, top_k, top_p)
            new.append(tok)
            if stream is not None and self.tokenizer is not None:
                text = self.decode(new)
                if not text.endswith("\ufffd"):  # wait for the rest of a multi-byte character
                    stream(text[len(text_so_far):])
                    text_so_far = text
            if tok in eos or len(new) == max_new_tokens:
                break
            logits = self.forward([tok], state, all_logits=False)
        t2 = time.perf_counter()
        out = GenerationResult(self.decode(new) if self.tokenizer is not None else "")
        out.tokens = new
        out.prompt_tokens = len(ids)
        out.prefill_seconds = t1 - t0
        out.decode_seconds = t2 - t1
        if stream is not None and self.tokenizer is not None and len(out) > len(text_so_far):
            stream(out[len(text_so_far):])
        return out
