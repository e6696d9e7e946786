"""Checkpoint I/O: round trips and every bad-input case of the foundation issue."""

from __future__ import annotations

import json
import struct

import ml_dtypes
import numpy as np
import pytest
from conftest import TINY_LLAMA, TINY_MAMBA

import quellm
from quellm.errors import CheckpointError, ConfigError, QuellmError
from quellm.io import LlamaConfig, MambaConfig, load_checkpoint, parse_config, save_checkpoint

DTYPES = [np.float32, np.float16, ml_dtypes.bfloat16]


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f16", "bf16"])
@pytest.mark.parametrize("shard_bytes", [None, 4000], ids=["single", "sharded"])
@pytest.mark.parametrize("config", [TINY_LLAMA, TINY_MAMBA], ids=["llama", "mamba"])
def test_round_trip(make_checkpoint, config, dtype, shard_bytes):
    path, tensors = make_checkpoint(config, dtype, shard_bytes)
    files = sorted(p.name for p in path.iterdir())
    if shard_bytes:
        assert "model.safetensors.index.json" in files and sum(f.endswith(".safetensors") for f in files) > 1
    else:
        assert files == ["config.json", "model.safetensors"]
    ckpt = load_checkpoint(path)
    assert set(ckpt) == set(tensors)
    for name, want in tensors.items():
        got = ckpt[name]
        assert got.dtype == np.dtype(dtype) and got.shape == want.shape
        assert np.array_equal(got.view(np.uint8), want.view(np.uint8)), name
        assert not got.flags.writeable
        f32 = ckpt.get(name, np.float32)
        assert f32.dtype == np.float32 and np.array_equal(f32, want.astype(np.float32))
    assert ckpt.config == parse_config(config)


def test_tensors_are_memory_mapped(make_checkpoint):
    path, _ = make_checkpoint()
    ckpt = load_checkpoint(path)
    arr = ckpt["model.embed_tokens.weight"]
    base = arr
    while base.base is not None and not isinstance(base, np.memmap):
        base = base.base
    assert isinstance(base, np.memmap)


def test_typed_configs():
    cfg = parse_config(TINY_LLAMA)
    assert isinstance(cfg, LlamaConfig)
    assert (cfg.head_dim, cfg.num_key_value_heads, cfg.rope.rope_type) == (8, 2, "default")
    m = parse_config(TINY_MAMBA)
    assert isinstance(m, MambaConfig)
    assert (m.intermediate_size, m.time_step_rank) == (32, 1)


def test_rope_both_spellings_agree():
    legacy = dict(TINY_LLAMA, rope_theta=500000.0, rope_scaling={
        "rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
        "original_max_position_embeddings": 64})
    new = {k: v for k, v in legacy.items() if k not in ("rope_theta", "rope_scaling")}
    new["rope_parameters"] = dict(legacy["rope_scaling"], rope_theta=500000.0)
    a, b = parse_config(legacy), parse_config(new)
    assert a.rope == b.rope and a.rope.rope_type == "llama3" and a.rope.theta == 500000.0
    old_style = dict(TINY_LLAMA, rope_scaling={"type": "linear", "factor": 2.0})
    assert parse_config(old_style).rope.rope_type == "linear"


@pytest.mark.parametrize("bad, match", [({"rms_norm": False}, "rms_norm"), ({"hidden_act": "gelu"}, "hidden_act"),
                                        ({"time_step_rank": 0}, "time_step_rank")])
def test_unsupported_mamba_options(bad, match):
    with pytest.raises(ConfigError, match=match):
        parse_config(dict(TINY_MAMBA, **bad))


def test_qwen2_and_tied_layouts():
    q = parse_config(dict(TINY_LLAMA, architectures=["Qwen2ForCausalLM"], tie_word_embeddings=True))
    req, opt = q.tensor_shapes()
    assert req["model.layers.0.self_attn.q_proj.bias"] == (32,)
    assert "model.layers.0.self_attn.o_proj.bias" not in req
    assert "lm_head.weight" in opt and "lm_head.weight" not in req


def test_save_refuses_to_overwrite_then_replaces(make_checkpoint, tmp_path):
    path, tensors = make_checkpoint()
    with pytest.raises(CheckpointError, match="already exists"):
        save_checkpoint(path, TINY_LLAMA, tensors)
    t2 = {k: v + 1 for k, v in tensors.items()}
    save_checkpoint(path, TINY_LLAMA, t2, extra_json={"quellm.json": {"a": 1}}, overwrite=True)
    ckpt = load_checkpoint(path)
    assert np.array_equal(ckpt["model.norm.weight"], t2["model.norm.weight"])
    assert json.loads((path / "quellm.json").read_text()) == {"a": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]  # no temp dirs left


def test_failed_save_leaves_nothing(tmp_path):
    tensors = {"a": np.zeros(3, np.float32)}
    with pytest.raises(TypeError):
        save_checkpoint(tmp_path / "out", TINY_LLAMA, tensors, extra_json={"x.json": {"bad": object()}})
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(CheckpointError, match="dtype"):
        save_checkpoint(tmp_path / "out", TINY_LLAMA, {"a": np.zeros(3, np.complex128)})
    assert list(tmp_path.iterdir()) == []


def test_extra_files_copied(tmp_path, make_checkpoint):
    tok = tmp_path / "tokenizer.json"
    tok.write_text("{}")
    _, tensors = make_checkpoint()
    out = save_checkpoint(tmp_path / "b", TINY_LLAMA, tensors, extra_files={"tokenizer.json": tok})
    assert load_checkpoint(out).tokenizer_path == out / "tokenizer.json"


# ---- bad input: one clear QuellmError naming the file -----------------------------------------

def _snapshot(path):
    return {p.name: p.read_bytes() for p in sorted(path.iterdir())}


def expect_error(path, match, exc=CheckpointError):
    before = _snapshot(path) if path.is_dir() else None
    with pytest.raises(exc, match=match) as info:
        load_checkpoint(path)
    assert isinstance(info.value, QuellmError) and isinstance(info.value, ValueError)
    if before is not None:
        assert _snapshot(path) == before  # nothing the user passed in is modified
    return str(info.value)


def test_missing_directory(tmp_path):
    expect_error(tmp_path / "nope", "not a directory")


def test_missing_config(make_checkpoint):
    path, _ = make_checkpoint()
    (path / "config.json").unlink()
    msg = expect_error(path, "config.json not found", ConfigError)
    assert str(path) in msg


@pytest.mark.parametrize("text, match", [
    ("{not json", "cannot parse JSON"),
    ("[1, 2]", "expected a JSON object"),
    ('{"hidden_size": 4}', "architectures"),
    (json.dumps(dict(TINY_LLAMA, architectures=["GPT2LMHeadModel"])), "unsupported architecture 'GPT2LMHeadModel'"),
    (json.dumps(dict(TINY_LLAMA, rope_scaling={"rope_type": "yarn", "factor": 4.0})), "unsupported rope type 'yarn'"),
    (json.dumps(dict(TINY_LLAMA, hidden_act="gelu")), "hidden_act"),
    (json.dumps({k: v for k, v in TINY_LLAMA.items() if k != "hidden_size"}), "'hidden_size' is missing"),
    (json.dumps(dict(TINY_LLAMA, num_attention_heads=3)), "multiple"),
    (json.dumps(dict(TINY_LLAMA, vocab_size="64")), "'vocab_size' must be int"),
    (json.dumps(dict(TINY_LLAMA, num_hidden_layers=-1)), "must be positive"),
])
def test_bad_config(make_checkpoint, text, match):
    path, _ = make_checkpoint()
    (path / "config.json").write_text(text)
    expect_error(path, match, ConfigError)


def test_missing_weights(make_checkpoint):
    path, _ = make_checkpoint()
    (path / "model.safetensors").unlink()
    expect_error(path, "no model.safetensors")


def test_missing_tensor(make_checkpoint, tmp_path):
    _, tensors = make_checkpoint()
    del tensors["model.layers.1.mlp.up_proj.weight"]
    path = save_checkpoint(tmp_path / "m", TINY_LLAMA, tensors)
    expect_error(path, r"'model.layers.1.mlp.up_proj.weight' required by LlamaForCausalLM is missing")


def test_shape_disagrees_with_config(make_checkpoint, tmp_path):
    _, tensors = make_checkpoint()
    tensors["model.layers.0.self_attn.k_proj.weight"] = np.zeros((8, 32), np.float32)
    path = save_checkpoint(tmp_path / "m", TINY_LLAMA, tensors)
    msg = expect_error(path, r"k_proj.weight' has shape \[8, 32\] but config.json implies \[16, 32\]")
    assert "model.safetensors" in msg


def test_untied_model_needs_lm_head(make_checkpoint, tmp_path):
    _, tensors = make_checkpoint()
    del tensors["lm_head.weight"]
    expect_error(save_checkpoint(tmp_path / "m", TINY_LLAMA, tensors), "lm_head.weight")


@pytest.mark.parametrize("cut", [0, 4, 8, 20, -1, -17])
def test_truncated_safetensors(make_checkpoint, cut):
    path, _ = make_checkpoint()
    f = path / "model.safetensors"
    data = f.read_bytes()
    f.write_bytes(data[:cut] if cut >= 0 else data[:cut])
    msg = expect_error(path, "not a valid safetensors file")
    assert "model.safetensors" in msg


@pytest.mark.parametrize("garble", ["header_len", "json", "offsets", "dtype", "zeros"])
def test_garbled_safetensors(make_checkpoint, garble):
    path, _ = make_checkpoint()
    f = path / "model.safetensors"
    data = bytearray(f.read_bytes())
    (n,) = struct.unpack("<Q", data[:8])
    header = data[8: 8 + n].decode()
    if garble == "header_len":
        data[:8] = struct.pack("<Q", 2**60)
    elif garble == "json":
        data[8:12] = b"}}}}"
    elif garble == "offsets":
        h = json.loads(header)
        h["model.norm.weight"]["data_offsets"][1] += 4
        new = json.dumps(h, separators=(",", ":")).encode()
        assert len(new) <= n
        data[8: 8 + n] = new.ljust(n)
    elif garble == "dtype":
        data[8: 8 + n] = header.replace('"F32"', '"Q9"', 1).encode()
    else:
        data[:] = bytes(len(data))
    f.write_bytes(bytes(data))
    expect_error(path, "not a valid safetensors file")


def test_unreadable_dtype_is_rejected(tmp_path):
    from safetensors.numpy import save_file

    path = tmp_path / "m"
    path.mkdir()
    (path / "config.json").write_text(json.dumps(TINY_LLAMA))
    save_file({"model.norm.weight": np.zeros(32, np.complex64)}, str(path / "model.safetensors"))
    expect_error(path, "dtype C64")


def test_sharded_index_points_at_missing_file(make_checkpoint):
    path, _ = make_checkpoint(shard_bytes=4000)
    shard = sorted(path.glob("model-*.safetensors"))[1]
    shard.unlink()
    msg = expect_error(path, f"shard '{shard.name}' listed in the index is missing")
    assert "model.safetensors.index.json" in msg


@pytest.mark.parametrize("content, match", [
    ("{", "invalid sharded index"),
    ('{"weight_map": 3}', "invalid sharded index"),
    ('{"weight_map": {"a": "../x.safetensors"}}', "outside the checkpoint"),
])
def test_bad_sharded_index(make_checkpoint, content, match):
    path, _ = make_checkpoint(shard_bytes=4000)
    (path / "model.safetensors.index.json").write_text(content)
    expect_error(path, match)


def test_tensor_in_two_shards(make_checkpoint):
    from safetensors.numpy import save_file

    path, tensors = make_checkpoint(shard_bytes=4000)
    index = json.loads((path / "model.safetensors.index.json").read_text())
    shard = sorted(path.glob("model-*.safetensors"))[0]
    dup = {"model.norm.weight": tensors["model.norm.weight"]}
    save_file(dup, str(path / "dup.safetensors"))
    index["weight_map"]["model.norm.weight.dup"] = "dup.safetensors"
    (path / "model.safetensors.index.json").write_text(json.dumps(index))
    expect_error(path, "also appears in")
    assert shard.exists()


def test_error_types_are_value_errors():
    assert issubclass(CheckpointError, ValueError) and issubclass(ConfigError, CheckpointError)
    assert quellm.QuellmError is QuellmError
