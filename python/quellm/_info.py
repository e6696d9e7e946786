"""Build, ISA, CUDA and thread information (``quellm.info()`` and ``quellm info``)."""

from __future__ import annotations

import os
import platform
from typing import Any

from . import _core

_ISA_ENV = "QUELLM_ISA"


def cuda_available() -> tuple[bool, str]:
    """Whether a CUDA device can be used, and if not, why.

    Returns:
        ``(True, "<device name>")`` or ``(False, "<reason>")``. Never raises: a build without
        CUDA, a machine without a driver and a machine without a GPU all give ``False``.
    """
    c = _core.cuda_info()
    if c["available"]:
        return True, c["device_name"]
    return False, c["reason"]


def info() -> dict[str, Any]:
    """A dictionary describing this quellm build and the machine it runs on.

    Keys: ``version``, ``python``, ``isa`` (``hardware``, ``compiled``, ``usable``, ``active``,
    ``env`` — the ``QUELLM_ISA`` value, and ``env_error`` if it was not understood),
    ``cpu_features``, ``threads``, ``cuda`` (``compiled``, ``available``, ``reason``, and the
    device name, compute capability and memory when available).
    """
    env = os.environ.get(_ISA_ENV)
    isa: dict[str, Any] = {
        "hardware": _core.hardware_isa(),
        "compiled": list(_core.compiled_isas()),
        "usable": list(_core.isa_levels()),
        "active": _core.active_isa(),
        "env": env,
    }
    if env and env not in ("scalar", "avx2", "avx512"):
        isa["env_error"] = f"{_ISA_ENV}={env!r} ignored: expected scalar, avx2 or avx512"
    return {
        "version": _core.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "isa": isa,
        "cpu_features": dict(_core.cpu_features()),
        "threads": _core.num_threads(),
        "cuda": dict(_core.cuda_info()),
    }


def format_info(d: dict[str, Any] | None = None) -> str:
    """``info()`` as the lines ``quellm info`` prints."""
    d = info() if d is None else d
    isa = d["isa"]
    lines = [
        f"quellm {d['version']} (Python {d['python']}, {d['machine']})",
        f"ISA: active {isa['active']} | hardware {isa['hardware']} | "
        f"compiled {', '.join(isa['compiled'])} | usable {', '.join(isa['usable'])}"
        + (f" | QUELLM_ISA={isa['env']}" if isa["env"] else ""),
    ]
    if "env_error" in isa:
        lines.append(f"  warning: {isa['env_error']}")
    feats = [k for k, v in d["cpu_features"].items() if v and not k.startswith("os_")]
    lines.append(f"CPU features: {' '.join(feats) if feats else '(none detected)'}")
    lines.append(f"Threads: {d['threads']}")
    c = d["cuda"]
    if not c["compiled"]:
        lines.append(f"CUDA: not compiled ({c['reason']})")
    elif c["available"]:
        cc = c["compute_capability"]
        lines.append(
            f"CUDA: compiled, available: {c['device_name']} (sm_{cc[0]}{cc[1]}, "
            f"{c['total_memory'] / 2**30:.1f} GiB), {c['device_count']} device(s), "
            f"runtime {_cuda_version(c['runtime_version'])}, driver {_cuda_version(c['driver_version'])}"
        )
    else:
        lines.append(
            f"CUDA: compiled (runtime {_cuda_version(c['runtime_version'])}), not available: {c['reason']}"
        )
    return "\n".join(lines)


def _cuda_version(v: int) -> str:
    return f"{v // 1000}.{(v % 1000) // 10}" if v else "none"
