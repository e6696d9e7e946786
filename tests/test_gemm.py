"""W4A8 GEMM/GEMV against an int64 numpy product of the same quantized values (bit-exact
integer sums; the float epilogue is the same fma sequence in every version)."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import assert_bit_exact
from hypothesis import given
from hypothesis import strategies as st

from quellm import _core


def pack_int4(q):
    """Canonical int4 packing: element 2i in the low nibble (two's complement)."""
    u = (q.astype(np.int16) & 0xF).astype(np.uint8)
    return (u[..., 0::2] | (u[..., 1::2] << 4)).astype(np.uint8)


def make(N, K, G, seed):
    rng = np.random.default_rng(seed)
    qw = rng.integers(-8, 8, (N, K)).astype(np.int8)
    sw = rng.uniform(0.001, 0.1, (N, K // G)).astype(np.float32)
    return qw, sw, _core.gemm_w4_repack(pack_int4(qw), sw)


def epilogue(qa, sa, qw, sw, G, bias=None):
    """Integer group sums in int64, then the kernels' float epilogue: y = fma(acc, sa*sw, y).
    The fma is emulated in float64 (the product is exact there; the sum is rounded once to
    float64 and again to float32, which agrees with a true fma except in vanishingly rare
    double-rounding cases)."""
    M, K = qa.shape
    N = qw.shape[0]
    acc = np.einsum("mgk,ngk->mng", qa.reshape(M, K // G, G).astype(np.int64), qw.reshape(N, K // G, G).astype(np.int64))
    y = np.zeros((M, N), np.float32)
    for g in range(K // G):
        s = (sa[:, None] * sw[None, :, g]).astype(np.float32)
        y = (acc[:, :, g].astype(np.float64) * s.astype(np.float64) + y.astype(np.float64)).astype(np.float32)  # one rounding
    if bias is not None:
        y = (y + bias).astype(np.float32)
    return y, acc


def test_repack_round_trip():
    qw, sw, w = make(37, 256, 64, 0)
    codes, scales = w.unpack()
    assert_bit_exact(codes, pack_int4(qw))
    assert_bit_exact(scales, sw)
    assert w.N == 37 and w.K == 256 and w.G == 64


def test_packing_golden():
    # SPEC §3.7: [-8, 7, 3, -1] -> 0x78, 0xF3
    assert pack_int4(np.array([[-8, 7, 3, -1]], np.int8)).tolist() == [[0x78, 0xF3]]


@pytest.mark.parametrize("M,N,K,G", [(1, 16, 64, 64), (1, 1536, 576, 576), (3, 17, 128, 32), (17, 33, 256, 128),
                                     (5, 100, 512, 512), (2, 7, 8, 8)])
def test_matches_integer_reference(M, N, K, G, isa, threads):
    qw, sw, w = make(N, K, G, M + N + K)
    rng = np.random.default_rng(1)
    qa = rng.integers(-127, 128, (M, K)).astype(np.int8)
    sa = rng.uniform(0.01, 1.0, M).astype(np.float32)
    bias = rng.standard_normal(N).astype(np.float32)
    want, _ = epilogue(qa, sa, qw, sw, G, bias)
    assert_bit_exact(_core.gemm_w4a8(qa, sa, w, bias, ref=True), want, "ref")
    assert_bit_exact(_core.gemm_w4a8(qa, sa, w, bias), want, f"{isa} t={threads}")


@given(M=st.integers(1, 9), N=st.integers(1, 40), kq=st.integers(1, 12), seed=st.integers(0, 2**31), data=st.data())
def test_random_shapes(M, N, kq, seed, data):
    K = 8 * kq
    G = data.draw(st.sampled_from([d for d in range(4, K + 1, 4) if K % d == 0]), "G")
    qw, sw, w = make(N, K, G, seed)
    rng = np.random.default_rng(seed)
    qa = rng.integers(-127, 128, (M, K)).astype(np.int8)
    sa = rng.uniform(0.01, 1.0, M).astype(np.float32)
    want, _ = epilogue(qa, sa, qw, sw, G)
    assert_bit_exact(_core.gemm_w4a8(qa, sa, w), want)


def test_extreme_values_exact():
    N, K, G = 16, 4096, 4096
    qw = np.full((N, K), -8, np.int8)
    sw = np.ones((N, 1), np.float32)
    w = _core.gemm_w4_repack(pack_int4(qw), sw)
    qa = np.full((2, K), -127, np.int8)
    y = _core.gemm_w4a8(qa, np.ones(2, np.float32), w)
    assert np.all(y == np.float32(8 * 127 * K))


def test_quantize_rows_int8():
    x = np.array([[0.0, 0.0, 0.0], [1.0, -2.54, 0.01], [127.0, 63.5, -63.5]], np.float32)
    q, s = _core.quantize_rows_int8(x)
    assert s[0] == 1.0 and np.all(q[0] == 0)
    assert s[1] == np.float32(2.54) / np.float32(127)
    assert q[1].tolist() == [50, -127, 0]
    assert q[2].tolist() == [127, 64, -64]  # 63.5 -> 64 (ties to even), -63.5 -> -64
    with pytest.raises(ValueError, match="non-finite"):
        _core.quantize_rows_int8(np.array([[1.0, np.nan]], np.float32))


@pytest.mark.parametrize("shape, G, match", [((4, 3), 1, "multiple of 8"), ((4, 8), 3, "groups")])
def test_bad_packing(shape, G, match):
    codes = np.zeros(shape, np.uint8)
    scales = np.ones((shape[0], G), np.float32)
    with pytest.raises(ValueError, match=match):
        _core.gemm_w4_repack(codes, scales)
