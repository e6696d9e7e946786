"""Quantization error of every number format, on Gaussian data and on data with outlier
channels — the table that shows why outlier-aware formats exist — plus the throughput of the
numpy twins against a numpy copy of the same bytes (the C++ encoders will be timed here too).

Data: (rows, 4096) float32. "gaussian": N(0, 1). "outliers": the same, with 0.1 % of the
channels (columns) multiplied by 100, as LLM activations have. Error columns: NMSE and max
|error| / max |x| of decode(encode(x)), blocks/groups along the last axis; "NMSE normal" is the
error on the outlier set's normal channels only — what a per-row scale sacrifices to the outliers.

Usage: python bench/bench_formats.py [--rows 256]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from common import header, table  # noqa: E402

from quellm import formats  # noqa: E402

CONFIGS = [
    ("int8", {}), ("int4", {}), ("int4", {"group": 128}), ("int4", {"group": 32}),
    ("ovp4", {}), ("ovp4_flint", {}), ("ovp8", {}),
    ("mxfp8_e4m3", {}), ("mxfp8_e5m2", {}), ("mxfp6_e3m2", {}), ("mxfp6_e2m3", {}), ("mxfp4", {}), ("mxint8", {}),
    ("nvfp4", {}), ("bfp", {}), ("bfp", {"mantissa_bits": 8, "block": 32}),
]


def data(rows: int, k: int, outliers: bool, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(x, mask of the normal — non-outlier — columns)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((rows, k)).astype(np.float32)
    normal = np.ones(k, bool)
    if outliers:
        cols = rng.choice(k, max(1, k // 1000), replace=False)
        x[:, cols] *= 100
        normal[cols] = False
    return x, normal


def nmse(err: np.ndarray, x: np.ndarray) -> float:
    return float(np.sum(err.astype(np.float64) ** 2) / np.sum(x.astype(np.float64) ** 2))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=256)
    args = ap.parse_args()
    header("bench_formats: round-trip error (numpy twins)")
    K = 4096
    sets = {"gaussian": data(args.rows, K, False), "outliers": data(args.rows, K, True)}
    out = np.empty_like(sets["gaussian"][0])
    t0 = time.perf_counter()
    np.copyto(out, sets["gaussian"][0])
    t_copy = time.perf_counter() - t0
    rows = []
    for name, params in CONFIGS:
        f = formats.get(name, **params)
        label = name + ("" if not params else "(" + ",".join(f"{k}={v}" for k, v in params.items()) + ")")
        row: list[object] = [label, f"{f.bits_per_element:.2f}"]
        for key, (x, normal) in sets.items():
            t0 = time.perf_counter()
            y = f.quantize_dequantize(x)
            dt = time.perf_counter() - t0
            err = y.astype(np.float64) - x
            row += [nmse(err, x), float(np.abs(err).max() / np.abs(x).max())]
            if key == "outliers":
                row.append(nmse(err[:, normal], x[:, normal]))
        row.append(t_copy / dt)
        rows.append(row)
    table(["format", "bits", "NMSE gauss", "maxerr gauss", "NMSE outl", "maxerr outl", "NMSE normal", "x copy (numpy)"],
          rows, [28, 5, 11, 12, 11, 12, 12, 14])


if __name__ == "__main__":
    main()
