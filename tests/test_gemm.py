"""Low-bit GEMM kernels. Integer kernels (W4A8, W8A8; W4A4 is W4A8 with activations in [-7, 7])
against an int64 numpy product of the same quantized values (bit-exact integer sums; the float
epilogue is the same fma sequence in every version). Weight-only kernels (W4A16, W8A16) against
numpy f32 products of the dequantized weights."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import assert_bit_exact
from hypothesis import given, settings
from hypothesis import strategies as st

import quellm
from quellm import _core


def pack_int4(q):
    """Canonical int4 packing: element 2i in the low nibble (two's complement)."""
    u = (q.astype(np.int16) & 0xF).astype(np.uint8)
    return (u[..., 0::2] | (u[..., 1::2] << 4)).astype(np.uint8)


def make(N, K, G, seed, bits=4):
    rng = np.random.default_rng(seed)
    lim = 1 << (bits - 1)
    qw = rng.integers(-lim, lim, (N, K)).astype(np.int8)
    sw = rng.uniform(0.001, 0.1, (N, K // G)).astype(np.float32)
    w = _core.gemm_w4_repack(pack_int4(qw), sw) if bits == 4 else _core.gemm_w8_repack(qw, sw)
    return qw, sw, w


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


@pytest.mark.parametrize("bits", [4, 8])
def test_repack_round_trip(bits):
    qw, sw, w = make(37, 256, 64, 0, bits)
    codes, scales = w.unpack()
    assert_bit_exact(codes, pack_int4(qw) if bits == 4 else qw)
    assert_bit_exact(scales, sw)
    assert w.N == 37 and w.K == 256 and w.G == 64 and w.bits == bits


def test_packing_golden():
    # SPEC §3.7: [-8, 7, 3, -1] -> 0x78, 0xF3
    assert pack_int4(np.array([[-8, 7, 3, -1]], np.int8)).tolist() == [[0x78, 0xF3]]


@pytest.mark.parametrize("bits", [4, 8])
@pytest.mark.parametrize("M,N,K,G", [(1, 16, 64, 64), (1, 1536, 576, 576), (3, 17, 128, 32), (17, 33, 256, 128),
                                     (5, 100, 512, 512), (2, 7, 8, 8)])
def test_matches_integer_reference(M, N, K, G, bits, isa, threads):
    qw, sw, w = make(N, K, G, M + N + K, bits)
    rng = np.random.default_rng(1)
    qa = rng.integers(-127, 128, (M, K)).astype(np.int8)
    sa = rng.uniform(0.01, 1.0, M).astype(np.float32)
    bias = rng.standard_normal(N).astype(np.float32)
    want, _ = epilogue(qa, sa, qw, sw, G, bias)
    assert_bit_exact(_core.gemm_int(qa, sa, w, bias, ref=True), want, "ref")
    assert_bit_exact(_core.gemm_int(qa, sa, w, bias), want, f"{isa} t={threads}")


@given(M=st.integers(1, 9), N=st.integers(1, 40), kq=st.integers(1, 12), bits=st.sampled_from([4, 8]),
       a4=st.booleans(), seed=st.integers(0, 2**31), data=st.data())
def test_random_shapes(M, N, kq, bits, a4, seed, data):
    K = 8 * kq
    G = data.draw(st.sampled_from([d for d in range(4, K + 1, 4) if K % d == 0]), "G")
    qw, sw, w = make(N, K, G, seed, bits)
    rng = np.random.default_rng(seed)
    lim = 7 if a4 else 127  # W*A4: int4 activations held as int8
    qa = rng.integers(-lim, lim + 1, (M, K)).astype(np.int8)
    sa = rng.uniform(0.01, 1.0, M).astype(np.float32)
    want, _ = epilogue(qa, sa, qw, sw, G)
    assert_bit_exact(_core.gemm_int(qa, sa, w), want)


# int4 layout (gemm.h): a group's k-quads pair into octs; with G/4 odd the last quad of every
# group keeps the quad form. Every row count of the tile kernels (1..8 per call, then more).
@pytest.mark.parametrize("bits", [4, 8])
@pytest.mark.parametrize("K, G", [(24, 12), (40, 20), (48, 4), (96, 96), (96, 32), (120, 40), (8, 8)])
@pytest.mark.parametrize("M", [1, 2, 3, 8, 11])
def test_odd_quads_per_group(M, K, G, bits, isa, threads):
    N = 35
    qw, sw, w = make(N, K, G, M * 1000 + K + G, bits)
    codes, scales = w.unpack()
    assert_bit_exact(codes, pack_int4(qw) if bits == 4 else qw)
    assert_bit_exact(scales, sw)
    rng = np.random.default_rng(K + G)
    qa = rng.integers(-128, 128, (M, K)).astype(np.int8)
    sa = rng.uniform(0.01, 1.0, M).astype(np.float32)
    bias = rng.standard_normal(N).astype(np.float32)
    want, _ = epilogue(qa, sa, qw, sw, G, bias)
    assert_bit_exact(_core.gemm_int(qa, sa, w, bias, ref=True), want, "ref")
    assert_bit_exact(_core.gemm_int(qa, sa, w, bias), want, f"{isa} t={threads}")


# The AVX-512 int4 kernel for 1-2 rows sums the high nibbles of an oct as 16·u, exact while
# 16·15·128·G/2 < 2^31 (G <= 2^17), and shifts them otherwise: both sides of that bound.
@pytest.mark.parametrize("K", [1 << 17, 1 << 18])
def test_int4_large_group_exact(K, isa):
    N = 16
    qw = np.full((N, K), 7, np.int8)
    qw[:, 1::2] = -8
    w = _core.gemm_w4_repack(pack_int4(qw), np.ones((N, 1), np.float32))
    for M in (1, 2, 3):
        qa = np.full((M, K), -128, np.int8)
        qa[:, 1::2] = 127
        y = _core.gemm_int(qa, np.ones(M, np.float32), w)
        assert np.all(y == np.float32(K // 2 * (7 * -128 + -8 * 127)))


# Largest products of every sign: the AVX2 kernels sum several k-octs of int4 (E2M1) pair
# products in int16 before widening, which must never saturate.
@pytest.mark.parametrize("bits, wq, aq", [(4, -8, -127), (4, -8, -128), (4, 7, -128), (4, 7, 127),
                                          (8, -128, -127), (8, -128, 127), (8, 127, 127)])
def test_extreme_values_exact(bits, wq, aq, isa):
    N, K, G = 16, 4096, 4096
    qw = np.full((N, K), wq, np.int8)
    sw = np.ones((N, 1), np.float32)
    w = _core.gemm_w4_repack(pack_int4(qw), sw) if bits == 4 else _core.gemm_w8_repack(qw, sw)
    qa = np.full((2, K), aq, np.int8)
    y = _core.gemm_int(qa, np.ones(2, np.float32), w)
    assert np.all(y == np.float32(wq * aq * K))


def test_quantize_rows():
    x = np.array([[0.0, 0.0, 0.0], [1.0, -2.54, 0.01], [127.0, 63.5, -63.5]], np.float32)
    q, s = _core.quantize_rows(x)
    assert s[0] == 1.0 and np.all(q[0] == 0)
    assert s[1] == np.float32(2.54) / np.float32(127)
    assert q[1].tolist() == [50, -127, 0]
    assert q[2].tolist() == [127, 64, -64]  # 63.5 -> 64 (ties to even), -63.5 -> -64
    q4, s4 = _core.quantize_rows(x, qmax=7, clip=0.5)
    assert s4[2] == np.float32(0.5) * np.float32(127) / np.float32(7)
    assert q4[1].tolist() == [6, -7, 0] and q4[2].tolist() == [7, 7, -7]  # clipped
    with pytest.raises(ValueError, match="non-finite .* row 1, column 0"):
        _core.quantize_rows(np.array([[1.0, 2.0], [np.inf, 1.0]], np.float32))
    for bad in (dict(qmax=0), dict(qmax=128), dict(clip=0.0), dict(clip=1.5)):
        with pytest.raises(ValueError):
            _core.quantize_rows(x, **bad)


@pytest.mark.parametrize("qmax, clip", [(127, 1.0), (7, 1.0), (7, 0.8)])
@given(K=st.integers(1, 70), seed=st.integers(0, 2**31 - 1),
       special=st.lists(st.sampled_from([0.0, -0.0, 1e-45, 3e38, -3e38, 0.5, -0.5, 2.5, -1.5]), max_size=6))
@settings(deadline=None)
def test_quantize_rows_matches_numpy(qmax, clip, K, seed, special):
    """The SIMD row quantizers (vector bodies and tails) give the scalar definition's bits at every ISA:
    s = clip·max|x| / qmax (1 where that is 0), q = clamp(rint(x / s), ±qmax)."""
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((3, K)) * rng.choice([1e-3, 1.0, 1e4], (3, 1))).astype(np.float32)
    x[1] = 0.0
    for i, v in enumerate(special[:K]):
        x[2, i] = v
    x[0, : K // 2] = np.round(x[0, : K // 2])  # integers: ties of x / s when s is a power of two
    amax = np.abs(x).max(axis=1)
    s = ((np.float32(clip) * amax) / np.float32(qmax)).astype(np.float32)
    s[s == 0] = 1  # a zero row, or one whose scale underflows
    want = np.clip(np.rint(x / s[:, None]), -qmax, qmax).astype(np.int8)
    before = quellm.info()["isa"]["active"]
    try:
        for level in quellm.isa_levels():
            quellm.set_isa(level)
            q, got_s = _core.quantize_rows(x, qmax=qmax, clip=clip)
            assert_bit_exact(got_s, s, f"scales {level}")
            assert_bit_exact(q, want, f"codes {level}")
            bad = x.copy()
            bad[2, K - 1] = np.nan
            with pytest.raises(ValueError, match=f"row 2, column {K - 1}"):
                _core.quantize_rows(bad, qmax=qmax, clip=clip)
    finally:
        quellm.set_isa(before)


@pytest.mark.parametrize("M", [1, 2, 3, 8, 9, 17])
@pytest.mark.parametrize("bits, sym", [(4, True), (4, False), (8, True)])
def test_weight_only_kernels(M, bits, sym, isa, threads):
    from quellm.formats import IntFormat

    N, K, G = 37, 256, 64
    rng = np.random.default_rng(M * 10 + bits)
    W = rng.standard_normal((N, K)).astype(np.float32)
    fmt = IntFormat(f"int{bits}", bits, sym=sym, group=G)
    p = fmt.encode(W)
    ql = _core.QuantLinear.from_int(bits, p.codes.reshape(N, -1), p.scales.reshape(N, -1),
                                    None if sym else p.zeros.reshape(N, -1))
    bias = rng.standard_normal(N).astype(np.float32)
    ql.set_bias(bias)
    assert ql.kernel == f"w{bits}a16"
    x = rng.standard_normal((M, K)).astype(np.float32)
    want = x.astype(np.float64) @ p.decode().astype(np.float64).T + bias
    got = ql.forward(x)
    assert np.abs(got - want).max() <= 1e-5 * np.abs(want).max()


@pytest.mark.parametrize("shape, G, match", [((4, 3), 1, "multiple of 8"), ((4, 8), 3, "groups")])
def test_bad_packing(shape, G, match):
    codes = np.zeros(shape, np.uint8)
    scales = np.ones((shape[0], G), np.float32)
    with pytest.raises(ValueError, match=match):
        _core.gemm_w4_repack(codes, scales)
    with pytest.raises(ValueError, match="multiple of 4"):
        _core.gemm_w8_repack(np.zeros((4, 6), np.int8), np.ones((4, 1), np.float32))


# ---- MXFP4 (E2M1 elements, E8M0 scales per 32) ------------------------------------------------

def mx4_values(codes):
    """2 x E2M1 value of each code (uint8 0..15)."""
    lut = np.array([0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12], np.int64)
    return lut[codes]


@pytest.mark.parametrize("M, N, K", [(1, 16, 32), (3, 17, 128), (9, 40, 64), (17, 33, 256)])
def test_mx4_kernel_matches_integer_reference(M, N, K, isa, threads):
    from quellm.formats import unpack_int4  # noqa: F401 - layout documented there

    rng = np.random.default_rng(M + N)
    codes = rng.integers(0, 16, (N, K)).astype(np.uint8)
    scodes = rng.integers(100, 140, (N, K // 32)).astype(np.uint8)
    w = _core.gemm_mx4_repack((codes[:, 0::2] | (codes[:, 1::2] << 4)).astype(np.uint8), scodes)
    assert w.e2m1 and w.G == 32
    qw = mx4_values(codes)
    sw = np.ldexp(np.float32(1), scodes.astype(np.int64) - 128).astype(np.float32)
    qa = mx4_values(rng.integers(0, 16, (M, K))).astype(np.int8)
    sa = np.ldexp(np.float32(1), rng.integers(-10, 10, (M, K // 32))).astype(np.float32)
    want = np.zeros((M, N), np.float32)
    acc = np.einsum("mgk,ngk->mng", qa.reshape(M, K // 32, 32).astype(np.int64), qw.reshape(N, K // 32, 32))
    for g in range(K // 32):
        s = (sa[:, g:g + 1] * sw[None, :, g]).astype(np.float32)
        want = (acc[:, :, g].astype(np.float64) * s.astype(np.float64) + want.astype(np.float64)).astype(np.float32)
    assert_bit_exact(_core.gemm_int(qa, sa, w, ref=True), want, "ref")
    assert_bit_exact(_core.gemm_int(qa, sa, w), want, f"{isa} t={threads}")
    c, _ = w.unpack()
    assert_bit_exact(c, (codes[:, 0::2] | (codes[:, 1::2] << 4)).astype(np.uint8))


@pytest.mark.parametrize("code, aq", [(0x7, 127), (0x7, -128), (0xF, 127), (0xF, -128)])
def test_mx4_extreme_values_exact(code, aq, isa):
    N, K = 16, 4096
    w = _core.gemm_mx4_repack(np.full((N, K // 2), code | code << 4, np.uint8), np.full((N, K // 32), 127, np.uint8))
    for M in (1, 2, 3):
        y = _core.gemm_int(np.full((M, K), aq, np.int8), np.ones((M, K // 32), np.float32), w)
        assert np.all(y == np.float32(int(mx4_values(np.array(code))) * aq * K / 2)), (M, y[:, 0])


@given(st.lists(st.sampled_from([0.0, -0.0, 0.25, 0.75, 1.25, 2.5, 5.0, 6.0, 7.0, 1e-40, 3e38, -1e-3]) |
                st.floats(-1e6, 1e6, width=32), min_size=64, max_size=64))
def test_quantize_rows_mxfp4_matches_twin(vals):
    from quellm import formats

    x = np.array(vals, np.float32).reshape(2, 32)
    q, s = _core.quantize_rows_mxfp4(x)
    p = formats.get("mxfp4").encode(x)
    codes = formats.unpack_codes(p.codes, 4)
    np.testing.assert_array_equal(q.astype(np.int64), mx4_values(codes))
    np.testing.assert_array_equal(s, formats.decode_e8m0(p.scales) / np.float32(2))


# ---- MXFP8 activations (E4M3 values · 2^9 as int32) × integer weights in groups of 32 --------

def mx8_weights(kind, N, K, rng):
    """(weight values, scales, packed) for int4 / int8 / E2M1 weights in groups of 32."""
    if kind == "e2m1":
        codes = rng.integers(0, 16, (N, K)).astype(np.uint8)
        scodes = rng.integers(100, 140, (N, K // 32)).astype(np.uint8)
        w = _core.gemm_mx4_repack((codes[:, 0::2] | (codes[:, 1::2] << 4)).astype(np.uint8), scodes)
        return mx4_values(codes), np.ldexp(np.float32(1), scodes.astype(np.int64) - 128).astype(np.float32), w
    qw, sw, w = make(N, K, 32, int(rng.integers(1 << 30)), 4 if kind == "int4" else 8)
    return qw.astype(np.int64), sw, w


def mx8_epilogue(qa, sa, qw, sw, bias=None):
    """Block sums in int64, rounded to float32 as the kernels' float(acc), then the fma chain."""
    M, K = qa.shape
    N = qw.shape[0]
    acc = np.einsum("mgk,ngk->mng", qa.reshape(M, K // 32, 32).astype(np.int64), qw.reshape(N, K // 32, 32))
    assert np.abs(acc).max(initial=0) < 2**31
    y = np.zeros((M, N), np.float32)
    for g in range(K // 32):
        s = (sa[:, g:g + 1] * sw[None, :, g]).astype(np.float32)
        y = (acc[:, :, g].astype(np.float32).astype(np.float64) * s.astype(np.float64) + y).astype(np.float32)
    return y if bias is None else (y + bias).astype(np.float32)


@pytest.mark.parametrize("kind", ["int4", "int8", "e2m1"])
@pytest.mark.parametrize("M, N, K", [(1, 16, 32), (3, 17, 128), (9, 40, 64), (17, 33, 256), (2, 1, 96)])
def test_mx8_kernel_matches_integer_reference(kind, M, N, K, isa, threads):
    rng = np.random.default_rng(M * 100 + N + K)
    qw, sw, w = mx8_weights(kind, N, K, rng)
    qa = rng.integers(-229376, 229377, (M, K)).astype(np.int32)
    qa[0, :7] = [229376, -229376, 0, 1, -1, 512, 7]
    sa = np.ldexp(np.float32(1), rng.integers(-30, 5, (M, K // 32))).astype(np.float32)
    bias = rng.standard_normal(N).astype(np.float32)
    want = mx8_epilogue(qa, sa, qw, sw, bias)
    assert_bit_exact(_core.gemm_mx8(qa, sa, w, bias, ref=True), want, "ref")
    assert_bit_exact(_core.gemm_mx8(qa, sa, w, bias), want, f"{kind} {isa} t={threads}")


@pytest.mark.parametrize("kind, wq", [("int4", -8), ("int8", -128), ("int8", 127)])
def test_mx8_extreme_values_exact(kind, wq, isa):
    N, K = 16, 256
    qw = np.full((N, K), wq, np.int8)
    sw = np.ones((N, K // 32), np.float32)
    w = _core.gemm_w4_repack(pack_int4(qw), sw) if kind == "int4" else _core.gemm_w8_repack(qw, sw)
    qa = np.full((2, K), -229376, np.int32)
    y = _core.gemm_mx8(qa, np.ones((2, K // 32), np.float32), w)
    assert np.all(y == np.float32(8) * np.float32(wq * -229376 * 32))


@given(M=st.integers(1, 11), N=st.integers(1, 40), nb=st.integers(1, 6), kind=st.sampled_from(["int4", "int8", "e2m1"]),
       seed=st.integers(0, 2**31))
def test_mx8_random_shapes(M, N, nb, kind, seed):
    rng = np.random.default_rng(seed)
    K = 32 * nb
    qw, sw, w = mx8_weights(kind, N, K, rng)
    qa = rng.integers(-229376, 229377, (M, K)).astype(np.int32)
    sa = rng.uniform(1e-6, 1.0, (M, K // 32)).astype(np.float32)
    assert_bit_exact(_core.gemm_mx8(qa, sa, w), mx8_epilogue(qa, sa, qw, sw))


@given(st.lists(st.sampled_from([0.0, -0.0, 448.0, 464.0, 480.0, 0.001953125, 0.0009765625, 1e-40, 3e38, -1e-3,
                                 1.0625, 1.1875, 240.0, 2.0**-7]) |
                st.floats(-1e6, 1e6, width=32), min_size=64, max_size=64))
def test_quantize_rows_mxfp8_matches_twin(vals):
    import ml_dtypes

    from quellm import formats

    x = np.array(vals, np.float32).reshape(2, 32)
    q, s = _core.quantize_rows_mxfp8(x)
    p = formats.get("mxfp8_e4m3").encode(x)
    values = p.codes.reshape(2, 32).view(ml_dtypes.float8_e4m3fn).astype(np.float64) * 512
    np.testing.assert_array_equal(q.astype(np.float64), values)
    np.testing.assert_array_equal(s, (formats.decode_e8m0(p.scales).astype(np.float64) / 512).astype(np.float32))
    # q · s is the decoded value wherever that is a normal float32
    big = np.abs(values) * s.repeat(32, axis=1) >= np.finfo(np.float32).tiny
    np.testing.assert_array_equal((q * s.repeat(32, axis=1).astype(np.float64))[big], p.decode().astype(np.float64)[big])


def test_mx8_errors():
    with pytest.raises(ValueError, match="non-finite"):
        _core.quantize_rows_mxfp8(np.full((1, 32), np.inf, np.float32))
    with pytest.raises(ValueError, match="multiple of 32"):
        _core.quantize_rows_mxfp8(np.ones((1, 48), np.float32))
    _, _, w = make(16, 128, 64, 0, 8)  # groups of 64: not an MX block
    with pytest.raises(ValueError, match="groups of 32"):
        _core.gemm_mx8(np.zeros((1, 128), np.int32), np.ones((1, 4), np.float32), w)


def test_mx4_errors():
    with pytest.raises(ValueError, match="non-finite"):
        _core.quantize_rows_mxfp4(np.full((1, 32), np.nan, np.float32))
    with pytest.raises(ValueError, match="multiple of 32"):
        _core.quantize_rows_mxfp4(np.ones((1, 48), np.float32))
    with pytest.raises(ValueError, match="NaN block"):
        _core.gemm_mx4_repack(np.zeros((2, 16), np.uint8), np.full((2, 1), 255, np.uint8))


# ---- OliVe OVP4 weights (pairs decoded in registers) -------------------------------------------

def random_ovp4_codes(rng, N, K):
    """Valid OVP4 pair codes: normal/normal pairs, outlier+identifier pairs (either order), and
    the impossible identifier/identifier pair (decodes to 0, 0)."""
    from quellm import formats

    x = rng.standard_normal((N, K)).astype(np.float32)
    x[rng.random((N, K)) < 0.08] *= 30  # outliers
    p = formats.get("ovp4").encode(x, scale=np.ones(N, np.float32))
    codes = p.codes.copy()
    codes[rng.random(codes.shape) < 0.02] = 0x88
    return codes


def ovp4_values(codes):
    from quellm import formats

    t = formats.get("ovp4")
    return t.decode(formats.Packed("ovp4", dict(t.params), codes, np.ones((codes.shape[0], 1), np.float32),
                                   (codes.shape[0], 2 * codes.shape[1]), 1)).astype(np.int64)


@pytest.mark.parametrize("M, N, K", [(1, 16, 64), (3, 17, 128), (9, 40, 64), (17, 33, 256)])
def test_ovp4_kernel_matches_integer_reference(M, N, K, isa, threads):
    rng = np.random.default_rng(M * 7 + N)
    codes = random_ovp4_codes(rng, N, K)
    sw = rng.uniform(0.01, 0.1, N).astype(np.float32)
    w = _core.gemm_ovp4_repack(codes, sw)
    assert w.ovp and w.G == K
    qw = ovp4_values(codes)
    assert np.abs(qw).max() <= 96
    qa = rng.integers(-127, 128, (M, K)).astype(np.int8)
    sa = rng.uniform(0.01, 1.0, M).astype(np.float32)
    want, _ = epilogue(qa, sa, qw.astype(np.int8 if np.abs(qw).max() < 128 else np.int16), sw[:, None], K)
    assert_bit_exact(_core.gemm_int(qa, sa, w, ref=True), want, "ref")
    assert_bit_exact(_core.gemm_int(qa, sa, w), want, f"{isa} t={threads}")
    c, _ = w.unpack()
    assert_bit_exact(c, codes)


# ---- OliVe OVP4 activations (per-token searched scale, pairs decoded to integers) --------------

OVP_VALUES = {0, *range(-7, 8), *(s * v for s in (1, -1) for v in (12, 16, 24, 32, 48, 64, 96))}


@given(st.integers(1, 5), st.integers(1, 40), st.floats(1e-3, 1e3), st.integers(0, 2**31))
def test_quantize_rows_ovp4_matches_twin(M, pairs, mag, seed):
    from quellm import formats

    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((M, 2 * pairs)) * mag).astype(np.float32)
    x[:, rng.integers(0, 2 * pairs)] *= 50  # an outlier channel
    if M > 1:
        x[1] = 0.0  # an all-zero row: scale 1
    q, s = _core.quantize_rows_ovp4(x)
    assert q.dtype == np.int8 and set(np.unique(q)) <= OVP_VALUES
    fmt = formats.get("ovp4")
    want_s, _ = _core.ovp_search_scales("ovp4", x, list(_core.OVP_ACT_SEARCH_K), False)
    np.testing.assert_array_equal(s, want_s)
    # the values are the numpy twin's decode at those scales, in units of the scale
    np.testing.assert_array_equal(q.astype(np.float32) * s[:, None], fmt.quantize_dequantize(x, scale=s, backend="numpy"))
    if M > 1:
        assert s[1] == 1.0 and not q[1].any()


@given(st.integers(1, 6), st.integers(1, 64), st.integers(0, 2**31), st.booleans())
def test_ovp_scale_search_cpp_matches_numpy(rows, pairs, seed, keep_larger):
    """Same statistics and candidates: the C++ and numpy searches pick candidates of equal error
    (numpy sums pairwise, C++ in order, so exact ties may resolve differently)."""
    from quellm import formats

    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((rows, 2 * pairs)) * rng.uniform(0.01, 100)).astype(np.float32)
    x[:, :: max(1, pairs // 3)] *= rng.uniform(1, 80)
    fmt = formats.get("ovp4", both_outliers="keep_larger" if keep_larger else "keep_first")
    sc, mc = fmt.search_scale(x, backend="cpp")
    sn, mn = fmt.search_scale(x, backend="numpy")
    np.testing.assert_allclose(mc, mn, rtol=1e-9, atol=0)
    assert (sc == sn).mean() >= 0.5 or rows < 2


def test_ovp4_activation_errors():
    with pytest.raises(ValueError, match="non-finite .* row 1, column 2"):
        _core.quantize_rows_ovp4(np.array([[1, 2, 3, 4], [1, 2, np.nan, 4]], np.float32))
    with pytest.raises(ValueError, match="even"):
        _core.quantize_rows_ovp4(np.ones((1, 5), np.float32))
