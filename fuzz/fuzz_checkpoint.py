"""Fuzz target: the Hugging Face checkpoint loader (``config.json`` + ``model.safetensors``).

Input: ``join_parts(config_json, safetensors_bytes)`` (see ``_harness``). Both files are written
into a fresh directory, then the checkpoint is opened with and without validation, every tensor
is read and converted to float32, and the model is built and run on one token. Accepted
outcome: success or :class:`quellm.QuellmError`.

    python fuzz/fuzz_checkpoint.py WORKDIR fuzz/corpus/checkpoint -max_total_time=60   # atheris
    python fuzz/fuzz_checkpoint.py --plain --max-time 60                              # no atheris
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _harness  # noqa: E402

with _harness.instrument():
    import numpy as np

    import quellm
    from quellm.io import load_checkpoint


def check(data: bytes) -> None:
    config, weights = _harness.split_parts(data, 2)
    d = _harness.fresh_dir("checkpoint")
    (d / "config.json").write_bytes(config)
    (d / "model.safetensors").write_bytes(weights)
    ckpt = load_checkpoint(d, validate=False)
    for name in ckpt:
        a = ckpt.get(name, np.float32)
        assert a.shape == ckpt.info(name).shape
    model = quellm.load(d)
    logits = model.forward([0])
    assert logits.shape == (1, model.vocab_size), logits.shape


if __name__ == "__main__":
    _harness.main(check, "checkpoint")
