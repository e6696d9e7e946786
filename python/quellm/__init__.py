"""quellm — low-bit LLM and Mamba inference despite outlier channels.

Kernels (Hadamard transforms, outlier-aware number formats, low-bit GEMM) and a Llama/Mamba
runtime in C++ (and CUDA), with a thin numpy layer for checkpoints, calibration and
quantization recipes. No PyTorch at run time.
"""

from __future__ import annotations

import os as _os

# OpenMP threads that finish a region spin before sleeping; GNU OpenMP's default spin is long
# enough that, when another process holds a core, every barrier of a decode step waits a
# scheduler time slice (measured: 12x slower decode with 2 threads on a busy 2-core machine).
# A short spin keeps the quiet-machine speed and removes that cliff. Set GOMP_SPINCOUNT or
# OMP_WAIT_POLICY yourself to override; it must happen before the extension loads.
if "GOMP_SPINCOUNT" not in _os.environ and "OMP_WAIT_POLICY" not in _os.environ:
    _os.environ["GOMP_SPINCOUNT"] = "10000"

from . import _core  # noqa: E402
from ._info import cuda_available, format_info, info
from .errors import CheckpointError, ConfigError, QuellmError
from .io import Checkpoint, load_checkpoint, save_checkpoint
from .calibrate import PointStats, Stats, calibrate
from .eval import compare, perplexity
from .fwht import fwht, fwht_sizes
from .models import CausalLM, load
from . import recipes
from .quant import LinearSpec, QuantLinear
from .recipes import Recipe, quantize
from .report import report

__version__: str = _core.__version__
HAS_CUDA: bool = _core.HAS_CUDA


def set_num_threads(n: int) -> None:
    """Set the number of threads quellm's kernels use (``n >= 1``)."""
    _core.set_num_threads(int(n))


def num_threads() -> int:
    """The number of threads quellm's kernels use."""
    return _core.num_threads()


def set_isa(name: str) -> str:
    """Cap the SIMD level the kernels use: ``"scalar"``, ``"avx2"`` or ``"avx512"``.

    The level is clamped to what this CPU and build support; the level now in use is returned.
    The ``QUELLM_ISA`` environment variable sets the same cap at import.
    """
    return _core.set_isa(name)


def isa() -> str:
    """The SIMD level the kernels use now."""
    return _core.active_isa()


def isa_levels() -> list[str]:
    """The SIMD levels usable on this machine with this build, lowest first."""
    return list(_core.isa_levels())


__all__ = [
    "HAS_CUDA",
    "CausalLM",
    "Checkpoint",
    "CheckpointError",
    "ConfigError",
    "LinearSpec",
    "PointStats",
    "QuantLinear",
    "QuellmError",
    "Recipe",
    "Stats",
    "__version__",
    "calibrate",
    "compare",
    "cuda_available",
    "format_info",
    "fwht",
    "fwht_sizes",
    "info",
    "isa",
    "isa_levels",
    "load",
    "load_checkpoint",
    "num_threads",
    "perplexity",
    "quantize",
    "recipes",
    "report",
    "save_checkpoint",
    "set_isa",
    "set_num_threads",
]
