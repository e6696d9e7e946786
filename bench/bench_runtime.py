"""Runtime throughput: prefill and decode tokens/s at 1 and 2 threads.

Models:
  --model PATH     a Hugging Face directory (e.g. SmolLM2-135M converted by `quellm convert`)
  --mamba-130m     a randomly initialised Mamba with the mamba-130m configuration
                   (d_model 768, 24 layers, vocab 50280) — no real Mamba weights are reachable
                   here; the speed does not depend on the values.

Prefill: one forward pass over --prefill tokens (default 512). Decode: --decode single-token
steps (default 128) after a short prompt, with the KV cache / SSM state carried.

Usage: python bench/bench_runtime.py --model DIR [--mamba-130m] [--threads 1,2]
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


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", action="append", default=[], help="model directory (repeatable)")
    ap.add_argument("--mamba-130m", action="store_true")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--prefill", type=int, default=512)
    ap.add_argument("--decode", type=int, default=128)
    args = ap.parse_args()
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
    table(["model", "threads", f"prefill{args.prefill} tok/s", f"decode tok/s"], rows, [22, 7, 18, 12])


if __name__ == "__main__":
    main()
