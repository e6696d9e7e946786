"""Low-bit GEMM/GEMV throughput against numpy f32 `x @ W.T` (BLAS) measured in the same run.

For each shape M x K -> N and each QuantLinear kernel (W4A16, W8A16 weight-only; W4A8, W8A8, W4A4
integer; group 128 weights (96 where 128 does not divide K), per-token activations): GOPS (2·M·N·K / time) and the ratio to numpy
(>1 = faster). Times include the activation quantization (the whole QuantLinear.forward). At
M = 1 the W4A8 weight traffic in GB/s is shown too. `f32` is the runtime's own float GEMM.

Usage: python bench/bench_gemm.py [--threads N] [--group G] [--kernels w4a8,w8a8,...]
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
from quellm.quant import LinearSpec, QuantLinear, fit_group  # noqa: E402

SHAPES = [(1, 576, 1536), (1, 1536, 576), (1, 4096, 4096), (1, 4096, 11008), (512, 576, 1536), (512, 4096, 11008)]
KERNELS = {"w4a16": ("int4", "none"), "w8a16": ("int8", "none"), "w4a8": ("int4", "int8"),
           "w8a8": ("int8", "int8"), "w4a4": ("int4", "int4")}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--group", type=int, default=128)
    ap.add_argument("--kernels", default=",".join(KERNELS))
    args = ap.parse_args()
    if args.threads:
        quellm.set_num_threads(args.threads)
    kernels = args.kernels.split(",")
    header(f"bench_gemm: QuantLinear kernels (g{args.group} weights, per-token activations) vs numpy f32 BLAS")
    rng = np.random.default_rng(0)
    rows = []
    for M, K, N in SHAPES:
        x = rng.standard_normal((M, K)).astype(np.float32)
        W = rng.standard_normal((N, K)).astype(np.float32)
        t_np, _ = timeit(lambda: x @ W.T)
        ops = 2.0 * M * N * K
        t_f32, _ = timeit(lambda: _core.matmul_f32(x, W))
        row: list[object] = [f"{M}x{K}->{N}", ops / t_np / 1e9, t_np / t_f32]
        for name in kernels:
            wf, af = KERNELS[name]
            ql = QuantLinear(W, spec=LinearSpec(w_format=wf, a_format=af, group=fit_group(args.group, K)))
            y = ql(x[:2])
            assert np.allclose(y, ql.simulate(x[:2]), rtol=1e-4, atol=1e-3 * np.abs(y).max())
            t, _ = timeit(lambda: ql(x))
            row.append(t_np / t)
            if name == "w4a8":
                row.insert(3, ops / t / 1e9)
                row.insert(4, ql.nbytes / t / 1e9 if M == 1 else "-")
        rows.append(row)
    cols = ["shape", "numpy GF", "f32/np"]
    if "w4a8" in kernels:
        cols += ["W4A8 GOPS", "W4A8 GB/s"]
    table(cols + [f"{k}/np" for k in kernels], rows, [16, 9, 7] + ([10, 10] if "w4a8" in kernels else []) + [9] * len(kernels))


if __name__ == "__main__":
    main()
