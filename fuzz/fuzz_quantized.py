"""Fuzz target: the quantized-checkpoint loader (``quellm_quant.json`` recipe + packed tensors).

Input: ``join_parts(config_json, quellm_quant_json, safetensors_bytes)``. The three files are
written into a fresh directory and loaded with ``quellm.load`` (which sees ``quellm_quant.json``
and rebuilds every ``QuantLinear`` from its packed tensors in C++); a model that loads is run on
one token. Accepted outcome: success or :class:`quellm.QuellmError`.

    python fuzz/fuzz_quantized.py WORKDIR fuzz/corpus/quantized -max_total_time=60   # atheris
    python fuzz/fuzz_quantized.py --plain --max-time 60                            # no atheris
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _harness  # noqa: E402

with _harness.instrument():
    import quellm


def check(data: bytes) -> None:
    config, quant, weights = _harness.split_parts(data, 3)
    d = _harness.fresh_dir("quantized")
    (d / "config.json").write_bytes(config)
    (d / "quellm_quant.json").write_bytes(quant)
    (d / "model.safetensors").write_bytes(weights)
    model = quellm.load(d)
    logits = model.forward([0])
    assert logits.shape == (1, model.vocab_size), logits.shape


if __name__ == "__main__":
    _harness.main(check, "quantized")
