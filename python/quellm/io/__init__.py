"""Checkpoint input and output: Hugging Face directories (safetensors), typed configs, and GGUF
import (:mod:`quellm.io.gguf`, needs the optional ``gguf`` package only when called)."""

from .checkpoint import DTYPES, Checkpoint, TensorInfo, load_checkpoint, save_checkpoint
from .config import (
    LLAMA_ARCHITECTURES,
    MAMBA_ARCHITECTURES,
    SUPPORTED_ARCHITECTURES,
    LlamaConfig,
    MambaConfig,
    ModelConfig,
    RopeConfig,
    parse_config,
    read_config,
)
from .gguf import convert_gguf, find_smollm2_gguf, read_gguf

__all__ = [
    "DTYPES",
    "LLAMA_ARCHITECTURES",
    "MAMBA_ARCHITECTURES",
    "SUPPORTED_ARCHITECTURES",
    "Checkpoint",
    "LlamaConfig",
    "MambaConfig",
    "ModelConfig",
    "RopeConfig",
    "TensorInfo",
    "convert_gguf",
    "find_smollm2_gguf",
    "load_checkpoint",
    "parse_config",
    "read_config",
    "read_gguf",
    "save_checkpoint",
]
