"""FWHT throughput against memcpy and a numpy butterfly, measured in the same run.

For each n: a batch that fits in L2 (~256 KiB) and a 64 MiB batch (out of cache). Columns:
  us/row     median time per row (out-of-cache batch)
  GB/s       bytes read + written per second, out of cache
  x copy     numpy copy of the same bytes (same run) time / FWHT time: >= 0.7 is the target
  L2 GB/s    in-L2 batch
  x np-bfly  numpy butterfly time / FWHT time, in L2: >= 20 is the target
  x 2^k      FWHT time per element / time per element of the next power of two (non-powers of
             two only): <= 1.5 for m <= 60, <= 3 for m >= 108

Usage: python bench/bench_fwht.py [--threads N] [--quick]
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from common import header, table, timeit  # noqa: E402

import quellm  # noqa: E402
from quellm.fwht import fwht  # noqa: E402
from quellm.hadamard import decompose, hadamard_factor  # noqa: E402

POW2 = [2**k for k in range(7, 16)]
MODEL = [576, 960, 1536, 2560, 2816, 4864, 5120, 5632, 11008, 13824, 14336, 18944, 27648, 28672]


def numpy_butterfly(x: np.ndarray) -> np.ndarray:
    """The plain numpy FWHT: H_m mixing as a matmul, then one vectorised numpy op per stage."""
    rows, n = x.shape
    m, p = decompose(n)
    y = x.reshape(rows, m, p)
    if m > 1:
        y = np.einsum("ac,rcb->rab", hadamard_factor(m).astype(np.float32), y)
    h = 1
    while h < p:
        y = y.reshape(rows, m, p // (2 * h), 2, h)
        a, b = y[:, :, :, 0, :], y[:, :, :, 1, :]
        y = np.stack([a + b, a - b], axis=3)
        h *= 2
    return y.reshape(rows, n) / np.float32(math.sqrt(n))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--quick", action="store_true", help="fewer sizes, shorter timing")
    args = ap.parse_args()
    if args.threads:
        quellm.set_num_threads(args.threads)
    header("bench_fwht: f32 Walsh-Hadamard transform, last axis")
    sizes = sorted(set(POW2 + MODEL)) if not args.quick else [128, 1024, 4096, 11008, 14336, 16384]
    rng = np.random.default_rng(0)
    min_time = 0.05 if args.quick else 0.2
    per_elem: dict[int, float] = {}
    rows_out = []
    for n in sizes:
        big_rows = max(1, (64 << 20) // (4 * n))
        l2_rows = max(1, (256 << 10) // (4 * n))
        x = rng.standard_normal((big_rows, n)).astype(np.float32)
        out = np.empty_like(x)
        xs = np.ascontiguousarray(x[:l2_rows])
        outs = np.empty_like(xs)
        # validate before timing
        ref = numpy_butterfly(xs[:2].astype(np.float64).astype(np.float32))
        got = fwht(xs[:2])
        err = float(np.max(np.abs(got - ref)) / max(1e-30, float(np.max(np.abs(ref)))))
        assert err < 1e-5, f"n={n}: relative error {err}"

        t_copy, _ = timeit(lambda: np.copyto(out, x), min_time=min_time)
        t_big, _ = timeit(lambda: fwht(x, out=out), min_time=min_time)
        t_l2, _ = timeit(lambda: fwht(xs, out=outs), min_time=min_time)
        t_np, _ = timeit(lambda: numpy_butterfly(xs), min_time=min_time, min_reps=3)
        per_elem[n] = t_big / x.size
        rows_out.append([n, decompose(n)[0], t_big / big_rows * 1e6, 2 * x.nbytes / t_big / 1e9,
                         t_copy / t_big, 2 * xs.nbytes / t_l2 / 1e9, t_np / t_l2])
    final = []
    for r in rows_out:
        n, m = r[0], r[1]
        if m > 1:
            nxt = 1 << math.ceil(math.log2(n))
            if nxt not in per_elem:
                xn = rng.standard_normal((max(1, (64 << 20) // (4 * nxt)), nxt)).astype(np.float32)
                on = np.empty_like(xn)
                per_elem[nxt] = timeit(lambda: fwht(xn, out=on), min_time=min_time)[0] / xn.size
            r = r + [per_elem[n] / per_elem[nxt]]
        else:
            r = r + ["-"]
        final.append(r)
    table(["n", "m", "us/row", "GB/s", "x copy", "L2 GB/s", "x np-bfly", "x 2^k"], final,
          [6, 4, 9, 7, 7, 8, 9, 6])


if __name__ == "__main__":
    main()
