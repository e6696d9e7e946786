"""Tests of quellm.hadamard: the H_m factors, size decomposition, dense matrices, fwht_numpy.

Independent references used here: the Sylvester matrix built by np.kron of [[1,1],[1,-1]]
(never by the module's own doubling), explicit ``H_m · X · H_p`` products, brute-force
enumeration of supported sizes, and direct checks of the circulant identities.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from quellm import hadamard as hd
from quellm.errors import QuellmError

# orders every model in SPEC §3 needs, and the model sizes they come from
REQUIRED_ORDERS = (12, 20, 28, 36, 40, 44, 52, 60, 76, 108, 140, 148, 156, 172)
MODEL_SIZES = {  # n -> decompose(n): the largest power of two wins
    576: (36, 16), 960: (60, 16), 1536: (12, 128), 2560: (20, 128), 2816: (44, 64),
    4864: (76, 64), 5120: (20, 256), 5632: (44, 128), 11008: (172, 64), 13824: (108, 128),
    14336: (28, 512), 18944: (148, 128), 27648: (108, 256), 28672: (28, 1024),
}
ALL_ORDERS = tuple(1 << k for k in range(9)) + hd.factor_orders()
SIZES_4096 = hd.fwht_sizes(4096)
TWICE_TOL = 1e-12


def kron_sylvester(p: int) -> np.ndarray:
    """Sylvester H_p as int64 by repeated np.kron with H_2 (the independent reference)."""
    h = np.ones((1, 1), np.int64)
    while h.shape[0] < p:
        h = np.kron(h, np.array([[1, 1], [1, -1]], np.int64))
    assert h.shape[0] == p
    return h


@functools.lru_cache(maxsize=4)
def dense_reference(n: int) -> np.ndarray:
    """kron(H_m, H_p) in float64 from the shipped factor and the kron-built Sylvester matrix."""
    m, p = hd.decompose(n)
    return np.kron(hd.hadamard_factor(m).astype(np.int64), kron_sylvester(p)).astype(np.float64)


def is_pow2(v: int) -> bool:
    return v >= 1 and v & (v - 1) == 0


# ---- factors ----------------------------------------------------------------------------------

@pytest.mark.parametrize("m", ALL_ORDERS)
def test_factor_is_hadamard(m):
    h = hd.hadamard_factor(m)
    assert h.dtype == np.int8 and h.shape == (m, m)
    assert set(np.unique(h).tolist()) <= {-1, 1}
    h64 = h.astype(np.int64)
    np.testing.assert_array_equal(h64 @ h64.T, m * np.eye(m, dtype=np.int64))
    assert not h.flags.writeable
    assert hd.hadamard_factor(m) is h  # cached


def test_factor_orders():
    orders = hd.factor_orders()
    assert set(REQUIRED_ORDERS) <= set(orders)
    assert list(orders) == sorted(set(orders))
    assert all(not is_pow2(m) and m % 4 == 0 and m <= hd.MAX_FACTOR_ORDER for m in orders)
    # the extras from Williamson quadruples beyond the required 156 and 172
    assert {92, 116} <= set(orders)


@pytest.mark.parametrize("m", [3, 6, 0, -4, 188, 236, 257, 344, 512])
def test_factor_unsupported(m):
    with pytest.raises(QuellmError, match=f"m={m}"):
        hd.hadamard_factor(m)


@pytest.mark.parametrize("bad", [2.0, "12", True, None])
def test_factor_and_decompose_reject_non_integers(bad):
    with pytest.raises(ValueError):
        hd.hadamard_factor(bad)
    with pytest.raises(ValueError):
        hd.decompose(bad)


def test_numpy_integers_accepted():
    assert hd.decompose(np.int64(11008)) == (172, 64)
    assert hd.hadamard_factor(np.int32(12)).shape == (12, 12)


def test_construction_of_required_orders():
    want = {12: "paley1(q=11)", 20: "paley1(q=19)", 28: "paley1(q=27)", 36: "paley2(q=17)",
            40: "paley1(q=19) x sylvester(2)", 52: "paley2(q=25)", 156: "williamson(t=39)",
            172: "williamson(t=43)"}
    for m, name in want.items():
        assert hd._construction(m) == name


def _prime_powers(limit):
    return [q for q in range(2, limit + 1) if hd._prime_power(q)]


def test_prime_power():
    assert hd._prime_power(27) == (3, 3) and hd._prime_power(25) == (5, 2)
    assert hd._prime_power(243) == (3, 5) and hd._prime_power(2) == (2, 1)
    assert hd._prime_power(1) is None and hd._prime_power(77) is None and hd._prime_power(12) is None


@pytest.mark.parametrize("q", [q for q in _prime_powers(255) if q % 4 == 3])
def test_paley1_every_prime_power(q):
    """Paley I for every q = 3 mod 4 up to 255, including GF(27) and GF(243)."""
    h = hd._paley1(q).astype(np.int64)
    np.testing.assert_array_equal(h @ h.T, (q + 1) * np.eye(q + 1, dtype=np.int64))
    s = h - np.eye(q + 1, dtype=np.int64)
    np.testing.assert_array_equal(s, -s.T)  # skew type: H = I + S, S antisymmetric


@pytest.mark.parametrize("q", [q for q in _prime_powers(127) if q % 4 == 1])
def test_paley2_every_prime_power(q):
    """Paley II for every q = 1 mod 4 up to 127, including GF(9), GF(25), GF(49), GF(81), GF(121)."""
    h = hd._paley2(q).astype(np.int64)
    n = 2 * (q + 1)
    np.testing.assert_array_equal(h @ h.T, n * np.eye(n, dtype=np.int64))
    np.testing.assert_array_equal(h, h.T)  # Paley II is symmetric


def test_jacobsthal_properties():
    for q in (7, 9, 25, 27, 49):
        j = hd._jacobsthal(q).astype(np.int64)
        assert (np.diag(j) == 0).all() and (j.sum(axis=1) == 0).all()
        np.testing.assert_array_equal(j @ j.T, q * np.eye(q, dtype=np.int64) - 1)
        np.testing.assert_array_equal(j, j.T if q % 4 == 1 else -j.T)


@pytest.mark.parametrize("t", sorted(hd._WILLIAMSON))
def test_stored_williamson_quadruples(t):
    """The stored half-rows give symmetric circulants with A² + B² + C² + D² = 4t·I."""
    halves = hd._WILLIAMSON[t]
    assert len(halves) == 4 and all(len(h) == (t + 1) // 2 and set(h) <= set("+-") for h in halves)
    total = np.zeros((t, t), np.int64)
    for half in halves:
        x = np.array([1 if c == "+" else -1 for c in half])
        row = np.concatenate([x, x[1:][::-1]])
        circ = np.stack([np.roll(row, i) for i in range(t)])  # circ[i, j] = row[j - i]
        np.testing.assert_array_equal(circ, circ.T)
        total += circ @ circ
    np.testing.assert_array_equal(total, 4 * t * np.eye(t, dtype=np.int64))
    assert hd._construction(4 * t) == f"williamson(t={t})"


def test_symmetric_factors_are_exactly_the_paley2_and_sylvester_ones():
    for m in ALL_ORDERS:
        h = hd.hadamard_factor(m)
        base = hd._construction(m).split(" x ")[0]
        assert np.array_equal(h, h.T) == base.startswith(("paley2", "sylvester")), m


@pytest.mark.parametrize("m", hd.factor_orders())
def test_kron_consistency_of_factor_splits(m):
    """kron(hadamard_factor(m), H_2^k) is H_n for every split n = m·2^k, not only decompose's."""
    for k in range(3):
        n = m << k
        want = np.kron(hd.hadamard_factor(m).astype(np.int64), kron_sylvester(1 << k))
        np.testing.assert_array_equal(hd.hadamard_matrix(n), want)


def test_had40_is_had20_doubled():
    """SPEC §3.3: (had40 ⊗ I)(I ⊗ H128) must be H_5120 = had20 ⊗ H256."""
    np.testing.assert_array_equal(
        hd.hadamard_factor(40), np.kron(hd.hadamard_factor(20), kron_sylvester(2)))


# ---- sizes ------------------------------------------------------------------------------------

@pytest.mark.parametrize("n, want", sorted(MODEL_SIZES.items()))
def test_model_sizes(n, want):
    assert hd.decompose(n) == want
    assert n in hd.fwht_sizes(n)


def test_decompose_rule_against_brute_force():
    shipped = (1,) + hd.factor_orders()
    supported = []
    for n in range(1, 4097):
        fits = [m for m in shipped if n % m == 0 and is_pow2(n // m)]
        if fits:
            supported.append(n)
            assert hd.decompose(n) == (min(fits), n // min(fits)), n
        else:
            with pytest.raises(ValueError):
                hd.decompose(n)
    assert hd.fwht_sizes(4096) == supported


def test_decompose_large_and_powers_of_two():
    assert hd.decompose(1) == (1, 1) and hd.decompose(2) == (1, 2)
    assert hd.decompose(2**60) == (1, 2**60)
    assert hd.decompose(172 << 16) == (172, 1 << 16)
    assert hd.decompose(252 << 40) == (252, 1 << 40)


def _nearest_brute(n: int) -> tuple[int, int]:
    sizes = hd.fwht_sizes(2 * n + 256)
    return max(s for s in sizes if s < n), min(s for s in sizes if s > n)


@pytest.mark.parametrize("n", [3, 6, 10, 14, 188, 3008, 47 << 10, 59 * 4, 100003, 4 * 29 * 3])
def test_unsupported_names_nearest_sizes(n):
    below, above = _nearest_brute(n)
    with pytest.raises(QuellmError) as info:
        hd.decompose(n)
    msg = str(info.value)
    assert f"n={n}" in msg and f"nearest supported sizes: {below} and {above}" in msg


@given(st.integers(min_value=1, max_value=200_000))
def test_unsupported_nearest_sizes_hypothesis(n):
    sizes = set(hd.fwht_sizes(n))
    if n in sizes:
        assert math.prod(hd.decompose(n)) == n
        return
    below, above = _nearest_brute(n)
    with pytest.raises(ValueError, match=f"nearest supported sizes: {below} and {above}$"):
        hd.decompose(n)


@pytest.mark.parametrize("n", [0, -1, -12])
def test_decompose_nonpositive(n):
    with pytest.raises(QuellmError, match=">= 1"):
        hd.decompose(n)


def test_fwht_sizes():
    assert hd.fwht_sizes(0) == [] and hd.fwht_sizes(1) == [1]
    assert hd.fwht_sizes(40) == [1, 2, 4, 8, 12, 16, 20, 24, 28, 32, 36, 40]
    big = hd.fwht_sizes(1 << 20)
    assert big == sorted(set(big)) and big[-1] == 1 << 20
    assert set(MODEL_SIZES) <= set(hd.fwht_sizes(30000))
    for n in big[::97]:
        m, p = hd.decompose(n)
        assert m * p == n and is_pow2(p)


# ---- dense matrices ---------------------------------------------------------------------------

@pytest.mark.parametrize("k", range(11))
def test_hadamard_matrix_sylvester_powers_of_two(k):
    n = 1 << k
    h = hd.hadamard_matrix(n)
    assert h.dtype == np.float64 and h.shape == (n, n)
    np.testing.assert_array_equal(h, kron_sylvester(n))
    np.testing.assert_allclose(hd.hadamard_matrix(n, normalized=True), h / math.sqrt(n), rtol=0,
                               atol=1e-15)


@pytest.mark.parametrize("n", [12, 24, 40, 172, 156 * 2, 1536, 11008 // 16])
def test_hadamard_matrix_orthogonal(n):
    h = hd.hadamard_matrix(n)
    np.testing.assert_array_equal(h @ h.T, n * np.eye(n))
    q = hd.hadamard_matrix(n, normalized=True)
    np.testing.assert_allclose(q @ q.T, np.eye(n), rtol=0, atol=1e-12)


def test_random_hadamard():
    for n in (64, 172, 5 * 16 * 3):
        q = hd.random_hadamard(n, seed=7)
        assert q.dtype == np.float64 and q.shape == (n, n)
        np.testing.assert_allclose(q @ q.T, np.eye(n), rtol=0, atol=1e-12)
        np.testing.assert_array_equal(q, hd.random_hadamard(n, seed=7))
        assert not np.array_equal(q, hd.random_hadamard(n, seed=8))
        s = 2.0 * np.random.default_rng(7).integers(0, 2, size=n) - 1.0
        np.testing.assert_array_equal(q, np.diag(s) @ hd.hadamard_matrix(n, normalized=True).T)
        np.testing.assert_allclose(np.abs(q), 1 / math.sqrt(n), rtol=1e-15)


# ---- fwht_numpy -------------------------------------------------------------------------------

batch_shapes = st.lists(st.integers(min_value=0, max_value=3), max_size=3).map(tuple)


@given(n=st.sampled_from(SIZES_4096), batch=batch_shapes, seed=st.integers(0, 2**32 - 1),
       scale=st.one_of(st.none(), st.floats(-4.0, 4.0, allow_nan=False)))
def test_fwht_numpy_matches_dense(n, batch, seed, scale):
    x = np.random.default_rng(seed).standard_normal(batch + (n,))
    y = hd.fwht_numpy(x, scale=scale)
    s = 1 / math.sqrt(n) if scale is None else scale
    want = x @ dense_reference(n).T * s
    assert y.shape == x.shape and y.dtype == np.float64
    tol = 1e-14 * math.sqrt(n) * max(1.0, abs(s) * math.sqrt(n))
    np.testing.assert_allclose(y, want, rtol=0, atol=tol * max(1.0, np.abs(x).max(initial=0)))


@pytest.mark.parametrize("n", sorted(MODEL_SIZES) + [1, 2, 12, 92, 116, 156, 172, 252 << 3])
def test_fwht_numpy_model_sizes_against_kron_structure(n):
    """H_n x = vec(H_m · X · H_p) with X the [m, p] view; checked without an n×n matrix."""
    m, p = hd.decompose(n)
    x = np.random.default_rng(n).standard_normal((2, n))
    want = (hd.hadamard_factor(m).astype(np.float64) @ x.reshape(2, m, p)
            @ kron_sylvester(p).astype(np.float64)).reshape(2, n) / math.sqrt(n)
    np.testing.assert_allclose(hd.fwht_numpy(x), want, rtol=0, atol=1e-12)


def test_fwht_numpy_exact_on_integers():
    for n in (8, 12, 40, 172):
        x = np.random.default_rng(n).integers(-1000, 1000, size=(3, n))
        want = x @ np.kron(hd.hadamard_factor(hd.decompose(n)[0]).astype(np.int64),
                           kron_sylvester(hd.decompose(n)[1])).T
        np.testing.assert_array_equal(hd.fwht_numpy(x, scale=1.0), want.astype(np.float64))


@pytest.mark.parametrize("n", [n for n in SIZES_4096
                               if hd._construction(hd.decompose(n)[0]).startswith(("sylvester", "paley2"))
                               ][::3])
def test_fwht_twice_is_identity_when_symmetric(n):
    x = np.random.default_rng(n).standard_normal((3, n))
    np.testing.assert_allclose(hd.fwht_numpy(hd.fwht_numpy(x)), x, rtol=0, atol=TWICE_TOL)


@given(n=st.sampled_from(SIZES_4096), seed=st.integers(0, 2**32 - 1))
def test_fwht_inverse_is_transpose(n, seed):
    """For every size the inverse is H_nᵀ/√n; twice-applied is the identity only if H_m = H_mᵀ."""
    x = np.random.default_rng(seed).standard_normal((2, n))
    y = hd.fwht_numpy(x)
    np.testing.assert_allclose(y @ hd.hadamard_matrix(n, normalized=True), x, rtol=0, atol=TWICE_TOL)
    np.testing.assert_allclose(np.linalg.norm(y, axis=-1), np.linalg.norm(x, axis=-1), rtol=1e-13)


@given(n=st.sampled_from(hd.fwht_sizes(512)), seed=st.integers(0, 2**32 - 1),
       n_bad=st.integers(1, 3), kinds=st.lists(st.sampled_from(["nan", "inf", "-inf"]), min_size=3,
                                                max_size=3))
def test_fwht_nonfinite_propagates_like_dense(n, seed, n_bad, kinds):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((3, n))
    for r in range(3):
        cols = rng.choice(n, size=min(n_bad, n), replace=False)
        x[r, cols] = float(kinds[r])
    y = hd.fwht_numpy(x)
    with np.errstate(invalid="ignore", over="ignore"):
        want = x @ dense_reference(n).T / math.sqrt(n)
    np.testing.assert_array_equal(np.isnan(y), np.isnan(want))
    np.testing.assert_array_equal(np.isposinf(y), np.isposinf(want))
    np.testing.assert_array_equal(np.isneginf(y), np.isneginf(want))
    for r in range(3):
        if kinds[r] == "nan":
            assert np.isnan(y[r]).all()
    fin = np.isfinite(want)
    np.testing.assert_allclose(y[fin], want[fin], rtol=0, atol=1e-12)


@pytest.mark.parametrize("batch", [(0,), (1,), (0, 3), (2, 0, 1), ()])
def test_fwht_numpy_batch_edges(batch):
    x = np.ones(batch + (12,))
    y = hd.fwht_numpy(x)
    assert y.shape == x.shape
    np.testing.assert_allclose(y, x @ hd.hadamard_matrix(12, normalized=True).T, atol=1e-15)


def test_fwht_numpy_input_handling():
    x = np.arange(24, dtype=np.float32).reshape(2, 12)
    before = x.copy()
    y = hd.fwht_numpy(x)
    assert y.dtype == np.float64
    np.testing.assert_array_equal(x, before)  # input untouched
    np.testing.assert_allclose(hd.fwht_numpy(x.tolist()), y)
    np.testing.assert_allclose(hd.fwht_numpy([1.0, 0.0, 0.0, 0.0], scale=1.0), [1, 1, 1, 1])


@pytest.mark.parametrize("x, match", [
    (np.float64(1.0), "at least one dimension"),
    (np.zeros((2, 6)), "length 6"),
    (np.zeros((2, 0)), "length 0"),
    (np.zeros(12, complex), "real"),
    (np.array(["a"] * 4), "real"),
])
def test_fwht_numpy_errors(x, match):
    with pytest.raises(QuellmError, match=match):
        hd.fwht_numpy(x)


# ---- the offline generator --------------------------------------------------------------------

def test_gen_williamson_small_orders():
    """The committed search finds valid quadruples: subgroup path and the row-sum fallback."""
    from quellm import _gen_williamson as gen

    for t in (3, 5, 7, 9, 11):
        found = gen.search(t, verbose=False)
        h = gen._williamson_matrix(found, t)
        np.testing.assert_array_equal(h @ h.T, 4 * t * np.eye(4 * t, dtype=np.int64))
    found = gen._search_rowsums(13, verbose=False)
    h = gen._williamson_matrix(found, 13)
    np.testing.assert_array_equal(h @ h.T, 52 * np.eye(52, dtype=np.int64))


def test_docstring_examples():
    import doctest

    result = doctest.testmod(hd, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted >= 8 and result.failed == 0
