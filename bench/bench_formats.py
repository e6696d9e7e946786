"""Quantization error of every number format, on Gaussian data and on data with outlier
channels — the table that shows why outlier-aware formats exist — plus the throughput of the
numpy twins against a numpy copy of the same bytes (the C++ encoders will be timed here too).

Data: (rows, 4096) float32. "gaussian": N(0, 1). "outliers": the same, with 0.1 % of the
channels (columns) multiplied by 100, as LLM activations have. Error columns: NMSE and max
|error| / max |x| of decode(encode(x)), blocks/groups along the last axis; "NMSE normal" is the
error on the outlier set's normal channels only — what a per-row scale sacrifices to the outliers.

Throughput: encode and decode GB/s (float32 bytes in / out) of the C++ kernels on --mb MiB
of N(0,1) data (rows of 4096, blocks along the rows) and of the numpy twin on a 1/16 slice of
it (the twin is slow), against a numpy copy of the same bytes timed in the same run: "x copy"
is kernel GB/s / copy GB/s. C++ output is checked bit-exact against the twin on the slice
first. OVP is timed with its scale given (the scale search is calibration, not the kernel).

Usage: python bench/bench_formats.py [--rows 256] [--mb 64] [--skip-error]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from common import header, table, timeit  # noqa: E402

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


def label_of(name: str, params: dict) -> str:
    return name + ("" if not params else "(" + ",".join(f"{k}={v}" for k, v in params.items()) + ")")


def throughput(mb: int) -> None:
    header(f"bench_formats: encode / decode throughput, C++ vs numpy twin vs numpy copy ({mb} MiB f32)")
    K = 4096
    rows = max(16, mb * (1 << 20) // (4 * K))
    x = np.random.default_rng(1).standard_normal((rows, K)).astype(np.float32)
    xs = x[: rows // 16]
    out = np.empty_like(x)
    t_copy = timeit(lambda: np.copyto(out, x))[0]
    gb = x.nbytes / 1e9
    copy_gbs = gb / t_copy
    print(f"# numpy copy of the same {x.nbytes >> 20} MiB: {copy_gbs:.2f} GB/s; numpy twin timed on {xs.nbytes >> 20} MiB")
    res = []
    for name, params in CONFIGS:
        f = formats.get(name, **params)
        kw = {}
        if f.info.family == "ovp":  # the kernel, with the scale the search would give on the slice
            kw = {"scale": np.float32(f.encode(xs[:8], backend="cpp").scales.mean())}
        want = f.encode(xs, backend="numpy", **kw)
        got = f.encode(xs, backend="cpp", **kw)
        assert np.array_equal(want.codes, got.codes) and np.array_equal(want.scales, got.scales), label_of(name, params)
        assert np.array_equal(want.decode(backend="numpy").view(np.uint32), want.decode(backend="cpp").view(np.uint32))
        p = f.encode(x, backend="cpp", **kw)
        t_enc = timeit(lambda: f.encode(x, backend="cpp", **kw))[0]
        t_dec = timeit(lambda: p.decode(backend="cpp"))[0]
        t_enc_np = timeit(lambda: f.encode(xs, backend="numpy", **kw), min_time=0.1, min_reps=2, warmup=1)[0]
        t_dec_np = timeit(lambda: want.decode(backend="numpy"), min_time=0.1, min_reps=2, warmup=1)[0]
        enc, dec = gb / t_enc, gb / t_dec
        enc_np, dec_np = xs.nbytes / 1e9 / t_enc_np, xs.nbytes / 1e9 / t_dec_np
        res.append([label_of(name, params), enc, enc / copy_gbs, enc / enc_np, dec, dec / copy_gbs, dec / dec_np,
                    enc_np, dec_np])
        table(["format", "enc GB/s", "enc x copy", "enc x numpy", "dec GB/s", "dec x copy", "dec x numpy",
               "np enc GB/s", "np dec GB/s"], res[-1:], [28, 9, 10, 11, 9, 10, 11, 11, 11], show_header=len(res) == 1)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=256)
    ap.add_argument("--mb", type=int, default=64)
    ap.add_argument("--skip-error", action="store_true")
    args = ap.parse_args()
    throughput(args.mb)
    if args.skip_error:
        return
    header("bench_formats: round-trip error (C++ kernels, = numpy twins bit for bit)")
    K = 4096
    sets = {"gaussian": data(args.rows, K, False), "outliers": data(args.rows, K, True)}
    out = np.empty_like(sets["gaussian"][0])
    t0 = time.perf_counter()
    np.copyto(out, sets["gaussian"][0])
    t_copy = time.perf_counter() - t0
    rows = []
    for name, params in CONFIGS:
        f = formats.get(name, **params)
        label = label_of(name, params)
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
    table(["format", "bits", "NMSE gauss", "maxerr gauss", "NMSE outl", "maxerr outl", "NMSE normal", "qdq x copy"],
          rows, [28, 5, 11, 12, 11, 12, 12, 14])


if __name__ == "__main__":
    main()
