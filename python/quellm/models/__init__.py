"""Model families on the C++ runtime, and :func:`load`."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..errors import CheckpointError
from ..io import LlamaConfig, MambaConfig, load_checkpoint
from .base import CausalLM, GenerationResult, sample_next
from .gpu import GpuModel, GpuSeqState
from .llama import LlamaModel, LlamaState
from .mamba import MambaModel, MambaSeqState
from .quantized import is_quantized_checkpoint, load_quantized

__all__ = ["CausalLM", "GenerationResult", "GpuModel", "GpuSeqState", "LlamaModel", "LlamaState", "MambaModel", "MambaSeqState", "load", "sample_next"]


def _tokenizer(path: Path | None) -> Any:
    if path is None:
        return None
    from tokenizers import Tokenizer

    try:
        return Tokenizer.from_file(str(path))
    except Exception as e:  # tokenizers raises its own Exception type
        raise CheckpointError(f"{path}: cannot load tokenizer: {e}") from None


def load(path: str | os.PathLike[str], device: str = "cpu", *, dtype: str = "float16", graphs: bool = True) -> CausalLM:
    """Load a model: a Hugging Face directory (config.json + safetensors + optional
    tokenizer.json) or a ``.gguf`` file (llama/qwen2 architectures; dequantized to float32 in
    memory — ``quellm convert`` writes it out once instead).

    A directory written by ``model.save()`` after :func:`quellm.quantize` loads as the
    quantized model, running on the low-bit kernels.

    Supported: ``LlamaForCausalLM``, ``MistralForCausalLM``, ``Qwen2ForCausalLM``,
    ``MambaForCausalLM``.

    ``device``: ``"cpu"`` (default), ``"cuda"`` (the GPU runtime; ``dtype`` and ``graphs`` as in
    :meth:`CausalLM.to`) or ``"auto"`` (the GPU when one is usable, else the CPU with a message).

    Raises:
        CheckpointError: anything wrong with the files, or an architecture quellm cannot run.
        QuellmError: ``device="cuda"`` without a usable GPU or CUDA build, or out of GPU memory.
    """
    from .gpu import _check_device, resolve_device

    dev = _check_device(device)
    if dev == "cuda":
        from .gpu import require_gpu

        require_gpu()  # fail before reading the checkpoint
    model = _load_cpu(path)
    if dev == "cpu" or (dev == "auto" and resolve_device("auto") == "cpu"):
        return model
    return model.to("cuda" if dev == "cuda" else "auto", dtype=dtype, graphs=graphs)


def _load_cpu(path: str | os.PathLike[str]) -> CausalLM:
    p = Path(path)
    if p.suffix.lower() == ".gguf" and p.is_file():
        from tokenizers import Tokenizer

        from ..io import parse_config, read_gguf

        config, tensors, tok_json = read_gguf(p)
        cfg = parse_config(config, str(p))
        assert isinstance(cfg, LlamaConfig)
        return LlamaModel(cfg, tensors, Tokenizer.from_str(tok_json) if tok_json else None, p)
    if is_quantized_checkpoint(p):
        return load_quantized(p, _tokenizer(p / "tokenizer.json" if (p / "tokenizer.json").is_file() else None),
                              {"LlamaConfig": LlamaModel, "MambaConfig": MambaModel})
    ckpt = load_checkpoint(path)
    tok = _tokenizer(ckpt.tokenizer_path)
    if isinstance(ckpt.config, LlamaConfig):
        return LlamaModel.from_checkpoint(ckpt, tok)
    assert isinstance(ckpt.config, MambaConfig)
    return MambaModel.from_checkpoint(ckpt, tok)
