"""Checkpoint input and output: Hugging Face directories (safetensors) and typed configs."""

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
    "load_checkpoint",
    "parse_config",
    "read_config",
    "save_checkpoint",
]
