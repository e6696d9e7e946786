"""Typed model configurations parsed from Hugging Face ``config.json``.

One dataclass per architecture family quellm runs (shared/MODELS.md §2–3):

* :class:`LlamaConfig` — ``LlamaForCausalLM``, ``MistralForCausalLM``, ``Qwen2ForCausalLM``
  (and checkpoints of the same shape, such as SmolLM and TinyLlama).
* :class:`MambaConfig` — ``MambaForCausalLM`` (Mamba-1).

Both RoPE config spellings are accepted: transformers 4.x's top-level ``rope_theta`` +
``rope_scaling`` and 5.x's ``rope_parameters``. Each config knows the tensors its checkpoint
must hold (:meth:`tensor_shapes`), so loaders check names and shapes before any data is read.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any, Union

from ..errors import ConfigError

__all__ = [
    "LLAMA_ARCHITECTURES",
    "MAMBA_ARCHITECTURES",
    "SUPPORTED_ARCHITECTURES",
    "LlamaConfig",
    "MambaConfig",
    "ModelConfig",
    "RopeConfig",
    "check_layer_count",
    "parse_config",
    "read_config",
]

LLAMA_ARCHITECTURES = ("LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM")
MAMBA_ARCHITECTURES = ("MambaForCausalLM",)
SUPPORTED_ARCHITECTURES = LLAMA_ARCHITECTURES + MAMBA_ARCHITECTURES
ROPE_TYPES = ("default", "linear", "llama3")


def _get(d: dict[str, Any], key: str, typ: type | tuple[type, ...], where: str, default: Any = ...) -> Any:
    if key not in d or d[key] is None:
        if default is ...:
            raise ConfigError(f"{where}: required field {key!r} is missing")
        return default
    v = d[key]
    ok_types = typ if isinstance(typ, tuple) else (typ,)
    # JSON has no int/float distinction for whole numbers; bool is not a number here.
    if isinstance(v, bool) and bool not in ok_types:
        raise ConfigError(f"{where}: field {key!r} must be {_tname(typ)}, got {v!r}")
    if float in ok_types and isinstance(v, int) and not isinstance(v, bool):
        v = float(v)
    if not isinstance(v, ok_types):
        raise ConfigError(f"{where}: field {key!r} must be {_tname(typ)}, got {v!r}")
    if isinstance(v, int) and not isinstance(v, bool) and not -_INT64 <= v < _INT64:
        # sizes go to the C++ runtime as int64
        raise ConfigError(f"{where}: field {key!r} = {v} is out of range")
    return v


_INT64 = 1 << 63


def _tname(typ: type | tuple[type, ...]) -> str:
    return " or ".join(t.__name__ for t in (typ if isinstance(typ, tuple) else (typ,)))


def _positive(v: int, key: str, where: str) -> int:
    if v <= 0:
        raise ConfigError(f"{where}: field {key!r} must be positive, got {v}")
    return v


@dataclasses.dataclass(frozen=True)
class RopeConfig:
    """Rotary position embedding settings (MODELS.md §2.4).

    ``rope_type`` is ``"default"``, ``"linear"`` (``inv_freq / factor``) or ``"llama3"``
    (``factor``, ``low_freq_factor``, ``high_freq_factor``, ``original_max_position_embeddings``).
    """

    theta: float = 10000.0
    rope_type: str = "default"
    factor: float = 1.0
    low_freq_factor: float = 1.0
    high_freq_factor: float = 4.0
    original_max_position_embeddings: int = 8192

    @staticmethod
    def from_config(d: dict[str, Any], where: str) -> "RopeConfig":
        params = d.get("rope_parameters")
        if isinstance(params, dict):
            theta = _get(params, "rope_theta", float, where, d.get("rope_theta", 10000.0))
            scaling: dict[str, Any] | None = params
        else:
            theta = _get(d, "rope_theta", float, where, 10000.0)
            scaling = d.get("rope_scaling")
            if scaling is not None and not isinstance(scaling, dict):
                raise ConfigError(f"{where}: 'rope_scaling' must be null or an object, got {scaling!r}")
        rope_type = "default"
        if scaling:
            rope_type = scaling.get("rope_type", scaling.get("type", "default")) or "default"
        if rope_type not in ROPE_TYPES:
            raise ConfigError(
                f"{where}: unsupported rope type {rope_type!r}; quellm supports {', '.join(ROPE_TYPES)}"
            )
        if theta <= 0:
            raise ConfigError(f"{where}: rope_theta must be positive, got {theta}")
        if rope_type == "default":
            return RopeConfig(theta=theta)
        assert scaling is not None
        factor = _get(scaling, "factor", float, where)
        if factor <= 0:
            raise ConfigError(f"{where}: rope scaling factor must be positive, got {factor}")
        if rope_type == "linear":
            return RopeConfig(theta=theta, rope_type="linear", factor=factor)
        lo = _get(scaling, "low_freq_factor", float, where)
        hi = _get(scaling, "high_freq_factor", float, where)
        orig = _get(scaling, "original_max_position_embeddings", int, where)
        if not hi > lo > 0 or orig <= 0:
            raise ConfigError(
                f"{where}: llama3 rope scaling needs high_freq_factor > low_freq_factor > 0 and "
                f"original_max_position_embeddings > 0, got {hi}, {lo}, {orig}"
            )
        return RopeConfig(theta, "llama3", factor, lo, hi, orig)


@dataclasses.dataclass(frozen=True)
class LlamaConfig:
    """A Llama-family decoder (Llama, Mistral, Qwen2, SmolLM, TinyLlama)."""

    architecture: str
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    vocab_size: int
    rms_norm_eps: float
    tie_word_embeddings: bool
    rope: RopeConfig
    max_position_embeddings: int
    attention_bias: bool = False  # bias on q, k, v and o (Llama's attention_bias)
    qkv_bias: bool = False  # bias on q, k, v only (Qwen2)
    mlp_bias: bool = False
    sliding_window: int | None = None
    bos_token_id: int | None = None
    eos_token_id: int | list[int] | None = None
    pad_token_id: int | None = None
    raw: dict[str, Any] = dataclasses.field(default_factory=dict, repr=False, compare=False)

    family = "llama"

    @staticmethod
    def from_dict(d: dict[str, Any], where: str = "config.json") -> "LlamaConfig":
        arch = d["architectures"][0]
        H = _positive(_get(d, "hidden_size", int, where), "hidden_size", where)
        nh = _positive(_get(d, "num_attention_heads", int, where), "num_attention_heads", where)
        nkv = _positive(_get(d, "num_key_value_heads", int, where, nh), "num_key_value_heads", where)
        if nh % nkv:
            raise ConfigError(f"{where}: num_attention_heads ({nh}) is not a multiple of num_key_value_heads ({nkv})")
        if "head_dim" in d and d["head_dim"] is not None:
            hd = _positive(_get(d, "head_dim", int, where), "head_dim", where)
        else:
            if H % nh:
                raise ConfigError(f"{where}: hidden_size ({H}) is not a multiple of num_attention_heads ({nh}) and no head_dim is given")
            hd = H // nh
        if hd % 2:
            raise ConfigError(f"{where}: head_dim must be even for RoPE, got {hd}")
        act = _get(d, "hidden_act", str, where, "silu")
        if act != "silu":
            raise ConfigError(f"{where}: unsupported hidden_act {act!r}; quellm supports 'silu'")
        sw = d.get("sliding_window")
        if d.get("use_sliding_window") is False:
            sw = None
        if isinstance(sw, int) and not isinstance(sw, bool):
            sw = _get(d, "sliding_window", int, where)  # range check (0 or negative: no window)
        return LlamaConfig(
            architecture=arch,
            hidden_size=H,
            intermediate_size=_positive(_get(d, "intermediate_size", int, where), "intermediate_size", where),
            num_hidden_layers=_positive(_get(d, "num_hidden_layers", int, where), "num_hidden_layers", where),
            num_attention_heads=nh,
            num_key_value_heads=nkv,
            head_dim=hd,
            vocab_size=_positive(_get(d, "vocab_size", int, where), "vocab_size", where),
            rms_norm_eps=_get(d, "rms_norm_eps", float, where, 1e-6),
            tie_word_embeddings=_get(d, "tie_word_embeddings", bool, where, False),
            rope=RopeConfig.from_config(d, where),
            max_position_embeddings=_positive(_get(d, "max_position_embeddings", int, where, 2048),
                                              "max_position_embeddings", where),
            attention_bias=_get(d, "attention_bias", bool, where, False),
            qkv_bias=arch == "Qwen2ForCausalLM",
            mlp_bias=_get(d, "mlp_bias", bool, where, False),
            sliding_window=sw if isinstance(sw, int) and not isinstance(sw, bool) else None,
            bos_token_id=d.get("bos_token_id"),
            eos_token_id=d.get("eos_token_id"),
            pad_token_id=d.get("pad_token_id"),
            raw=dict(d),
        )

    def tensor_shapes(self) -> tuple[dict[str, tuple[int, ...]], dict[str, tuple[int, ...]]]:
        """``(required, optional)`` tensor names and shapes of a checkpoint (MODELS.md §2.2)."""
        H, I, V, hd = self.hidden_size, self.intermediate_size, self.vocab_size, self.head_dim
        q, kv = self.num_attention_heads * hd, self.num_key_value_heads * hd
        req: dict[str, tuple[int, ...]] = {"model.embed_tokens.weight": (V, H), "model.norm.weight": (H,)}
        for i in range(self.num_hidden_layers):
            p = f"model.layers.{i}."
            lin = {
                "self_attn.q_proj": (q, H), "self_attn.k_proj": (kv, H), "self_attn.v_proj": (kv, H),
                "self_attn.o_proj": (H, q), "mlp.gate_proj": (I, H), "mlp.up_proj": (I, H),
                "mlp.down_proj": (H, I),
            }
            for name, shape in lin.items():
                req[p + name + ".weight"] = shape
            req[p + "input_layernorm.weight"] = (H,)
            req[p + "post_attention_layernorm.weight"] = (H,)
            biased = []
            if self.attention_bias:
                biased += ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj"]
            elif self.qkv_bias:
                biased += ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"]
            if self.mlp_bias:
                biased += ["mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"]
            for name in biased:
                req[p + name + ".bias"] = (lin[name][0],)
        opt: dict[str, tuple[int, ...]] = {}
        (opt if self.tie_word_embeddings else req)["lm_head.weight"] = (V, H)
        return req, opt

    def num_parameters(self) -> int:
        req, _ = self.tensor_shapes()
        return sum(math.prod(s) for s in req.values())

    def summary(self) -> dict[str, Any]:
        return {
            "architecture": self.architecture,
            "layers": self.num_hidden_layers,
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "heads": f"{self.num_attention_heads} (kv {self.num_key_value_heads}, head_dim {self.head_dim})",
            "vocab_size": self.vocab_size,
            "rope": f"{self.rope.rope_type}, theta {self.rope.theta:g}",
            "max_position_embeddings": self.max_position_embeddings,
            "tied_embeddings": self.tie_word_embeddings,
        }


@dataclasses.dataclass(frozen=True)
class MambaConfig:
    """A Mamba-1 language model in the Hugging Face layout (MODELS.md §3)."""

    architecture: str
    hidden_size: int
    num_hidden_layers: int
    state_size: int
    expand: int
    intermediate_size: int
    conv_kernel: int
    time_step_rank: int
    vocab_size: int
    layer_norm_epsilon: float
    use_bias: bool
    use_conv_bias: bool
    residual_in_fp32: bool
    tie_word_embeddings: bool
    bos_token_id: int | None = None
    eos_token_id: int | list[int] | None = None
    pad_token_id: int | None = None
    raw: dict[str, Any] = dataclasses.field(default_factory=dict, repr=False, compare=False)

    family = "mamba"

    @staticmethod
    def from_dict(d: dict[str, Any], where: str = "config.json") -> "MambaConfig":
        arch = d["architectures"][0]
        d = dict(d)  # original-format keys (d_model, n_layer) stand in for the HF ones
        d.setdefault("hidden_size", d.get("d_model"))
        d.setdefault("num_hidden_layers", d.get("n_layer"))
        H = _positive(_get(d, "hidden_size", int, where), "hidden_size", where)
        L = _positive(_get(d, "num_hidden_layers", int, where), "num_hidden_layers", where)
        expand = _positive(_get(d, "expand", int, where, 2), "expand", where)
        Di = _positive(_get(d, "intermediate_size", int, where, expand * H), "intermediate_size", where)
        rank = d.get("time_step_rank", "auto")
        if rank == "auto":
            rank = math.ceil(H / 16)
        elif not isinstance(rank, int) or isinstance(rank, bool) or rank <= 0:
            raise ConfigError(f"{where}: time_step_rank must be a positive integer or 'auto', got {rank!r}")
        act = _get(d, "hidden_act", str, where, "silu")
        if act != "silu":
            raise ConfigError(f"{where}: unsupported hidden_act {act!r}; quellm supports 'silu'")
        if d.get("rms_norm") is False:  # original-format configs may ask for LayerNorm blocks
            raise ConfigError(f"{where}: rms_norm = false (LayerNorm Mamba blocks) is not supported; quellm runs RMSNorm Mamba")
        return MambaConfig(
            architecture=arch,
            hidden_size=H,
            num_hidden_layers=L,
            state_size=_positive(_get(d, "state_size", int, where, 16), "state_size", where),
            expand=expand,
            intermediate_size=Di,
            conv_kernel=_positive(_get(d, "conv_kernel", int, where, 4), "conv_kernel", where),
            time_step_rank=rank,
            vocab_size=_positive(_get(d, "vocab_size", int, where), "vocab_size", where),
            layer_norm_epsilon=_get(d, "layer_norm_epsilon", float, where, 1e-5),
            use_bias=_get(d, "use_bias", bool, where, False),
            use_conv_bias=_get(d, "use_conv_bias", bool, where, True),
            residual_in_fp32=_get(d, "residual_in_fp32", bool, where, True),
            tie_word_embeddings=_get(d, "tie_word_embeddings", bool, where, True),
            bos_token_id=d.get("bos_token_id"),
            eos_token_id=d.get("eos_token_id"),
            pad_token_id=d.get("pad_token_id"),
            raw=dict(d),
        )

    def tensor_shapes(self) -> tuple[dict[str, tuple[int, ...]], dict[str, tuple[int, ...]]]:
        """``(required, optional)`` tensor names and shapes of a checkpoint (MODELS.md §3.2)."""
        H, Di, N, K, R, V = (self.hidden_size, self.intermediate_size, self.state_size,
                             self.conv_kernel, self.time_step_rank, self.vocab_size)
        req: dict[str, tuple[int, ...]] = {"backbone.embeddings.weight": (V, H), "backbone.norm_f.weight": (H,)}
        for i in range(self.num_hidden_layers):
            p = f"backbone.layers.{i}."
            req.update({
                p + "norm.weight": (H,),
                p + "mixer.in_proj.weight": (2 * Di, H),
                p + "mixer.conv1d.weight": (Di, 1, K),
                p + "mixer.x_proj.weight": (R + 2 * N, Di),
                p + "mixer.dt_proj.weight": (Di, R),
                p + "mixer.dt_proj.bias": (Di,),
                p + "mixer.A_log": (Di, N),
                p + "mixer.D": (Di,),
                p + "mixer.out_proj.weight": (H, Di),
            })
            if self.use_conv_bias:
                req[p + "mixer.conv1d.bias"] = (Di,)
            if self.use_bias:
                req[p + "mixer.in_proj.bias"] = (2 * Di,)
                req[p + "mixer.out_proj.bias"] = (H,)
        opt: dict[str, tuple[int, ...]] = {}
        (opt if self.tie_word_embeddings else req)["lm_head.weight"] = (V, H)
        return req, opt

    def num_parameters(self) -> int:
        req, _ = self.tensor_shapes()
        return sum(math.prod(s) for s in req.values())

    def summary(self) -> dict[str, Any]:
        return {
            "architecture": self.architecture,
            "layers": self.num_hidden_layers,
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "state_size": self.state_size,
            "conv_kernel": self.conv_kernel,
            "time_step_rank": self.time_step_rank,
            "vocab_size": self.vocab_size,
            "tied_embeddings": self.tie_word_embeddings,
        }


ModelConfig = Union[LlamaConfig, MambaConfig]


def check_layer_count(config: ModelConfig, n_tensors: int, where: str) -> None:
    """Refuse a config whose layer count the file cannot hold (every layer needs tensors of its
    own) before :meth:`tensor_shapes` lists them: a corrupt ``num_hidden_layers`` of 10^12
    would otherwise take that many steps and that much memory just to name the tensors."""
    if config.num_hidden_layers > n_tensors:
        raise ConfigError(f"{where}: num_hidden_layers = {config.num_hidden_layers}, but the weights hold only "
                          f"{n_tensors} tensors")


def parse_config(d: Any, where: str = "config.json") -> ModelConfig:
    """Parse a ``config.json`` dictionary into :class:`LlamaConfig` or :class:`MambaConfig`.

    Raises:
        ConfigError: not an object, no ``architectures``, an architecture quellm does not run,
            or a field that is missing or out of range. The message starts with ``where``.
    """
    if not isinstance(d, dict):
        raise ConfigError(f"{where}: expected a JSON object, got {type(d).__name__}")
    archs = d.get("architectures")
    if not isinstance(archs, list) or not archs or not all(isinstance(a, str) for a in archs):
        raise ConfigError(f"{where}: 'architectures' must be a non-empty list of names")
    arch = archs[0]
    if arch in LLAMA_ARCHITECTURES:
        return LlamaConfig.from_dict(d, where)
    if arch in MAMBA_ARCHITECTURES:
        return MambaConfig.from_dict(d, where)
    raise ConfigError(
        f"{where}: unsupported architecture {arch!r}; quellm supports {', '.join(SUPPORTED_ARCHITECTURES)}"
    )


def read_config(path: str | Path) -> tuple[ModelConfig, dict[str, Any]]:
    """Read and parse a ``config.json``; returns the typed config and the raw dictionary."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config.json not found")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:  # Recursion: nested too deeply
        raise ConfigError(f"{path}: cannot parse JSON: {e}") from None
    return parse_config(raw, str(path)), raw
