"""Layer-by-layer quantization: the calibration batch is carried through the network one decoder
layer at a time, and each layer is quantized from the inputs that the already-quantized layers
before it produce — GPTQ's sequential procedure (Frantar et al., 2023, §4 "Step 3").

For layer ``l``, with ``X`` the residual stream of the calibration windows after layers ``< l``
(quantized, run on the real low-bit kernels, with the recipe's KV-cache format):

1. run layer ``l`` in float on ``X`` with observers: ``XᵀX`` at each of its linear inputs;
2. quantize the layer's linears with those Hessians (GPTQ, or the clip search);
3. run the quantized layer on ``X`` to get the next layer's input.

Peak memory is the calibration stream ``X`` (windows × seq_len × hidden_size float32) plus one
layer's ``XᵀX`` matrices — not every layer's, as collecting them all at once with
``calibrate(xtx=True)`` would need (for a 7B Llama, about 44 GB of float64). The LM head, when
a recipe quantizes it, gets its Hessian from the final-norm output of the quantized network.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from . import _core
from .calibrate import check_windows, observed
from .errors import QuellmError
from .eval import _Progress

__all__ = ["quantize_layerwise"]

#: (module name, kind, layer, hessian) -> the quantized layer, or None to keep it in float.
MakeLayer = Callable[[str, str, int, np.ndarray | None], Any]


def quantize_layerwise(model: Any, tensors: dict[str, np.ndarray], recipe: Any, layers: list[tuple[str, str, int]],
                       make_layer: MakeLayer, windows: np.ndarray, *, batch: int = 8,
                       progress: bool | None = None) -> dict[str, Any]:
    """Quantize ``layers`` (``(name, kind, layer)``, in network order) of ``model`` one decoder
    layer at a time; see the module docstring.

    Args:
        model: the float model.
        tensors: its float tensors after the recipe's transforms (smoothing, rotation); biases of
            layers that ``make_layer`` quantizes are expected to be removed from it by ``make_layer``.
        recipe: the recipe (its KV-cache format applies while the stream is carried).
        windows: token ids ``(n_samples, seq_len)``.
        batch: windows per runtime call.

    Returns:
        ``{name: QuantLinear}`` of every layer ``make_layer`` quantized.
    """
    windows = check_windows(windows, model.vocab_size, "layerwise")
    L = int(model.config.num_hidden_layers)
    n, T = windows.shape
    x = tensors[model.embedding_name][windows].astype(np.float32)  # (n, T, D): the residual stream
    by_layer: dict[int, list[tuple[str, str]]] = {}
    for name, kind, layer in layers:
        by_layer.setdefault(layer, []).append((name, kind))

    quant: dict[str, Any] = {}
    current = model.with_quantized(tensors, quant, recipe)
    bar = _Progress(L, "quantize layers", progress)
    for layer in range(L):
        obs = _core.Observers(L, True)
        for i in range(0, n, batch):
            current.forward_layers(x[i: i + batch], layer, layer + 1, observers=obs)
        changed = False
        for name, kind in by_layer.get(layer, []):
            d = observed(obs, layer, kind, T, L, "layerwise")
            if d is None:
                raise QuellmError(f"layerwise: no activations observed at layer {layer}, point {kind!r}")
            q = make_layer(name, kind, layer, d["xtx"] / max(int(d["count"]), 1))
            if q is not None:
                quant[name] = q
                changed = True
        if changed:
            current = model.with_quantized(tensors, quant, recipe)
        for i in range(0, n, batch):
            x[i: i + batch] = current.forward_layers(x[i: i + batch], layer, layer + 1)
        bar.update(1)
    bar.close()
    for name, kind, layer in layers:
        if layer == L:  # the LM head reads the final norm of the stream
            if not np.isfinite(x).all():
                raise QuellmError("layerwise: non-finite activation at the final norm")
            xf = x.reshape(-1, x.shape[-1]).astype(np.float64)  # the final RMSNorm, in float64
            h = xf / np.sqrt((xf * xf).mean(axis=1, keepdims=True) + model.norm_eps)
            h *= tensors[model.final_norm_name].astype(np.float64)
            q = make_layer(name, kind, layer, h.T @ h / h.shape[0])
            if q is not None:
                quant[name] = q
    return quant
