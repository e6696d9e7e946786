"""Models on the GPU runtime (cuda/runtime_*.cu): ``model.to("cuda")`` / ``quellm.load(path, device="cuda")``.

The GPU model is built from a CPU model once (weights uploaded: float layers as f16/bf16, quantized
layers packed as they are) and offers the same API — ``forward`` (numpy logits), ``generate``,
``new_state``, perplexity/compare — with its KV caches (or Mamba conv/SSM states) in device memory.

Numbers: the residual stream is float32, activations between kernels are ``dtype`` and every
kernel computes in float32. ``dtype``: "float16" (default; 3 more mantissa bits than bfloat16),
"bfloat16" (for models whose activations overflow float16) or "float32" (float weights kept in
float32 too: the same numbers as the CPU runtime up to summation order, at twice the bytes). Decode steps are replayed from CUDA graphs unless
``graphs=False`` or the environment sets ``QUELLM_CUDA_GRAPHS=0``.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from typing import Any

import numpy as np

from .. import _core
from .._info import cuda_available
from ..errors import QuellmError
from .base import CausalLM, SequenceState

__all__ = ["DEVICES", "GpuModel", "GpuSeqState", "resolve_device", "to_device"]

DEVICES = ("cpu", "cuda", "auto")
DTYPES = ("float16", "bfloat16", "float32")


@contextlib.contextmanager
def _cuda_errors(what: str) -> Iterator[None]:
    """CUDA failures (RuntimeError from the extension: no device, out of memory) → QuellmError."""
    try:
        yield
    except QuellmError:
        raise
    except RuntimeError as e:
        raise QuellmError(f"{what} on the GPU failed: {e}") from None


def require_gpu() -> None:
    """Raise :class:`QuellmError` with the reason unless the GPU runtime can run here."""
    if not _core.HAS_CUDA:
        raise QuellmError("device='cuda': this quellm build has no CUDA support (it was built without nvcc or "
                          "with QUELLM_CUDA=OFF); use device='cpu' or 'auto', or rebuild with QUELLM_CUDA=ON")
    ok, why = cuda_available()
    if not ok:
        raise QuellmError(f"device='cuda': no usable CUDA device ({why}); use device='cpu' or 'auto'")
    with _cuda_errors("device check"):
        _core.cuda_require_runtime_device()


class GpuSeqState(SequenceState):
    """Device state of a batch of sequences (all advance together)."""

    def __init__(self, st: Any, model: "GpuModel"):
        super().__init__([st])
        self._st = st
        self._model = model

    @property
    def batch(self) -> int:
        return int(self._st.batch)

    @property
    def len(self) -> int:
        return int(self._st.len)

    @property
    def capacity(self) -> int:
        return int(self._st.capacity)

    @property
    def nbytes(self) -> int:
        """Device bytes held (caches/states and the activation buffers)."""
        return int(self._st.nbytes)

    def reset(self) -> None:
        self._st.reset()

    def truncate(self, n: int) -> None:
        """Forget positions from ``n`` on (Llama)."""
        self._st.truncate(int(n))

    def keys(self, layer: int, seq: int = 0) -> np.ndarray:
        """Keys of a layer (len, n_kv, head_dim) after RoPE (and rotation), dequantized (Llama)."""
        c = self._model.config
        return self._model._gpu.kv(self._st, int(layer), int(seq), False, c.num_key_value_heads, c.head_dim)

    def values(self, layer: int, seq: int = 0) -> np.ndarray:
        c = self._model.config
        return self._model._gpu.kv(self._st, int(layer), int(seq), True, c.num_key_value_heads, c.head_dim)

    def conv_state(self, layer: int, seq: int = 0) -> np.ndarray:
        """(d_inner, conv_kernel - 1) newest pre-conv inputs, oldest first (Mamba)."""
        c = self._model.config
        return self._model._gpu.mamba_state(self._st, int(layer), int(seq), c.intermediate_size, c.conv_kernel - 1,
                                            c.state_size)[0]

    def ssm_state(self, layer: int, seq: int = 0) -> np.ndarray:
        c = self._model.config
        return self._model._gpu.mamba_state(self._st, int(layer), int(seq), c.intermediate_size, c.conv_kernel - 1,
                                            c.state_size)[1]


class GpuModel(CausalLM):
    """A Llama-family or Mamba model running on the GPU; made by ``model.to("cuda")``.

    Attributes:
        cpu_model: the CPU model it was built from (weights, tokenizer, recipe).
        dtype: activation dtype on the device ("float16" or "bfloat16").
    """

    device = "cuda"

    def __init__(self, cpu_model: CausalLM, dtype: str = "float16", graphs: bool = True):
        if isinstance(cpu_model, GpuModel):
            cpu_model = cpu_model.cpu_model
        if dtype not in DTYPES:
            raise QuellmError(f"GPU dtype must be one of {DTYPES}, got {dtype!r}")
        require_gpu()
        super().__init__(cpu_model.config, cpu_model.tokenizer, cpu_model.path)
        self.cpu_model = cpu_model
        self.family = cpu_model.family
        self.embedding_name = cpu_model.embedding_name
        self.final_norm_name = cpu_model.final_norm_name
        self.recipe = cpu_model.recipe
        self.quant_layers = cpu_model.quant_layers
        self._tensors = cpu_model._tensors
        if hasattr(cpu_model, "_float_tensors"):
            self._float_tensors = cpu_model._float_tensors
        self._graphs = bool(graphs)
        self.dtype = dtype
        self._upload()

    def _upload(self) -> None:
        self._gpu = None  # free the old device copy first
        with _cuda_errors(f"uploading {self.family} model"):
            self._gpu = _core.GpuModel(self.cpu_model._rt, self.dtype, self._graphs)

    def __repr__(self) -> str:
        return f"<quellm GpuModel {self.family} dtype={self.dtype} graphs={self.graphs}>"

    # ---- device --------------------------------------------------------------------------------
    def to(self, device: str = "cuda", *, dtype: str | None = None, graphs: bool | None = None) -> CausalLM:
        """``"cpu"``: the CPU model; ``"cuda"``: this model (re-uploaded if dtype or graphs change)."""
        device = _check_device(device)
        if device == "cpu":
            return self.cpu_model
        if (dtype is None or dtype == self.dtype) and (graphs is None or bool(graphs) == self._graphs):
            return self
        return GpuModel(self.cpu_model, dtype or self.dtype, self._graphs if graphs is None else bool(graphs))

    @property
    def graphs(self) -> bool:
        """Whether decode steps are replayed from CUDA graphs (settable)."""
        return bool(self._gpu.graphs)

    @graphs.setter
    def graphs(self, on: bool) -> None:
        self._graphs = bool(on)
        self._gpu.graphs = bool(on)

    @property
    def graph_replays(self) -> int:
        return int(self._gpu.graph_replays)

    @property
    def device_bytes(self) -> int:
        """Bytes of weights held in device memory."""
        return int(self._gpu.weight_bytes)

    @property
    def linear_kernels(self) -> dict[str, int]:
        """Device GEMM kernel → number of linear layers using it."""
        return dict(self._gpu.linear_kernels)

    @contextlib.contextmanager
    def profile(self) -> Iterator[dict[str, float]]:
        """Time every kernel kind with CUDA events while the block runs (graphs are not used
        meanwhile); the yielded dict is filled with kind → milliseconds on exit."""
        out: dict[str, float] = {}
        self._gpu.reset_profile()
        self._gpu.set_profile(True)
        try:
            yield out
        finally:
            self._gpu.set_profile(False)
            out.update(dict(self._gpu.profile_ms()))

    def set_kv_cache(self, bits: int = 0, clip: float = 1.0, hadamard: bool = False) -> None:
        """As the CPU model's ``set_kv_cache``; the model is uploaded again with the new format."""
        if not hasattr(self.cpu_model, "set_kv_cache"):
            raise QuellmError(f"{self.family} models have no KV cache")
        self.cpu_model.set_kv_cache(bits, clip, hadamard)
        self._upload()

    @property
    def kv_cache(self) -> dict[str, Any]:
        return dict(getattr(self.cpu_model, "kv_cache", {}))

    # ---- CausalLM hooks --------------------------------------------------------------------------
    @property
    def max_len(self) -> int:
        return self.cpu_model.max_len

    @property
    def norm_eps(self) -> float:
        return self.cpu_model.norm_eps

    def new_state(self, batch: int = 1, capacity: int | None = None) -> GpuSeqState:
        if batch < 1:
            raise QuellmError(f"new_state: batch must be >= 1, got {batch}")
        if self.family == "mamba":
            cap = 0
        else:
            cap = self.max_len if capacity is None else int(capacity)
            if not 1 <= cap <= self.max_len:
                raise QuellmError(f"cache capacity must be in [1, {self.max_len}] (max_position_embeddings), got {cap}")
        with _cuda_errors("allocating the state"):
            return GpuSeqState(self._gpu.new_state(int(batch), cap), self)

    def _forward(self, tokens: np.ndarray, state: Any, all_logits: bool, observers: Any) -> np.ndarray:
        if observers is not None:
            raise QuellmError("calibration observers run on the CPU runtime; use model.to('cpu')")
        if not isinstance(state, GpuSeqState) or state._model is not self:
            raise QuellmError("forward: the state was not made by this GPU model (use model.new_state)")
        if state.batch != tokens.shape[0]:
            raise QuellmError(f"forward: state for {state.batch} sequences, tokens for {tokens.shape[0]}")
        if self.family != "mamba":
            end = state.len + tokens.shape[1]
            if end > state.capacity:
                raise QuellmError(f"forward: {end} positions exceed the state's capacity {state.capacity}"
                                  + (f" (max_position_embeddings = {self.max_len})" if end > self.max_len else ""))
        with _cuda_errors("forward"):
            return self._gpu.forward(tokens, state._st, all_logits)

    def forward_layers(self, hidden: Any, start: int, stop: int, *, observers: Any = None) -> np.ndarray:
        """Runs on the CPU model (layer-by-layer calibration is a CPU job)."""
        return self.cpu_model.forward_layers(hidden, start, stop, observers=observers)

    def _layer_states(self, batch: int, capacity: int, n_layers: int) -> list[Any]:
        return self.cpu_model._layer_states(batch, capacity, n_layers)

    def save(self, directory: Any, *, overwrite: bool = False) -> Any:
        return self.cpu_model.save(directory, overwrite=overwrite)


def _check_device(device: str) -> str:
    d = str(device).lower()
    if d.startswith("cuda:"):
        if d != "cuda:0":
            raise QuellmError(f"device {device!r}: only the first GPU (cuda / cuda:0) is supported")
        d = "cuda"
    if d not in DEVICES:
        raise QuellmError(f"device must be one of {DEVICES}, got {device!r}")
    return d


def resolve_device(device: str) -> str:
    """``"auto"`` → ``"cuda"`` when the GPU runtime can run here, else ``"cpu"`` (with a message
    on stderr saying why); ``"cpu"`` / ``"cuda"`` unchanged (checked)."""
    d = _check_device(device)
    if d != "auto":
        return d
    try:
        require_gpu()
    except QuellmError as e:
        print(f"quellm: device='auto' runs on the CPU: {e}", file=sys.stderr)
        return "cpu"
    return "cuda"


def to_device(model: CausalLM, device: str, *, dtype: str = "float16", graphs: bool = True) -> CausalLM:
    """The model on ``device`` ("cpu", "cuda" or "auto"); see :meth:`CausalLM.to`."""
    d = _check_device(device)
    if d == "cpu":
        return model.cpu_model if isinstance(model, GpuModel) else model
    if d == "auto":
        d = resolve_device("auto")
        if d == "cpu":
            return model.cpu_model if isinstance(model, GpuModel) else model
        try:
            return GpuModel(model, dtype, graphs)
        except QuellmError as e:  # e.g. out of memory: still run, on the CPU
            print(f"quellm: device='auto' runs on the CPU: {e}", file=sys.stderr)
            return model.cpu_model if isinstance(model, GpuModel) else model
    if isinstance(model, GpuModel):
        return model.to("cuda", dtype=dtype, graphs=graphs)
    return GpuModel(model, dtype, graphs)
