"""Saving models, and loading quantized checkpoints.

A quantized checkpoint is a Hugging Face directory whose ``config.json`` carries
``"quantization_config": {"quant_method": "quellm", ...}``, with:

* ``model.safetensors``: every float tensor the runtime uses (norm gains after smoothing,
  embeddings, layers kept in float) under its usual name, and for each quantized linear
  ``<name>.q.qweight`` (int4: uint8 (out, in/2), element 2i in the low nibble; int8: int8
  (out, in)), ``<name>.q.scales`` (out, in/group) float32, ``<name>.q.zeros`` (asymmetric),
  ``<name>.q.bias``; ``<name>.q.weight`` for float layers with a transform;
* ``quellm_quant.json``: ``{"quellm_quant": 1, "recipe": ..., "layers": {name: LinearSpec}}``;
* ``tokenizer.json`` when the model has a tokenizer.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import CheckpointError, QuellmError
from ..io.checkpoint import load_checkpoint, save_checkpoint
from ..io.config import check_layer_count
from .base import CausalLM, float32_tensors

QUANT_JSON = "quellm_quant.json"


def save_model(model: CausalLM, directory: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
    raw = getattr(model.config, "raw", None)
    if not raw:
        raise QuellmError("save: the model's config has no config.json dictionary")
    config = dict(raw)
    tensors: dict[str, np.ndarray] = dict(getattr(model, "_float_tensors", model._tensors))
    extra_json: dict[str, Any] = {}
    if model.quant_layers:
        for name, q in model.quant_layers.items():
            tensors.update({f"{name}.q.{k}": v for k, v in q.to_tensors().items()})
        extra_json[QUANT_JSON] = {"quellm_quant": 1, "recipe": model.recipe.to_json(),
                                  "layers": {n: q.spec.to_json() for n, q in model.quant_layers.items()}}
        config["quantization_config"] = {"quant_method": "quellm", "recipe": model.recipe.name}
    extra_files = {"tokenizer.json": model.tokenizer.to_str().encode()} if model.tokenizer is not None else None
    try:
        return save_checkpoint(directory, config, tensors, extra_json, extra_files=extra_files, overwrite=overwrite)
    except CheckpointError as e:
        raise CheckpointError(f"save: {e}") from None


def is_quantized_checkpoint(path: Path) -> bool:
    return path.is_dir() and (path / QUANT_JSON).is_file()


def load_quantized(path: Path, tokenizer: Any, family_classes: dict[str, Any]) -> CausalLM:
    """Load a checkpoint written by :func:`save_model` for a quantized model."""
    from ..quant import QuantLinear
    from ..recipes import read_quant_json

    try:
        recipe, layers = read_quant_json(path / QUANT_JSON)
    except (OSError, ValueError, KeyError, TypeError, AttributeError, OverflowError, RecursionError) as e:
        # not JSON, not an object, a layer entry that is not an object, nested too deeply
        raise CheckpointError(f"{path / QUANT_JSON}: {type(e).__name__}: {e}") from None
    ckpt = load_checkpoint(path, validate=False)
    check_layer_count(ckpt.config, len(ckpt), str(path / "config.json"))
    required, optional = ckpt.config.tensor_shapes()
    shapes = {**required, **optional}
    qnames = {n for name in layers for n in (f"{name}.weight", f"{name}.bias")}
    for name, shape in required.items():
        if name not in qnames and name not in ckpt:
            raise CheckpointError(f"{path}: tensor {name!r} is missing")
    float_names = [n for n in ckpt if ".q." not in n]
    for n in float_names:
        if n in shapes and tuple(ckpt.info(n).shape) != tuple(shapes[n]):
            raise CheckpointError(f"{path}: tensor {n!r} has shape {list(ckpt.info(n).shape)}, config implies {list(shapes[n])}")

    class _View:  # float32_tensors over the float subset
        def __iter__(self):
            return iter(float_names)

        def __getitem__(self, n: str) -> np.ndarray:
            return ckpt[n]

    tensors: dict[str, Any] = float32_tensors(_View())
    quant = {}
    for name, spec in layers.items():
        wshape = shapes.get(f"{name}.weight")
        if wshape is None:
            raise CheckpointError(f"{path}: {QUANT_JSON} names {name!r}, which is not a linear of this model")
        prefix = f"{name}.q."
        q_tensors = {n[len(prefix):]: np.asarray(ckpt[n]) for n in ckpt if n.startswith(prefix)}
        try:
            quant[name] = QuantLinear.from_tensors(spec, q_tensors, int(wshape[0]), int(wshape[1]))
        except ValueError as e:
            raise CheckpointError(f"{path}: layer {name}: {e}") from None
    cls = family_classes[type(ckpt.config).__name__]
    float_model = cls.__new__(cls)
    CausalLM.__init__(float_model, ckpt.config, tokenizer, path)
    return cls.with_quantized(float_model, tensors, quant, recipe)
