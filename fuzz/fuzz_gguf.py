"""Fuzz target: the GGUF importer (``quellm.io.read_gguf_model`` and ``quellm.load`` of a .gguf).

Input: the bytes of a ``.gguf`` file. It is read with its tokenizer; when that succeeds the
model is built from it and run on one token. Accepted outcome: success or
:class:`quellm.QuellmError`.

    python fuzz/fuzz_gguf.py WORKDIR fuzz/corpus/gguf -max_total_time=60   # atheris
    python fuzz/fuzz_gguf.py --plain --max-time 60                       # no atheris
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _harness  # noqa: E402

with _harness.instrument():
    import quellm
    from quellm.io.gguf import read_gguf_model


def check(data: bytes) -> None:
    path = _harness.fresh_dir("gguf") / "model.gguf"
    path.write_bytes(data)
    read_gguf_model(path, tokenizer=True)
    model = quellm.load(path)
    logits = model.forward([0])
    assert logits.shape == (1, model.vocab_size), logits.shape


if __name__ == "__main__":
    _harness.main(check, "gguf")
