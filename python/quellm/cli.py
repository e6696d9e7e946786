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


def build_parser() -> argparse.ArgumentParser:
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
