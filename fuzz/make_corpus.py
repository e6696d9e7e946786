"""Write the committed seed corpora of the fuzz targets (``fuzz/corpus/<target>/``).

Seeds are tiny, valid inputs made the way the tests make theirs (``tests/conftest.py``'s random
checkpoints, ``tests/test_gguf.py``'s GGUF writer, the recipes, the format encoders), shrunk to a
few KB each so mutations stay cheap. Deterministic: running it again rewrites the same bytes.

    python fuzz/make_corpus.py            # needs quellm installed (and gguf for the GGUF seeds)
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

FUZZ = Path(__file__).resolve().parent
sys.path.insert(0, str(FUZZ))
sys.path.insert(0, str(FUZZ.parent / "tests"))

import _harness  # noqa: E402
import quellm  # noqa: E402
from quellm import formats, recipes  # noqa: E402
from quellm.io import save_checkpoint  # noqa: E402

LLAMA = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 8, "intermediate_size": 16,
         "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 1, "vocab_size": 16,
         "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "rope_scaling": None, "tie_word_embeddings": False,
         "hidden_act": "silu", "max_position_embeddings": 32}
MAMBA = {"architectures": ["MambaForCausalLM"], "model_type": "mamba", "hidden_size": 4, "num_hidden_layers": 1,
         "state_size": 2, "expand": 2, "conv_kernel": 2, "time_step_rank": "auto", "vocab_size": 8,
         "layer_norm_epsilon": 1e-5, "use_bias": False, "use_conv_bias": True, "tie_word_embeddings": True}


def tensors_for(config: dict, dtype=np.float32, seed: int = 0) -> dict[str, np.ndarray]:
    from quellm.io import parse_config

    required, optional = parse_config(config).tensor_shapes()
    rng = np.random.default_rng(seed)
    return {n: (0.5 * rng.standard_normal(s)).astype(np.float32).astype(dtype) for n, s in required.items()}


def write(target: str, name: str, data: bytes) -> None:
    d = FUZZ / "corpus" / target
    d.mkdir(parents=True, exist_ok=True)
    (d / name).write_bytes(data)
    print(f"{target}/{name}: {len(data)} bytes")


def checkpoint_seeds(tmp: Path) -> None:
    import ml_dtypes

    for name, cfg, dtype in [("llama-f32", LLAMA, np.float32), ("llama-bf16-tied", {**LLAMA, "tie_word_embeddings": True},
                             ml_dtypes.bfloat16), ("llama-bias-f16", {**LLAMA, "model_type": "qwen2",
                             "architectures": ["Qwen2ForCausalLM"]}, np.float16), ("mamba-f32", MAMBA, np.float32)]:
        t = tensors_for(cfg, dtype)
        if cfg.get("model_type") == "qwen2":
            from quellm.io import parse_config

            _, optional = parse_config(cfg).tensor_shapes()
            t.update({n: np.zeros(s, dtype) for n, s in optional.items() if n.endswith(".bias")})
        p = save_checkpoint(tmp / name, cfg, t)
        write("checkpoint", name, _harness.join_parts((p / "config.json").read_bytes(),
                                                      (p / "model.safetensors").read_bytes()))


def gguf_seeds(tmp: Path) -> None:
    try:
        import gguf  # noqa: F401
    except ImportError:
        print("gguf not installed: GGUF seeds skipped")
        return
    from test_gguf import write_gguf

    Q = gguf.GGMLQuantizationType
    tok = {"tokens": [chr(ord("a") + i) for i in range(14)] + ["ab", "<s>"], "types": [1] * 15 + [3],
           "merges": ["a b"], "bos": 15, "eos": 15, "add_bos": True}
    cfg = LLAMA
    t = tensors_for(cfg)
    write("gguf", "llama-f32-tok", write_gguf(tmp / "a.gguf", cfg, t, tokenizer=tok).read_bytes())
    write("gguf", "llama-f16-notok", write_gguf(tmp / "b.gguf", cfg, t, types={n: Q.F16 for n in t}).read_bytes())
    cfg32 = {**LLAMA, "hidden_size": 32, "intermediate_size": 32, "num_attention_heads": 4, "num_key_value_heads": 2}
    t32 = tensors_for(cfg32)
    types = {n: Q.Q8_0 for n in t32 if n.endswith("proj.weight")}
    write("gguf", "llama-q8_0", write_gguf(tmp / "c.gguf", cfg32, t32, types=types).read_bytes())


def quantized_seeds(tmp: Path) -> None:
    small = {**LLAMA, "hidden_size": 32, "intermediate_size": 32, "num_attention_heads": 4, "num_key_value_heads": 2}
    for name, cfg, recipe in [
        ("w8a8", LLAMA, recipes.rtn(8, 8, None, w_clip=1.0)),
        ("w4a8-g8-had", LLAMA, recipes.rtn(4, 8, 8, w_clip=1.0, hadamard=True)),
        ("w4a16-asym-g4", LLAMA, recipes.rtn(4, 16, 4, sym=False, w_clip=1.0)),
        ("mxfp4", small, "mxfp4:a_bits=8"),
        ("ovp4", small, "ovp4"),
        ("mamba-w8a8", MAMBA, recipes.rtn(8, 8, None, w_clip=1.0)),
    ]:
        src = save_checkpoint(tmp / f"src-{name}", cfg, tensors_for(cfg))
        q = quellm.quantize(quellm.load(src), recipe)
        p = q.save(tmp / f"q-{name}")
        write("quantized", name, _harness.join_parts((p / "config.json").read_bytes(),
                                                     (p / "quellm_quant.json").read_bytes(),
                                                     (p / "model.safetensors").read_bytes()))


def formats_seeds() -> None:
    sys.path.insert(0, str(FUZZ))
    import fuzz_formats as ff

    rng = np.random.default_rng(0)
    for i, name in enumerate(ff.NAMES):
        for j, params in enumerate(ff.VARIANTS.get(name, [{}])):
            fmt = formats.get(name, **params)
            rows, mult = 2, 2
            k = mult * fmt.info.align
            x = (rng.standard_normal((rows, k)) * np.exp(rng.standard_normal((rows, k)))).astype(np.float32)
            p = fmt.encode(x)
            # well-formed mode: header, then codes, scales, zeros, tensor scale as raw bytes
            body = p.codes.tobytes() + np.ascontiguousarray(p.scales).tobytes()
            body += b"" if p.zeros is None else p.zeros.astype("<f4").tobytes()
            body += b"" if p.tensor_scale is None else p.tensor_scale.astype("<f4").tobytes()
            head = bytes([0, i, j, rows - 1, mult - 1, 1, 0])
            write("formats", f"wf-{name}-{j}", head + body)
            if j == 0:  # arbitrary mode: the saved tensors, framed
                t = p.to_tensors("")
                sc = t["scales"]
                dsel = {np.dtype(np.float32): 0, np.dtype(np.uint8): 1}[sc.dtype]
                h = bytes([1, (t["codes"].shape[1] - 1) % 64, dsel, (sc.shape[1] - 1) % 16,
                           (1 if "zeros" in t else 0) | (2 if "tensor_scale" in t else 0)])
                parts = [t["format"].tobytes(), t["codes"].tobytes(), sc.tobytes(),
                         t["zeros"].tobytes() if "zeros" in t else b"",
                         t["tensor_scale"].tobytes() if "tensor_scale" in t else b""]
                write("formats", f"ar-{name}", h + _harness.join_parts(*parts))
    # the JSON of a non-default parameter set, for the arbitrary mode
    p = formats.get("int4", group=4, sym=False).encode(rng.standard_normal((2, 8)).astype(np.float32))
    t = p.to_tensors("")
    h = bytes([1, t["codes"].shape[1] - 1, 0, t["scales"].shape[1] - 1, 1])
    write("formats", "ar-int4-asym-g4", h + _harness.join_parts(t["format"].tobytes(), t["codes"].tobytes(),
                                                                   t["scales"].tobytes(), t["zeros"].tobytes(), b""))


def main() -> None:
    shutil.rmtree(FUZZ / "corpus", ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix="quellm-corpus-"))
    try:
        checkpoint_seeds(tmp)
        gguf_seeds(tmp)
        quantized_seeds(tmp)
        formats_seeds()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    # every seed must pass its target
    for target in ("checkpoint", "gguf", "quantized", "formats"):
        mod = __import__(f"fuzz_{target}")
        for f in sorted((FUZZ / "corpus" / target).glob("*")):
            try:
                mod.check(f.read_bytes())
            except Exception as e:
                raise SystemExit(f"seed {f} does not pass fuzz_{target}: {type(e).__name__}: {e}") from None


if __name__ == "__main__":
    main()
