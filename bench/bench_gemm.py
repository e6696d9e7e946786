"""Low-bit GEMM/GEMV throughput against numpy f32 `x @ W.T` (BLAS) measured in the same run.

For each shape M x K -> N and each QuantLinear kernel (W4A16, W8A16 weight-only; W4A8, W8A8, W4A4
integer; group 128 weights (96 where 128 does not divide K), per-token activations): GOPS (2·M·N·K / time) and the ratio to numpy
(>1 = faster). Times include the activation quantization (the whole QuantLinear.forward). At
M = 1 the W4A8 weight traffic in GB/s is shown too. `f32` is the runtime's own float GEMM.

Usage: python bench/bench_gemm.py [--threads N] [--group G] [--kernels w4a8,w8a8,...]

`--device cuda`: the device linear layer (quellm.cuda.Linear, cuda/gemm*.cu) with float16
activations instead: per shape and kernel GOPS, GB/s of weight traffic (device bytes held / time)
and the ratio to the float16 tensor-core kernel (`f16`, float weights) of the same run. Each
kernel's output is first checked against the CPU QuantLinear.forward. Times are per forward
(a batch of forwards queued on the default stream, then one synchronize), including the
activation quantization. Errors out when no CUDA device is usable.
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
CUDA_KERNELS = {"f16": ("f32", "none"), **KERNELS, "wmx4amx4": ("mxfp4", "mxfp4"), "wovp4a8": ("ovp4", "int8")}


def bench_cuda(args: argparse.Namespace) -> None:
    from quellm import cuda

    ok, why = quellm.cuda_available()
    if not ok:
        raise SystemExit(f"bench_gemm --device cuda: no usable CUDA device ({why})")
    kernels = ["f16"] + [k for k in (args.kernels.split(",") if args.kernels else CUDA_KERNELS) if k != "f16"]
    for k in kernels:
        if k not in CUDA_KERNELS:
            raise SystemExit(f"bench_gemm: unknown kernel {k!r}; choose from {', '.join(CUDA_KERNELS)}")
    header(f"bench_gemm --device cuda: quellm.cuda.Linear, float16 activations, g{args.group} weights "
           f"(MX: 32, OVP: per row), ratio to the f16 kernel")
    rng = np.random.default_rng(0)
    rows = []
    for M, K, N in SHAPES:
        x = rng.standard_normal((M, K)).astype(np.float32)
        W = rng.standard_normal((N, K)).astype(np.float32)
        xh = x.astype(np.float16)
        xd = cuda.to_device(xh)
        out = cuda.DeviceArray([M, N], "float16")
        ops = 2.0 * M * N * K
        t_f16 = None
        for name in kernels:
            wf, af = CUDA_KERNELS[name]
            group = None if wf in ("f32", "ovp4") else 32 if "mxfp4" in (wf, af) else fit_group(args.group, K)
            ql = QuantLinear(W, spec=LinearSpec(w_format=wf, a_format=af, group=group))
            lin = cuda.Linear(ql, act="float16")
            lin(xd, out)  # allocates the workspace
            got = cuda.to_host(out)[:4].astype(np.float32)
            want = ql(xh[:4].astype(np.float32))
            assert np.abs(got - want).max() <= 2e-2 * np.abs(want).max(), f"{name}: device result differs from the CPU"
            dev, wp = lin._dev, (lin._ws[M].ptr if lin._ws else 0)
            reps = 20

            def run() -> None:
                for _ in range(reps):
                    dev.forward(xd.ptr, M, out.ptr, wp, 0)
                _core.cuda_synchronize()

            t = timeit(run, min_time=0.3)[0] / reps
            t_f16 = t if name == "f16" else t_f16
            rows.append([f"{M}x{K}->{N}", name, lin.kernel, ops / t / 1e9, lin.nbytes / t / 1e9, t_f16 / t, t * 1e6])
    table(["shape", "kernel", "device", "GOPS", "W GB/s", "vs f16", "us"], rows, [16, 9, 9, 9, 9, 7, 9])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--group", type=int, default=128)
    ap.add_argument("--kernels", default=None)
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    args = ap.parse_args()
    if args.device == "cuda":
        bench_cuda(args)
        return
    args.kernels = args.kernels or ",".join(KERNELS)
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
