"""Shared machinery of the fuzz targets in this directory.

Every target defines ``check(data: bytes) -> None``: feed the bytes to one quellm loader or
decoder and return normally, or raise an *accepted* error (``quellm.QuellmError``, the project's
``ValueError`` subclass — see ``ACCEPTED``). Anything else — another exception type, a
``MemoryError`` from a header that claims a huge size, a crash, or an input that runs longer than
the per-input time limit — is a finding.

``main(check, name)`` runs a target in one of two engines:

* **atheris** (libFuzzer, coverage guided), when it is installed: the command line is
  libFuzzer's (``python fuzz/fuzz_gguf.py WORKDIR fuzz/corpus/gguf -max_total_time=30``).
  Per-input limits: ``-timeout`` (default here 10 s) and ``-rss_limit_mb`` (default 2048).
* **plain** (``--plain``, or when atheris is missing): a seeded random-mutation loop over the
  corpus files (bit flips, byte/int overwrites, inserts, deletes, splices) with a per-input
  ``SIGALRM`` time limit and an address-space cap (``RLIMIT_AS``), so an attempt to allocate
  gigabytes surfaces as ``MemoryError`` (a finding) rather than swapping. Options:
  ``--runs N``, ``--max-time S``, ``--seed K``, ``--timeout S``, ``--mem-mb M``. The failing input
  is written to ``crash-<target>-<sha1>`` in the working directory.

Both engines print the number of executions at the end (plain: ``fuzz: <name>: N executions``;
libFuzzer: ``Done N runs in S second(s)``).
Inputs with several parts (a config and a weights file, say) use :func:`split_parts` /
:func:`join_parts`: a little-endian u32 length before each part but the last.
"""

from __future__ import annotations

import hashlib
import os
import random
import signal
import struct
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

FUZZ_DIR = Path(__file__).resolve().parent
CORPUS_DIR = FUZZ_DIR / "corpus"


def accepted() -> tuple[type[BaseException], ...]:
    """The exception types a target may raise for bad input: quellm's documented error class."""
    from quellm.errors import QuellmError

    return (QuellmError,)


class Timeout(BaseException):
    """An input ran past the per-input time limit (a hang)."""


def join_parts(*parts: bytes) -> bytes:
    """Frame ``parts`` as one fuzz input (inverse of :func:`split_parts`)."""
    out = b"".join(struct.pack("<I", len(p)) + p for p in parts[:-1])
    return out + parts[-1]


def split_parts(data: bytes, n: int) -> list[bytes]:
    """Split one fuzz input into ``n`` parts; a length prefix past the end takes what is left, so
    every byte string splits (missing parts are empty)."""
    parts = []
    for _ in range(n - 1):
        if len(data) < 4:
            parts.append(b"")
            continue
        (k,) = struct.unpack_from("<I", data)
        data = data[4:]
        parts.append(data[:k])
        data = data[k:]
    parts.append(data)
    return parts


def run_checked(check: Callable[[bytes], None], data: bytes) -> None:
    """Run ``check(data)``; swallow accepted errors, re-raise everything else. Warnings are
    errors, as in the test suite (``filterwarnings = error``)."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        try:
            check(data)
        except accepted():
            pass


def scratch_dir() -> Path:
    """A per-process scratch directory, emptied by each target before use."""
    global _SCRATCH
    if _SCRATCH is None:
        _SCRATCH = Path(tempfile.mkdtemp(prefix="quellm-fuzz-"))
    return _SCRATCH


_SCRATCH: Path | None = None


def fresh_dir(name: str = "case") -> Path:
    """An empty directory under the scratch directory (its previous content removed)."""
    import shutil

    d = scratch_dir() / name
    shutil.rmtree(d, ignore_errors=True)
    d.mkdir(parents=True)
    return d


# ---- the plain engine ---------------------------------------------------------------------------

_INTERESTING = [0, 1, 2, 3, 4, 7, 8, 15, 16, 31, 32, 63, 64, 127, 128, 255, 256, 0x7FFF, 0x8000, 0xFFFF,
                0x7FFFFFFF, 0x80000000, 0xFFFFFFFF, 2**40, 2**62, 2**63 - 1, 2**64 - 1]
_TOKENS = [b"0", b"-1", b"1e400", b"NaN", b"Infinity", b"null", b"[]", b"{}", b'""', b"true", b"999999999999",
           b"-9223372036854775809", b"18446744073709551616", b"\xff\xfe", b"\x00"]


def mutate(rng: random.Random, data: bytes, corpus: list[bytes]) -> bytes:
    b = bytearray(data)
    for _ in range(rng.choice((1, 1, 2, 3, 4, 8))):
        op = rng.randrange(8)
        pos = rng.randrange(len(b) + 1)
        if op == 0 and b:  # bit flip
            i = rng.randrange(len(b))
            b[i] ^= 1 << rng.randrange(8)
        elif op == 1 and b:  # random byte
            b[rng.randrange(len(b))] = rng.randrange(256)
        elif op == 2:  # interesting integer, little endian
            v = rng.choice(_INTERESTING)
            w = rng.choice((1, 2, 4, 8))
            b[pos:pos + w] = (v % (1 << (8 * w))).to_bytes(w, "little")
        elif op == 3:  # JSON-ish token
            t = rng.choice(_TOKENS)
            b[pos:pos + rng.randrange(0, 4)] = t
        elif op == 4 and b:  # delete a run
            del b[pos:pos + rng.randrange(1, 32)]
        elif op == 5 and b:  # duplicate a run
            i = rng.randrange(len(b))
            b[pos:pos] = b[i:i + rng.randrange(1, 64)]
        elif op == 6 and corpus:  # splice with another input
            other = rng.choice(corpus)
            j = rng.randrange(len(other) + 1)
            b = b[:pos] + bytearray(other[j:])
        elif op == 7 and b:  # change a decimal digit run (JSON numbers)
            i = rng.randrange(len(b))
            if chr(b[i]).isdigit():
                b[i:i + 1] = str(rng.choice(_INTERESTING)).encode()
    return bytes(b)


def _alarm(signum, frame):  # noqa: ARG001
    raise Timeout("input ran past the per-input time limit")


def plain_main(check: Callable[[bytes], None], name: str, argv: list[str]) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog=f"fuzz_{name}.py --plain")
    ap.add_argument("corpus", nargs="*", help="corpus directories or files (default: fuzz/corpus/<name>)")
    ap.add_argument("--runs", type=int, default=0, help="stop after this many executions (0: no limit)")
    ap.add_argument("--max-time", type=float, default=30.0, help="stop after this many seconds (0: no limit)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--timeout", type=float, default=10.0, help="seconds per input")
    ap.add_argument("--mem-mb", type=int, default=4096, help="address-space cap in MiB (0: none)")
    args = ap.parse_args(argv)
    if args.mem_mb:
        import resource

        lim = args.mem_mb << 20
        resource.setrlimit(resource.RLIMIT_AS, (lim, lim))
    paths = [Path(p) for p in args.corpus] or [CORPUS_DIR / name]
    corpus: list[bytes] = []
    for p in paths:
        files = sorted(f for f in p.iterdir() if f.is_file()) if p.is_dir() else [p]
        corpus += [f.read_bytes() for f in files]
    if not corpus:
        corpus = [b""]
    rng = random.Random(args.seed)
    signal.signal(signal.SIGALRM, _alarm)
    start = time.monotonic()
    n = 0
    queue = list(corpus)  # the seeds themselves first, unmutated
    while True:
        if args.runs and n >= args.runs:
            break
        if args.max_time and time.monotonic() - start >= args.max_time:
            break
        data = queue.pop(0) if queue else mutate(rng, rng.choice(corpus), corpus)
        signal.setitimer(signal.ITIMER_REAL, args.timeout)
        try:
            run_checked(check, data)
        except BaseException as e:  # noqa: BLE001 - every non-accepted outcome is a finding
            signal.setitimer(signal.ITIMER_REAL, 0)
            if isinstance(e, KeyboardInterrupt):
                raise
            out = Path(f"crash-{name}-{hashlib.sha1(data).hexdigest()}")
            out.write_bytes(data)
            import traceback

            traceback.print_exc()
            print(f"fuzz: {name}: FINDING after {n + 1} executions: {type(e).__name__}: {e}; input saved to {out}",
                  file=sys.stderr)
            return 1
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
        n += 1
    print(f"fuzz: {name}: {n} executions in {time.monotonic() - start:.1f} s (plain engine), no findings")
    return 0


# ---- entry point --------------------------------------------------------------------------------

def main(check: Callable[[bytes], None], name: str) -> None:
    """Run target ``name`` under atheris if installed (libFuzzer flags), else the plain engine."""
    argv = sys.argv[1:]
    plain = "--plain" in argv
    if plain:
        argv.remove("--plain")
    try:
        if not plain:
            import atheris
    except ImportError:
        print("fuzz: atheris is not installed; using the plain random-mutation engine", file=sys.stderr)
        plain = True
    if plain:
        sys.exit(plain_main(check, name, argv))

    count = [0]
    start = time.monotonic()

    def one(data: bytes) -> None:
        count[0] += 1
        try:
            run_checked(check, data)
        except BaseException:
            print(f"fuzz: {name}: FINDING after {count[0]} executions in {time.monotonic() - start:.1f} s",
                  file=sys.stderr, flush=True)
            raise

    # libFuzzer reports the executions itself at the end ("Done N runs in S second(s)")
    flags = [a for a in argv]
    if not any(a.startswith("-timeout=") for a in flags):
        flags.append("-timeout=10")
    if not any(a.startswith("-rss_limit_mb=") for a in flags):
        flags.append("-rss_limit_mb=3072")
    atheris.Setup([sys.argv[0], *flags], one)
    atheris.Fuzz()


def instrument():
    """Context manager: on exit, every function of the quellm and gguf modules imported so far
    carries atheris' coverage instrumentation (a no-op without atheris, or with
    QUELLM_FUZZ_NO_INSTRUMENT set).

    The functions are patched after import rather than through ``atheris.instrument_imports``,
    whose import hook skips modules behind a custom loader (an editable install's redirect)."""
    import contextlib

    try:
        import atheris
    except ImportError:
        return contextlib.nullcontext()
    if os.environ.get("QUELLM_FUZZ_NO_INSTRUMENT"):
        return contextlib.nullcontext()

    @contextlib.contextmanager
    def patch():
        yield
        import types

        seen: set[int] = set()

        def visit(obj, modname):
            if id(obj) in seen:
                return
            seen.add(id(obj))
            if isinstance(obj, (staticmethod, classmethod)):
                obj = obj.__func__
            if isinstance(obj, property):
                for f in (obj.fget, obj.fset, obj.fdel):
                    if f is not None:
                        visit(f, modname)
            elif isinstance(obj, types.FunctionType):
                if obj.__module__ == modname:
                    atheris.instrument_func(obj)
            elif isinstance(obj, type) and obj.__module__ == modname:
                for v in vars(obj).values():
                    visit(v, modname)

        for name, mod in list(sys.modules.items()):
            if mod is not None and name.split(".")[0] in ("quellm", "gguf"):
                for v in list(vars(mod).values()):
                    visit(v, name)

    return patch()
