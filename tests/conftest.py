"""Shared test configuration: hypothesis profiles, the CUDA marker, tolerance helpers.

Hypothesis profiles (select with QUELLM_HYPOTHESIS_PROFILE, default ``dev``):
  dev  — few examples, fast local iteration;
  ci   — more examples, derandomized (reproducible), no deadline.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

import quellm

settings.register_profile("dev", max_examples=25, deadline=None)
settings.register_profile(
    "ci",
    max_examples=100,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
    print_blob=True,
)
settings.load_profile(os.environ.get("QUELLM_HYPOTHESIS_PROFILE", "dev"))

requires_cuda = pytest.mark.skipif(not quellm.cuda_available()[0], reason="no usable CUDA device")


def pytest_collection_modifyitems(config, items):
    """Tests marked ``cuda`` skip where no CUDA device is usable."""
    if quellm.cuda_available()[0]:
        return
    skip = pytest.mark.skip(reason=f"CUDA not available: {quellm.cuda_available()[1]}")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(params=quellm.isa_levels())
def isa(request):
    """Run a test once per usable SIMD level; restores the level afterwards."""
    before = quellm.isa()
    quellm.set_isa(request.param)
    yield request.param
    quellm.set_isa(before)


@pytest.fixture(params=[1, 2, 3])
def threads(request):
    """Run a test with 1, 2 and 3 kernel threads; restores the count afterwards."""
    before = quellm.num_threads()
    quellm.set_num_threads(request.param)
    yield request.param
    quellm.set_num_threads(before)


# ---- the three tolerance tiers (STYLE.md 17) ------------------------------------------------

def assert_bit_exact(got: np.ndarray, want: np.ndarray, what: str = "") -> None:
    """Encoders, decoders, repacks, integer accumulation: identical bytes."""
    got, want = np.asarray(got), np.asarray(want)
    assert got.shape == want.shape, f"{what}: shape {got.shape} != {want.shape}"
    assert got.dtype == want.dtype, f"{what}: dtype {got.dtype} != {want.dtype}"
    g = got.reshape(-1).view(np.uint8) if got.size else got
    w = want.reshape(-1).view(np.uint8) if want.size else want
    if not np.array_equal(g, w):
        bad = np.flatnonzero(got.reshape(-1).view(f"u{got.itemsize}") != want.reshape(-1).view(f"u{want.itemsize}"))
        i = int(bad[0])
        raise AssertionError(
            f"{what}: {bad.size} of {got.size} elements differ; first at flat index {i}: "
            f"got {got.reshape(-1)[i]!r}, want {want.reshape(-1)[i]!r}"
        )


def nmse(got: np.ndarray, want: np.ndarray) -> float:
    """Normalised mean squared error, computed in float64 (0 when both are all zero)."""
    got = np.asarray(got, np.float64)
    want = np.asarray(want, np.float64)
    den = float(np.sum(want * want))
    num = float(np.sum((got - want) ** 2))
    return num / den if den > 0 else num


def assert_nmse(got: np.ndarray, want: np.ndarray, tol: float = 1e-7, what: str = "") -> None:
    """f32 float kernels: NMSE against a float64 reference."""
    assert np.shape(got) == np.shape(want), f"{what}: shape {np.shape(got)} != {np.shape(want)}"
    e = nmse(got, want)
    assert e <= tol, f"{what}: NMSE {e:.3g} > {tol:.3g}"


def assert_close_to_precision(got: np.ndarray, want: np.ndarray, ref_lowp: np.ndarray,
                              atol: float = 1e-6, what: str = "") -> None:
    """f16/bf16 kernels: error at most 2x that of the reference run in the same precision."""
    want64 = np.asarray(want, np.float64)
    err = np.max(np.abs(np.asarray(got, np.float64) - want64), initial=0.0)
    ref_err = np.max(np.abs(np.asarray(ref_lowp, np.float64) - want64), initial=0.0)
    assert err <= 2 * ref_err + atol, f"{what}: max error {err:.3g} > 2 x {ref_err:.3g} + {atol:g}"


# ---- tiny generated checkpoints ---------------------------------------------------------------

TINY_LLAMA = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "hidden_size": 32,
    "intermediate_size": 48,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "vocab_size": 64,
    "rms_norm_eps": 1e-5,
    "rope_theta": 10000.0,
    "rope_scaling": None,
    "tie_word_embeddings": False,
    "hidden_act": "silu",
    "max_position_embeddings": 128,
}

TINY_MAMBA = {
    "architectures": ["MambaForCausalLM"],
    "model_type": "mamba",
    "hidden_size": 16,
    "num_hidden_layers": 2,
    "state_size": 4,
    "expand": 2,
    "conv_kernel": 4,
    "time_step_rank": "auto",
    "vocab_size": 32,
    "layer_norm_epsilon": 1e-5,
    "use_bias": False,
    "use_conv_bias": True,
    "tie_word_embeddings": True,
}


def random_tensors(config: dict, dtype=np.float32, seed: int = 0) -> dict[str, np.ndarray]:
    """Random weights with every tensor (and shape) ``config`` requires."""
    from quellm.io import parse_config

    required, _ = parse_config(config).tensor_shapes()
    rng = np.random.default_rng(seed)
    return {n: rng.standard_normal(s).astype(np.float32).astype(dtype) for n, s in required.items()}


@pytest.fixture
def make_checkpoint(tmp_path):
    """``make_checkpoint(config=TINY_LLAMA, dtype=np.float32, shard_bytes=None, name="ckpt")``
    writes a random checkpoint under tmp_path and returns ``(path, tensors)``."""
    from quellm.io import save_checkpoint

    def make(config=TINY_LLAMA, dtype=np.float32, shard_bytes=None, name="ckpt", seed=0):
        tensors = random_tensors(config, dtype, seed)
        path = save_checkpoint(tmp_path / name, config, tensors, max_shard_bytes=shard_bytes)
        return path, tensors

    return make
