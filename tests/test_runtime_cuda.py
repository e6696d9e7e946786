"""The GPU runtime (cuda/runtime_*.cu) against the CPU runtime on the fixture models.

Tests marked ``cuda`` skip without a usable GPU. The others run everywhere: the error paths of
``device="cuda"`` / ``"auto"`` and of a build without CUDA. (The kernels' per-element arithmetic
is checked on the CPU by the ctest binary: cpp/tests/test_kernels.cpp, test_gpu_runtime_ops.)

Tolerances (max |diff| / max(1, max |logit|)), per device activation dtype:
  * float32: the GPU does the CPU's arithmetic up to summation order → 1e-4 (the kernels' logic);
  * float16: the rounding of weights and activations to f16 alone moves these random tiny models'
    logits by 1.2–2.8e-3 (measured with a numpy emulation of the same rounding points on the CPU),
    so 5e-3, with identical argmax and greedy tokens;
  * bfloat16: 3e-2.
Where a quantizer runs on the device's activations (4-bit activations, int4 KV cache) a value on
a rounding boundary may land in the neighbouring code: those comparisons allow more.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import quellm
from quellm import _core
from quellm.cli import main
from quellm.errors import QuellmError

FIXTURES = Path(__file__).parent / "fixtures"
LLAMAS = ["llama_untied", "llama_tied_llama3", "qwen2_bias", "llama_bias_linear"]
MAMBAS = ["mamba_tiny", "mamba_rank_nobias"]
MODELS = LLAMAS + MAMBAS
TOL = {"float32": 1e-4, "float16": 5e-3, "bfloat16": 3e-2}
HAS_GPU = quellm.cuda_available()[0]
no_gpu_only = pytest.mark.skipif(HAS_GPU, reason="checks the behaviour without a GPU")


def rel_err(got: np.ndarray, want: np.ndarray) -> float:
    return float(np.max(np.abs(got - want))) / max(1.0, float(np.max(np.abs(want))))


def close(got, want, what, tol=TOL["float32"], argmax=True):
    assert got.shape == want.shape, f"{what}: shape {got.shape} vs {want.shape}"
    assert np.isfinite(got).all(), f"{what}: non-finite logits"
    err = rel_err(got, want)
    assert err <= tol, f"{what}: max |diff| / scale = {err:.3g} > {tol}"
    if argmax:
        assert np.array_equal(np.argmax(got, -1), np.argmax(want, -1)), f"{what}: argmax differs"


# ---- without a GPU (or without CUDA in the build) ---------------------------------------------------
def test_bad_device_names():
    for dev in ("tpu", "gpu", "cuda:1"):
        with pytest.raises(QuellmError, match="device"):
            quellm.load(FIXTURES / "llama_untied", device=dev)


@no_gpu_only
def test_cuda_without_gpu_is_a_clear_error():
    with pytest.raises(QuellmError, match="no usable CUDA device|no CUDA support"):
        quellm.load(FIXTURES / "llama_untied", device="cuda")
    m = quellm.load(FIXTURES / "mamba_tiny")
    with pytest.raises(QuellmError, match="device='cuda'"):
        m.to("cuda")


@no_gpu_only
def test_auto_falls_back_to_cpu_with_a_message(capsys):
    m = quellm.load(FIXTURES / "llama_untied", device="auto")
    assert m.device == "cpu" and type(m).__name__ == "LlamaModel"
    assert "runs on the CPU" in capsys.readouterr().err
    assert m.to("auto") is m and m.to("cpu") is m
    assert "runs on the CPU" in capsys.readouterr().err


def test_build_without_cuda_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(_core, "HAS_CUDA", False)
    m = quellm.load(FIXTURES / "llama_untied")
    with pytest.raises(QuellmError, match="no CUDA support"):
        m.to("cuda")
    with pytest.raises(QuellmError, match="no CUDA support"):
        quellm.load(FIXTURES / "llama_untied", device="cuda")


def test_bad_gpu_dtype():
    m = quellm.load(FIXTURES / "llama_untied")
    with pytest.raises(QuellmError, match="dtype"):
        m.to("cuda", dtype="float64")


@no_gpu_only
def test_cli_device_option(capsys):
    assert main(["generate", str(FIXTURES / "llama_untied"), "--prompt", "x", "--device", "cuda"]) != 0
    assert "no usable CUDA device" in capsys.readouterr().err


@no_gpu_only
def test_bench_without_gpu_stops_with_the_reason():
    import subprocess
    import sys

    bench = Path(__file__).parent.parent / "bench" / "bench_runtime.py"
    r = subprocess.run([sys.executable, str(bench), "--device", "cuda", "--mamba-130m"], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 2 and "--device cuda" in r.stderr and "CUDA" in r.stderr


# ---- on the GPU -----------------------------------------------------------------------------------
def ref(name):
    return np.load(FIXTURES / name / "reference.npz")


@pytest.fixture(scope="module", params=[(m, d) for d in ("float32", "float16") for m in MODELS],
                ids=lambda p: f"{p[0]}-{p[1]}")
def pair(request):
    name, dtype = request.param
    cpu = quellm.load(FIXTURES / name)
    return name, cpu, cpu.to("cuda", dtype=dtype), TOL[dtype]


@pytest.mark.cuda
def test_full_pass(pair):
    name, cpu, gpu, tol = pair
    toks = ref(name)["tokens"]
    assert gpu.device == "cuda"
    close(gpu.forward(toks), cpu.forward(toks), f"{name} full vs CPU", tol)
    close(gpu.forward(toks), ref(name)["logits_full"], f"{name} full vs transformers", tol)


@pytest.mark.cuda
def test_prefill_then_decode(pair):
    name, cpu, gpu, tol = pair
    toks = ref(name)["tokens"]
    outs = {}
    for m in (cpu, gpu):
        st = m.new_state(1, len(toks))
        out = [m.forward(toks[:5], st)]
        out += [m.forward([t], st) for t in toks[5:]]
        assert st.len == len(toks)
        outs[m.device] = np.concatenate(out)
    close(outs["cuda"], outs["cpu"], f"{name} prefill+decode", tol)


@pytest.mark.cuda
def test_token_by_token_and_batch(pair):
    name, cpu, gpu, tol = pair
    r = ref(name)
    st = gpu.new_state(1, 12)
    got = np.concatenate([gpu.forward([t], st) for t in r["tokens"]])
    close(got, r["logits_stepwise"], f"{name} stepwise", tol)
    close(gpu.forward(r["tokens_batch"]), cpu.forward(r["tokens_batch"]), f"{name} batch", tol)
    close(gpu.forward(r["tokens_batch"], all_logits=False), cpu.forward(r["tokens_batch"], all_logits=False),
          f"{name} batch, last logits", tol)


@pytest.mark.cuda
def test_greedy_tokens_identical(pair):
    name, cpu, gpu, _ = pair
    prompt = [int(t) for t in ref(name)["tokens"][:6]]
    want = cpu.generate(prompt, 10, stop_at_eos=False).tokens
    assert gpu.generate(prompt, 10, stop_at_eos=False).tokens == want


@pytest.mark.cuda
def test_graphs_replay_identically(pair):
    name, cpu, gpu0, _ = pair
    toks = ref(name)["tokens"]
    outs = []
    for graphs in (True, False):
        gpu = gpu0.to("cuda", graphs=graphs)
        assert gpu.graphs == graphs
        st = gpu.new_state(2, len(toks))
        batch = np.stack([toks, toks[::-1]])
        out = [gpu.forward(batch[:, :4], st)]
        out += [gpu.forward(batch[:, t: t + 1], st) for t in range(4, len(toks))]
        outs.append(np.concatenate(out, axis=1))
        assert (gpu.graph_replays > 0) == graphs
    np.testing.assert_array_equal(outs[0], outs[1])


@pytest.mark.cuda
@pytest.mark.parametrize("name", MODELS)
def test_bfloat16_activations(name):
    cpu = quellm.load(FIXTURES / name)
    toks = ref(name)["tokens"]
    gpu = cpu.to("cuda", dtype="bfloat16")
    assert gpu.dtype == "bfloat16"
    close(gpu.forward(toks), cpu.forward(toks), f"{name} bf16", TOL["bfloat16"], argmax=False)


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", ["float32", "float16"])
@pytest.mark.parametrize("name", LLAMAS)
def test_kv_cache_contents(name, dtype):
    cpu = quellm.load(FIXTURES / name)
    gpu = cpu.to("cuda", dtype=dtype)
    toks = ref(name)["tokens"]
    sc, sg = cpu.new_state(1, len(toks)), gpu.new_state(1, len(toks))
    cpu.forward(toks, sc)
    gpu.forward(toks, sg)
    for layer in range(cpu.config.num_hidden_layers):
        for what in ("keys", "values"):
            want = getattr(sc.caches[0], what)(layer)
            close(getattr(sg, what)(layer), want, f"{name} {what} {layer}", TOL[dtype], argmax=False)


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", ["float32", "float16"])
@pytest.mark.parametrize("name", MAMBAS)
def test_mamba_states(name, dtype):
    cpu = quellm.load(FIXTURES / name)
    gpu = cpu.to("cuda", dtype=dtype)
    toks = ref(name)["tokens"]
    sc, sg = cpu.new_state(1), gpu.new_state(1)
    cpu.forward(toks, sc)
    gpu.forward(toks, sg)
    for layer in range(cpu.config.num_hidden_layers):
        close(sg.conv_state(layer), sc.conv_state(layer), f"{name} conv {layer}", TOL[dtype], argmax=False)
        close(sg.ssm_state(layer), sc.ssm_state(layer), f"{name} ssm {layer}", TOL[dtype], argmax=False)


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", ["float32", "float16"])
@pytest.mark.parametrize("bits,hadamard", [(8, False), (8, True), (4, False), (4, True)])
def test_quantized_kv_cache(bits, hadamard, dtype):
    cpu = quellm.load(FIXTURES / "llama_untied")
    cpu.set_kv_cache(bits, 1.0 if bits == 8 else 0.95, hadamard)
    gpu = cpu.to("cuda", dtype=dtype)
    assert gpu.kv_cache == cpu.kv_cache
    toks = ref("llama_untied")["tokens"]
    outs = {}
    for m in (cpu, gpu):
        st = m.new_state(1, len(toks))
        outs[m.device] = np.concatenate([m.forward(toks[:7], st)] + [m.forward([t], st) for t in toks[7:]])
    # int4 codes next to a rounding boundary may differ (f16: often; f32: rarely)
    tol = TOL[dtype] if bits == 8 else {"float32": 2e-2, "float16": 0.15}[dtype]
    close(outs["cuda"], outs["cpu"], f"kv{bits} hadamard={hadamard} {dtype}", tol, argmax=bits == 8)


@pytest.fixture(scope="module")
def llama3():
    m = quellm.load(FIXTURES / "llama_tied_llama3")
    toks = np.random.default_rng(1).integers(0, m.vocab_size, 64).tolist()
    return m, quellm.calibrate(m, toks, n_samples=4, seq_len=16, progress=False)


QUANT_RECIPES = ["w8a8", "w4a16:group=16", "w4a8:group=16", "ovp4", "smoothquant:alpha=0.5",
                 "w4a4:group=16,hadamard=true", "quarot:gptq=false,group=16"]


def quant_tol(recipe: str, dtype: str) -> tuple[float, bool]:
    """(tolerance, argmax must agree): 4-bit activation / KV codes can flip at rounding boundaries."""
    four_bit_acts = recipe.startswith(("w4a4", "quarot"))
    if dtype == "float32":
        return (2e-2, False) if four_bit_acts else (1e-4, True)
    return (0.15, False) if four_bit_acts else (TOL["float16"], True)


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", ["float32", "float16"])
@pytest.mark.parametrize("recipe", QUANT_RECIPES)
def test_quantized_models_match_cpu(llama3, recipe, dtype, tmp_path):
    m, stats = llama3
    q = quellm.quantize(m, recipe, stats)
    q.save(tmp_path / "q")
    cpu = quellm.load(tmp_path / "q")
    gpu = quellm.load(tmp_path / "q", device="cuda", dtype=dtype)
    assert gpu.recipe.to_json() == cpu.recipe.to_json()
    # the low-bit layers keep their kernel; float layers (with a transform) run in the GPU dtype
    assert set(gpu.linear_kernels) >= {l.kernel for l in cpu.quant_layers.values()} - {"f32"}
    tol, argmax = quant_tol(recipe, dtype)
    toks = np.random.default_rng(2).integers(0, m.vocab_size, (2, 12))
    close(gpu.forward(toks), cpu.forward(toks), f"{recipe} {dtype}", tol, argmax)
    sc, sg = cpu.new_state(2, 12), gpu.new_state(2, 12)
    got = np.concatenate([gpu.forward(toks[:, :6], sg)] + [gpu.forward(toks[:, t: t + 1], sg) for t in range(6, 12)], 1)
    want = np.concatenate([cpu.forward(toks[:, :6], sc)] + [cpu.forward(toks[:, t: t + 1], sc) for t in range(6, 12)], 1)
    close(got, want, f"{recipe} {dtype} decode", tol, argmax)


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_quantized_mamba_matches_cpu(dtype):
    m = quellm.load(FIXTURES / "mamba_tiny")
    toks = np.random.default_rng(1).integers(0, m.vocab_size, 64).tolist()
    stats = quellm.calibrate(m, toks, n_samples=4, seq_len=16, progress=False)
    for recipe in ("w8a8", "w4a16:group=16"):
        q = quellm.quantize(m, recipe, stats)
        t = np.random.default_rng(2).integers(0, m.vocab_size, (2, 12))
        close(q.to("cuda", dtype=dtype).forward(t), q.forward(t), f"mamba {recipe} {dtype}", TOL[dtype])


@pytest.mark.cuda
def test_profile_breakdown():
    gpu = quellm.load(FIXTURES / "llama_untied", device="cuda")
    st = gpu.new_state(1, 16)
    with gpu.profile() as prof:
        gpu.forward(list(range(8)), st)
        gpu.forward([3], st)
    for kind in ("embedding", "rmsnorm", "linear.qkv", "rope_kv_store", "attention.prefill", "attention.decode",
                 "linear.down", "swiglu", "lm_head"):
        assert prof.get(kind, 0.0) > 0.0, kind
    assert gpu.linear_kernels and gpu.device_bytes > 0


@pytest.mark.cuda
def test_gpu_errors():
    gpu = quellm.load(FIXTURES / "mamba_tiny", device="cuda")
    with pytest.raises(QuellmError, match="out of GPU memory"):
        gpu.new_state(10**9)
    st = gpu.new_state(1)  # still usable after the failed allocation
    assert np.isfinite(gpu.forward([1, 2, 3], st)).all()
    other = quellm.load(FIXTURES / "mamba_tiny", device="cuda")
    with pytest.raises(QuellmError, match="state"):
        other.forward([1], st)
    with pytest.raises(QuellmError, match="observers"):
        gpu.forward([1], observers=_core.Observers(2))
    llama = quellm.load(FIXTURES / "llama_untied", device="cuda")
    s = llama.new_state(1, 4)
    with pytest.raises(QuellmError, match="capacity"):
        llama.forward([1, 2, 3, 4, 5], s)
    assert llama.to("cpu") is llama.cpu_model


@pytest.mark.cuda
def test_perplexity_on_gpu():
    cpu = quellm.load(FIXTURES / "llama_untied")
    toks = np.random.default_rng(3).integers(0, cpu.vocab_size, 40).tolist()
    a = quellm.perplexity(cpu, toks, ctx=16)
    b = quellm.perplexity(cpu.to("cuda"), toks, ctx=16)
    assert abs(a.nll - b.nll) <= TOL["float16"] * max(1.0, abs(a.nll))
