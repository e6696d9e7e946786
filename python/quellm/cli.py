"""The ``quellm`` command line.

Subcommands register themselves in :data:`COMMANDS` through :func:`command`; later features
(calibrate, quantize, eval, generate, ...) add theirs the same way.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

from ._info import format_info
from .errors import QuellmError

#: name -> (help, add_arguments, run)
COMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]]] = {}


def command(name: str, help: str, add_arguments: Callable[[argparse.ArgumentParser], None] = lambda p: None):
    """Register ``run(args) -> exit code`` as subcommand ``name``."""

    def deco(run: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
        COMMANDS[name] = (help, add_arguments, run)
        return run

    return deco


def _human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError  # pragma: no cover


def _human_count(n: int) -> str:
    for unit, div in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= div:
            return f"{n / div:.2f}{unit}"
    return str(n)


@command("info", "print the version, SIMD paths, threads and CUDA status")
def _info(args: argparse.Namespace) -> int:
    print(format_info())
    return 0


def _inspect_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("path", help="Hugging Face checkpoint directory")
    p.add_argument("--tensors", action="store_true", help="list every tensor with dtype and shape")


@command("inspect", "describe a checkpoint: architecture, dimensions, parameters, dtypes, size", _inspect_args)
def _inspect(args: argparse.Namespace) -> int:
    from .io import load_checkpoint

    ckpt = load_checkpoint(args.path)
    cfg = ckpt.config
    print(f"{ckpt.path}")
    for k, v in cfg.summary().items():
        print(f"  {k:<24} {v}")
    n_params = sum(math.prod(ckpt.info(n).shape) for n in ckpt)
    print(f"  {'parameters':<24} {_human_count(n_params)} ({n_params:,})")
    dtypes = ", ".join(f"{d} {_human_count(c)}" for d, c in sorted(ckpt.dtype_counts().items()))
    print(f"  {'dtypes':<24} {dtypes}")
    print(f"  {'files':<24} {len(ckpt.files)} safetensors, {_human_bytes(ckpt.nbytes_on_disk())} on disk")
    print(f"  {'tokenizer':<24} {'tokenizer.json' if ckpt.tokenizer_path else 'none'}")
    if args.tensors:
        width = max(len(n) for n in ckpt)
        print()
        print(f"  {'tensor':<{width}}  {'dtype':<5}  shape")
        for name in ckpt:
            t = ckpt.info(name)
            print(f"  {name:<{width}}  {t.dtype:<5}  {list(t.shape)}")
    return 0


def _convert_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("gguf", help="input .gguf file (llama / qwen2 architectures)")
    p.add_argument("out", help="output Hugging Face directory (float32 safetensors + tokenizer.json)")
    p.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    p.add_argument("--pretokenizer", choices=["gguf", "bytelevel"], default="gguf",
                   help="gguf: the split the file names (llama.cpp's); bytelevel: transformers' GGUF loader")


@command("convert", "convert a GGUF file into a Hugging Face directory (dequantized to float32)", _convert_args)
def _convert(args: argparse.Namespace) -> int:
    from .io import convert_gguf

    out = convert_gguf(args.gguf, args.out, overwrite=args.overwrite, pretokenizer=args.pretokenizer)
    print(f"wrote {out}")
    return 0


def _device_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", choices=("cpu", "cuda", "auto"), default="cpu",
                   help="where the model runs: cpu (default), cuda (the GPU runtime), auto (GPU if usable)")
    p.add_argument("--dtype", choices=("float16", "bfloat16", "float32"), default="float16",
                   help="GPU activation dtype (default float16)")
    p.add_argument("--no-graphs", action="store_true", help="GPU: launch decode steps without CUDA graphs")


def _load_on(path: str, args: argparse.Namespace) -> Any:
    from . import load

    return load(path, device=args.device, dtype=args.dtype, graphs=not args.no_graphs)


def _generate_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("path", help="model directory or .gguf file")
    p.add_argument("--prompt", required=True, help="text to continue")
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    p.add_argument("--top-k", type=int, default=0)
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None)
    _device_args(p)


@command("generate", "continue a prompt, streaming the text; prints tokens/s", _generate_args)
def _generate(args: argparse.Namespace) -> int:
    from . import set_num_threads

    if args.threads:
        set_num_threads(args.threads)
    model = _load_on(args.path, args)
    print(args.prompt, end="", flush=True)
    out = model.generate(args.prompt, args.max_new_tokens, temperature=args.temperature, top_k=args.top_k,
                         top_p=args.top_p, seed=args.seed,
                         stream=lambda piece: print(piece, end="", flush=True))
    print()
    print(f"[{out.prompt_tokens} prompt tokens in {out.prefill_seconds:.2f} s "
          f"({out.prompt_tokens / max(out.prefill_seconds, 1e-9):.1f} tok/s); {len(out.tokens)} new tokens, "
          f"decode {out.decode_tokens_per_second:.1f} tok/s]", file=sys.stderr)
    return 0


def _eval_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("path", help="model directory or .gguf file")
    p.add_argument("--data", required=True, help="UTF-8 text file to evaluate on")
    p.add_argument("--ctx", type=int, default=512, help="window length in tokens (default 512)")
    p.add_argument("--stride", type=int, default=None, help="score the last STRIDE tokens of overlapping windows")
    p.add_argument("--max-windows", type=int, default=None)
    p.add_argument("--against", default=None, help="reference model directory: also report KL and top-1 agreement")
    p.add_argument("--threads", type=int, default=None)
    _device_args(p)


@command("eval", "perplexity on a text file; with --against, KL divergence and top-1 agreement", _eval_args)
def _eval(args: argparse.Namespace) -> int:
    from . import compare, perplexity, set_num_threads

    if args.threads:
        set_num_threads(args.threads)
    try:
        text = open(args.data, encoding="utf-8").read()
    except (OSError, UnicodeDecodeError) as e:
        raise QuellmError(f"{args.data}: cannot read text: {e}") from None
    model = _load_on(args.path, args)
    kw = dict(ctx=args.ctx, stride=args.stride, max_windows=args.max_windows)
    if args.against:
        c = compare(model, _load_on(args.against, args), text, **kw)
        print(f"perplexity {c.perplexity_model:.4f} (reference {c.perplexity_reference:.4f}) over {c.tokens} tokens")
        print(f"KL(reference || model) {c.kl:.5f} nats/token, top-1 agreement {100 * c.top1_agreement:.2f} %")
    else:
        r = perplexity(model, text, **kw)
        print(f"perplexity {r.perplexity:.4f} (NLL {r.nll:.4f}) over {r.tokens} tokens in {r.windows} windows, "
              f"{r.seconds:.1f} s ({r.tokens_per_second:.0f} tok/s)")
    return 0


def _report_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("stats", help="statistics file from quellm.calibrate(...).save (.npz)")
    p.add_argument("--out", default=None, help="directory for index.html and img/*.png (optional with --text-only)")
    p.add_argument("--top", type=int, default=8, help="channels listed per point (default 8)")
    p.add_argument("--no-rotate", action="store_true", help="skip the Hadamard-rotation estimate")
    p.add_argument("--force", action="store_true", help="replace a non-empty --out directory")
    p.add_argument("--text-only", action="store_true", help="no plots (no matplotlib needed); tables only in --out")
    p.add_argument("--worst", type=int, default=3, help="layers printed per point kind (default 3)")


@command("report", "outlier channels per layer and point, before/after a Hadamard rotation", _report_args)
def _report(args: argparse.Namespace) -> int:
    from .report import report

    if args.out is None and not args.text_only:
        raise QuellmError("--out DIR is required (or --text-only to print the summary only)")
    s = report(args.stats, args.out, top=args.top, rotate=not args.no_rotate, plots=not args.text_only,
               force=args.force)
    print(s.text(worst=args.worst))
    if s.out_dir is not None:
        print(f"\nwrote {s.out_dir / 'index.html'} ({sum(f.suffix == '.png' for f in s.files)} plots)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from . import cli_quant  # noqa: F401  (registers calibrate, quantize, quickstart)

    parser = argparse.ArgumentParser(
        prog="quellm", description="Low-bit LLM and Mamba inference despite outlier channels."
    )
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (help_, add_arguments, run) in COMMANDS.items():
        p = sub.add_parser(name, help=help_, description=help_)
        add_arguments(p)
        p.set_defaults(_run=run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.version:
        from . import __version__

        print(__version__)
        return 0
    if not args.command:
        parser.print_help()
        return 2
    try:
        return int(args._run(args))
    except QuellmError as e:
        print(f"quellm {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `quellm inspect ... | head`
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
