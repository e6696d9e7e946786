"""Shared helpers for quellm benchmarks: timing, a fixed-width table, machine header.

Benchmarks validate one output against a reference first, then time with warm-up, and report
ratios against a baseline measured in the same run (these machines are noisy). They are never
part of pytest.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence

import quellm


def timeit(fn: Callable[[], object], *, min_time: float = 0.2, min_reps: int = 5, warmup: int = 2,
           settle: float = 0.15) -> tuple[float, float]:
    """(median, min) seconds per call over at least ``min_reps`` calls and ``min_time`` seconds.

    Sleeps ``settle`` seconds first: the worker threads of whatever ran before (OpenBLAS behind
    numpy, quellm's OpenMP pool) spin for a while after their last job, and on a small machine
    they would take cores from the function being timed."""
    time.sleep(settle)
    for _ in range(warmup):
        fn()
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < min_reps or time.perf_counter() - start < min_time:
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), min(times)


def header(title: str) -> None:
    d = quellm.info()
    print(f"# {title}")
    print(f"# quellm {d['version']}, ISA {d['isa']['active']}, threads {d['threads']}, "
          f"CUDA {'available' if d['cuda']['available'] else 'not available'}")


def table(columns: Sequence[str], rows: Sequence[Sequence[object]], widths: Sequence[int] | None = None,
          show_header: bool = True) -> None:
    widths = widths or [max(len(c), 9) for c in columns]
    if show_header:
        print("  ".join(f"{c:>{w}}" for c, w in zip(columns, widths)))
    for r in rows:
        cells = []
        for v, w in zip(r, widths):
            cells.append(f"{v:>{w}.3g}" if isinstance(v, float) else f"{v!s:>{w}}")
        print("  ".join(cells), flush=True)
