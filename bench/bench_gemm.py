"""Low-bit GEMM/GEMV throughput against numpy f32 `x @ W.T` (BLAS) measured in the same run.

For each shape M x K -> N: GOPS (2·M·N·K / time), GB/s of weight traffic at M = 1, and the ratio
to numpy. W4A8 = int4 weights (group 128 scales) × per-token int8 activations; the time includes
quantizing the activations. Also the f32 kernel of the runtime (quellm matmul_f32).

Usage: python bench/bench_gemm.py [--threads N]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from common import header, table, timeit  # noqa: E402

import quellm  # noqa: E402
from quellm import _core  # noqa: E402

SHAPES = [(1, 576, 1536), (1, 1536, 576), (1, 4096, 4096), (1, 4096, 11008), (512, 576, 1536), (512, 4096, 11008)]


def pack_int4(q: np.ndarray) -> np.ndarray:
    u = (q.astype(np.int16) & 0xF).astype(np.uint8)
    return (u[:, 0::2] | (u[:, 1::2] << 4)).astype(np.uint8)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--group", type=int, default=128)
    args = ap.parse_args()
    if args.threads:
        quellm.set_num_threads(args.threads)
    header(f"bench_gemm: W4A8 (int4 g{args.group} x int8 per token) and f32, vs numpy f32 BLAS")
    rng = np.random.default_rng(0)
    rows = []
    for M, K, N in SHAPES:
        x = rng.standard_normal((M, K)).astype(np.float32)
        W = rng.standard_normal((N, K)).astype(np.float32)
        qw = rng.integers(-8, 8, (N, K)).astype(np.int8)
        sw = rng.uniform(0.001, 0.01, (N, K // args.group)).astype(np.float32)
        w4 = _core.gemm_w4_repack(pack_int4(qw), sw)
        # validate one product against the integer reference before timing
        qa, sa = _core.quantize_rows_int8(x[:1])
        ref = _core.gemm_w4a8(qa, sa, w4, ref=True)
        assert np.array_equal(_core.gemm_w4a8(qa, sa, w4), ref)

        def w4a8() -> None:
            q, s = _core.quantize_rows_int8(x)
            _core.gemm_w4a8(q, s, w4)

        t_np, _ = timeit(lambda: x @ W.T)
        t_w4, _ = timeit(w4a8)
        t_f32, _ = timeit(lambda: _core.matmul_f32(x, W))
        ops = 2.0 * M * N * K
        wbytes = w4.nbytes
        rows.append([f"{M}x{K}->{N}", ops / t_np / 1e9, ops / t_f32 / 1e9, ops / t_w4 / 1e9,
                     (wbytes / t_w4 / 1e9) if M == 1 else "-", t_np / t_f32, t_np / t_w4])
    table(["shape", "numpy GF", "f32 GF", "W4A8 GOPS", "W4A8 GB/s", "f32/np", "W4A8/np"], rows,
          [16, 9, 8, 10, 10, 7, 8])


if __name__ == "__main__":
    main()
