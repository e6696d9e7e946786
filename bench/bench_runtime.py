"""Runtime throughput: prefill and decode tokens/s at 1 and 2 threads, or on the GPU.

Models:
  --model PATH     a Hugging Face directory (e.g. SmolLM2-135M converted by `quellm convert`)
  --mamba-130m     a randomly initialised Mamba with the mamba-130m configuration
                   (d_model 768, 24 layers, vocab 50280) — no real Mamba weights are reachable
                   here; the speed does not depend on the values.

Prefill: one forward pass over --prefill tokens (default 512). Decode: --decode single-token
steps (default 128) after a short prompt, with the KV cache / SSM state carried.

Usage: python bench/bench_runtime.py --model DIR [--mamba-130m] [--threads 1,2]

GPU (--device cuda): prefill and decode tokens/s at batch 1 and 16 (--batch), device memory
(weights, state, and the device's used memory), and where the time goes: a per-kernel-kind
breakdown timed with CUDA events (one profiled prefill and decode run, without graphs). With
--recipes the model is also quantized (e.g. "float,w4a16,w4a8,quarot:gptq=false" for float, W4A16,
W4A8 and W4A4KV4) and each variant is measured. Without a usable GPU it stops with the reason.
The lm_head runs in the activation dtype (logits widened to f32 afterwards); QUELLM_CUDA_F32_HEAD=1
runs it with f32 activations and weights instead (f32 logits, twice the head's bytes per step).

  python bench/bench_runtime.py --device cuda --model SmolLM2-135M --recipes float,w4a16,w4a8,quarot:gptq=false \
      --mamba-130m
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from common import header, table  # noqa: E402

import quellm  # noqa: E402
from quellm.io import parse_config  # noqa: E402
from quellm.models import MambaModel  # noqa: E402

MAMBA_130M = {
    "architectures": ["MambaForCausalLM"], "hidden_size": 768, "num_hidden_layers": 24, "state_size": 16,
    "expand": 2, "intermediate_size": 1536, "conv_kernel": 4, "time_step_rank": 48, "vocab_size": 50280,
    "layer_norm_epsilon": 1e-5, "use_bias": False, "use_conv_bias": True, "tie_word_embeddings": True,
}


def random_mamba_130m() -> MambaModel:
    cfg = parse_config(MAMBA_130M)
    req, _ = cfg.tensor_shapes()
    rng = np.random.default_rng(0)
    t = {}
    for name, shape in req.items():
        if name.endswith("A_log"):
            t[name] = np.log(np.broadcast_to(np.arange(1, shape[1] + 1, dtype=np.float32), shape)).copy()
        elif name.endswith("dt_proj.bias"):
            t[name] = np.full(shape, -4.0, np.float32)
        elif name.endswith("norm.weight") or name.endswith("norm_f.weight") or name.endswith(".D"):
            t[name] = np.ones(shape, np.float32)
        else:
            t[name] = (rng.standard_normal(shape, dtype=np.float32) * 0.02)
    return MambaModel(cfg, t)


def measure(model: quellm.CausalLM, prefill: int, decode: int) -> tuple[float, float]:
    rng = np.random.default_rng(1)
    toks = rng.integers(0, model.vocab_size, prefill + decode).astype(np.int32)
    model.forward(toks[:16])  # warm-up
    t0 = time.perf_counter()
    model.forward(toks[:prefill], model.new_state(1, prefill), all_logits=False)
    t_pre = time.perf_counter() - t0
    state = model.new_state(1, 8 + decode)
    model.forward(toks[:8], state, all_logits=False)
    t0 = time.perf_counter()
    for t in toks[8: 8 + decode]:
        model.forward([int(t)], state, all_logits=False)
    t_dec = time.perf_counter() - t0
    return prefill / t_pre, decode / t_dec


def measure_gpu(model, batch: int, prefill: int, decode: int) -> dict:
    """Prefill `prefill` and decode `decode` tokens per sequence for `batch` sequences on the GPU."""
    from quellm import _core

    rng = np.random.default_rng(1)
    toks = rng.integers(0, model.vocab_size, (batch, prefill + decode)).astype(np.int32)
    cap = min(prefill + decode, model.max_len)
    warm = model.new_state(batch, cap)  # warm-up: buffers, graph capture, GEMM autotuning if any
    model.forward(toks[:, :prefill], warm, all_logits=False)
    for t in range(prefill, prefill + 3):
        model.forward(toks[:, t: t + 1], warm, all_logits=False)
    free0, total = _core.cuda_memory_info()
    state = model.new_state(batch, cap)
    t0 = time.perf_counter()
    model.forward(toks[:, :prefill], state, all_logits=False)
    t_pre = time.perf_counter() - t0
    t0 = time.perf_counter()
    for t in range(prefill, prefill + decode):
        model.forward(toks[:, t: t + 1], state, all_logits=False)
    t_dec = time.perf_counter() - t0
    free1, _ = _core.cuda_memory_info()
    # where the time goes: one profiled prefill and a few profiled decode steps (no graphs)
    prof_state = model.new_state(batch, cap)
    with model.profile() as pre_prof:
        model.forward(toks[:, :prefill], prof_state, all_logits=False)
    steps = min(decode, 16)
    with model.profile() as dec_prof:
        for t in range(prefill, prefill + steps):
            model.forward(toks[:, t: t + 1], prof_state, all_logits=False)
    return {
        "prefill_tps": batch * prefill / t_pre, "decode_tps": batch * decode / t_dec,
        "step_ms": 1e3 * t_dec / decode, "weights_mb": model.device_bytes / 2**20,
        "state_mb": state.nbytes / 2**20, "used_mb": (total - free1) / 2**20, "delta_mb": (free0 - free1) / 2**20,
        "prefill_prof": pre_prof, "decode_prof": {k: v / steps for k, v in dec_prof.items()},
    }


def gpu_variants(args, ap) -> list[tuple[str, quellm.CausalLM]]:
    from quellm.models.gpu import require_gpu

    try:
        require_gpu()
    except quellm.QuellmError as e:
        ap.error(f"--device cuda: {e}")
    out = []
    recipes = [r for r in args.recipes.split(",") if r]
    for p in args.model:
        base = quellm.load(p)
        stats = None
        for r in recipes:
            if r == "float":
                m = base
            else:
                if stats is None:
                    toks = np.random.default_rng(0).integers(0, base.vocab_size, 8 * 64).tolist()
                    stats = quellm.calibrate(base, toks, n_samples=8, seq_len=64, progress=False)
                m = quellm.quantize(base, r, stats)
            out.append((f"{Path(p).name} {r}", m.to("cuda", dtype=args.dtype)))
    if args.mamba_130m:
        out.append(("mamba-130m (random) float", random_mamba_130m().to("cuda", dtype=args.dtype)))
    return out


def main_gpu(args, ap) -> None:
    models = gpu_variants(args, ap)
    if not models:
        ap.error("give --model DIR and/or --mamba-130m")
    d = quellm.info()["cuda"]
    header(f"bench_runtime --device cuda: {d.get('device_name')} cc {d.get('compute_capability')}, "
           f"activations {args.dtype}, prefill {args.prefill}, decode {args.decode}")
    rows, profs = [], []
    for name, m in models:
        for b in [int(x) for x in args.batch.split(",")]:
            r = measure_gpu(m, b, args.prefill, args.decode)
            rows.append([name, b, r["prefill_tps"], r["decode_tps"], r["step_ms"], r["weights_mb"], r["state_mb"],
                         r["used_mb"]])
            profs.append((name, b, r))
    table(["model", "batch", "prefill tok/s", "decode tok/s", "step ms", "weights MiB", "state MiB", "GPU used MiB"],
          rows, [30, 5, 13, 12, 8, 11, 9, 12])
    print("\n# per-kernel time (CUDA events, no graphs): prefill ms per pass | decode ms per step")
    for name, b, r in profs:
        kinds = sorted(set(r["prefill_prof"]) | set(r["decode_prof"]))
        tot_p, tot_d = sum(r["prefill_prof"].values()), sum(r["decode_prof"].values())
        print(f"## {name}, batch {b}: prefill {tot_p:.3f} ms, decode step {tot_d:.3f} ms")
        table(["kernel", "prefill ms", "%", "decode ms", "%"],
              [[k, r["prefill_prof"].get(k, 0.0), 100 * r["prefill_prof"].get(k, 0.0) / max(tot_p, 1e-12),
                r["decode_prof"].get(k, 0.0), 100 * r["decode_prof"].get(k, 0.0) / max(tot_d, 1e-12)]
               for k in kinds], [20, 10, 6, 10, 6])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", action="append", default=[], help="model directory (repeatable)")
    ap.add_argument("--mamba-130m", action="store_true")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--prefill", type=int, default=512)
    ap.add_argument("--decode", type=int, default=128)
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    ap.add_argument("--batch", default="1,16", help="GPU: batch sizes (default 1,16)")
    ap.add_argument("--recipes", default="float", help="GPU: comma-separated recipes to quantize --model with "
                    "('float' = as loaded), e.g. float,w4a16,w4a8,quarot:gptq=false")
    ap.add_argument("--dtype", choices=("float16", "bfloat16", "float32"), default="float16",
                    help="GPU activation dtype")
    args = ap.parse_args()
    if args.device == "cuda":
        main_gpu(args, ap)
        return
    header("bench_runtime: prefill and decode tokens/s (f32 weights)")
    models: list[tuple[str, quellm.CausalLM]] = [(Path(p).name, quellm.load(p)) for p in args.model]
    if args.mamba_130m:
        models.append(("mamba-130m (random)", random_mamba_130m()))
    if not models:
        ap.error("give --model DIR and/or --mamba-130m")
    rows = []
    for name, m in models:
        for th in [int(t) for t in args.threads.split(",")]:
            quellm.set_num_threads(th)
            pre, dec = measure(m, args.prefill, args.decode)
            rows.append([name, th, pre, dec])
    table(["model", "threads", f"prefill{args.prefill} tok/s", "decode tok/s"], rows, [22, 7, 18, 12])


if __name__ == "__main__":
    main()
