"""Hadamard matrices for the fast Walsh-Hadamard transform of sizes ``n = m·2^k``.

quellm's FWHT (SPEC §0, §3) multiplies by ``H_n = kron(H_m, H_{2^k})``:

* ``H_{2^k}`` is the Sylvester matrix in natural order: ``H_1 = [1]``,
  ``H_{2p} = [[H_p, H_p], [H_p, -H_p]]`` (the same matrix as ``scipy.linalg.hadamard``);
* ``H_m`` is a ±1 Hadamard matrix of order ``m`` (``H_m H_mᵀ = m·I``), supplied by this module.

Index convention: element ``i = a·2^k + b`` of a length-``n`` vector sits in row ``a`` of ``H_m``
and row ``b`` of the Sylvester part, i.e. the vector is viewed as an ``[m, 2^k]`` array ``X`` and
``H_n x = vec(H_m · X · H_{2^k})`` (``H_{2^k}`` is symmetric).

Symmetry: ``H_n`` is symmetric exactly when ``H_m`` is, which holds for the powers of two and the
Paley II orders (36, 52, 76, 100, 124, 148, ... and their doublings) but *not* for the Paley I
(12, 20, 28, 44, 60, 108, 140, ...) or Williamson (92, 116, 156, 172) factors. So in general
``H_n⁻¹ = H_nᵀ/n ≠ H_n/n``, applying the transform twice is not the identity, and transposes
matter (SPEC §3.4). (Symmetric Hadamard matrices of orders 156 and 172 do exist, but finding them
is a research-scale search; they are not shipped.)

Where the factors come from (all built here from constructions, nothing copied from tables):

* **Paley I**: ``q ≡ 3 (mod 4)`` a prime power gives order ``q + 1``;
* **Paley II**: ``q ≡ 1 (mod 4)`` a prime power gives order ``2(q + 1)``;
  both use the quadratic character of GF(q) (``GF(p^k)`` arithmetic for ``q = 27, 25, 49, ...``);
* **Williamson**: four symmetric circulant ±1 matrices ``A, B, C, D`` of odd order ``t`` with
  ``A² + B² + C² + D² = 4t·I`` give order ``4t``. The half-rows in ``_WILLIAMSON`` (t = 23, 29,
  39, 43, i.e. orders 92, 116, 156, 172) were found by ``python -m quellm._gen_williamson``;
* **Sylvester doubling**: ``H_{b·2^j} = kron(H_b, H_{2^j})``.

For every odd number ``o > 1`` with a construction, the *base order* ``b(o)`` is the smallest order
``o·2^e`` one of Paley I, Paley II or Williamson reaches (always ``4o`` in the shipped range); every
other order with odd part ``o`` is the base matrix doubled by Sylvester. Consequently, for every
supported ``n`` and *every* split ``n = m·2^k`` with ``m`` a shipped order,
``kron(hadamard_factor(m), H_{2^k}) == hadamard_matrix(n)`` — e.g. ``had40 ⊗ H_128 = had20 ⊗ H_256``
for ``n = 5120``, which is what SPEC §3.3's head/full consistency condition needs.

Shipped factor orders: every ``m <= MAX_FACTOR_ORDER = 256`` of that form (see
:func:`factor_orders`); odd parts 47 and 59 (orders 188, 236) have none of these constructions and
are not supported. Matrices are built on first use and cached; importing this module is cheap.

Note: QuaRot uses the matrices of Sloane's library, so transforms built from this module are
valid rotations but do not reproduce QuaRot's numbers byte for byte (SPEC §3.4).
"""

from __future__ import annotations

import functools
import itertools
import math
import operator

import numpy as np

from .errors import QuellmError

__all__ = [
    "MAX_FACTOR_ORDER",
    "decompose",
    "factor_orders",
    "fwht_numpy",
    "fwht_sizes",
    "hadamard_factor",
    "hadamard_matrix",
    "random_hadamard",
]

MAX_FACTOR_ORDER = 256
"""Largest order ``m`` that :func:`hadamard_factor` builds."""

# Williamson quadruples: for odd t, the half-rows x[0..(t-1)/2] of the first rows of the symmetric
# circulants A, B, C, D ('+' = +1, '-' = -1; the full row is x[i] = x[t-i]).
# found by _gen_williamson.py (`python -m quellm._gen_williamson 23 29 39 43`, ~25 s in all).
_WILLIAMSON: dict[int, tuple[str, str, str, str]] = {
    23: ("+--+-+-+++++", "+--++-+-+-++", "+++---++--++", "+--+--+++---"),
    29: ("+++-+-++---+-++", "+-+++++-+++-+--", "+++--++-+-++---", "++--++--+-++---"),
    39: ("+++--+-+-----+--++--", "+++--++-+---+-+--+--", "+---++-+-+-----+++-+",
         "++++---+--++----+-+-"),
    43: ("+-+-++--+-+-++++++-+--", "+-+++----+-++-++--++++", "+--+++--+----+-+--++-+",
         "++++-++++---+++---+--+"),
}


# ---- finite fields and the constructions ------------------------------------------------------

def _prime_power(q: int) -> tuple[int, int] | None:
    """``(p, k)`` with ``q = p^k``, p prime, or None."""
    if q < 2:
        return None
    p = next(d for d in itertools.count(2) if q % d == 0)  # smallest prime factor
    k = 0
    while q % p == 0:
        q //= p
        k += 1
    return (p, k) if q == 1 else None


def _poly_rem(a: list[int], f: list[int], p: int) -> list[int]:
    """Remainder of polynomial ``a`` by monic ``f`` over GF(p); coefficients lowest degree first."""
    a = [c % p for c in a]
    d = len(f) - 1
    for i in range(len(a) - 1, d - 1, -1):
        c = a[i]
        if c:
            for j in range(d + 1):
                a[i - d + j] = (a[i - d + j] - c * f[j]) % p
    return (a + [0] * d)[:d]


def _irreducible(p: int, k: int) -> list[int]:
    """The first (lexicographic in the low coefficients) monic irreducible polynomial of degree k."""
    for low in itertools.product(range(p), repeat=k):
        f = list(low) + [1]
        if low[0] == 0 and k > 1:
            continue  # divisible by x
        has_factor = any(
            not any(_poly_rem(f, list(g) + [1], p))
            for d in range(1, k // 2 + 1)
            for g in itertools.product(range(p), repeat=d)
        )
        if not has_factor:
            return f
    raise AssertionError(f"no irreducible polynomial of degree {k} over GF({p})")  # pragma: no cover


def _jacobsthal(q: int) -> np.ndarray:
    """Jacobsthal matrix of GF(q): ``Q[i, j] = χ(x_j - x_i)``, int8 ``(q, q)``.

    Element ``i`` of GF(p^k) is the polynomial whose coefficients are the base-p digits of ``i``
    (lowest digit = constant term), multiplied modulo a fixed irreducible polynomial. ``χ`` is the
    quadratic character: ``χ(0) = 0``, ``+1`` on nonzero squares, ``-1`` otherwise.
    """
    pk = _prime_power(q)
    if pk is None:
        raise ValueError(f"{q} is not a prime power")
    p, k = pk
    digits = (np.arange(q)[:, None] // p ** np.arange(k)[None, :]) % p  # (q, k)
    f = _irreducible(p, k)
    chi = np.full(q, -1, np.int8)
    chi[0] = 0
    for x in range(1, q):
        c = digits[x].tolist()
        sq = [0] * (2 * k - 1)
        for i, j in itertools.product(range(k), repeat=2):
            sq[i + j] += c[i] * c[j]
        r = _poly_rem(sq, f, p)
        chi[sum(v * p**i for i, v in enumerate(r))] = 1
    diff = (digits[None, :, :] - digits[:, None, :]) % p  # x_j - x_i, digit-wise
    return chi[diff @ (p ** np.arange(k))]


def _paley1(q: int) -> np.ndarray:
    """Paley I, order ``q + 1`` for a prime power ``q ≡ 3 (mod 4)``.

    ``S = [[0, 1ᵀ], [-1, Q]]`` is antisymmetric with ``S Sᵀ = q·I``, so ``H = I + S`` has
    ``H Hᵀ = (q + 1)·I``.
    """
    if q % 4 != 3:
        raise ValueError(f"Paley I needs q = 3 mod 4, got {q}")
    s = np.zeros((q + 1, q + 1), np.int8)
    s[0, 1:] = 1
    s[1:, 0] = -1
    s[1:, 1:] = _jacobsthal(q)
    return s + np.eye(q + 1, dtype=np.int8)


def _paley2(q: int) -> np.ndarray:
    """Paley II, order ``2(q + 1)`` for a prime power ``q ≡ 1 (mod 4)``.

    ``C = [[0, 1ᵀ], [1, Q]]`` is a symmetric conference matrix (``C Cᵀ = q·I``);
    ``H = C ⊗ [[1, 1], [1, -1]] + I ⊗ [[1, -1], [-1, -1]]``.
    """
    if q % 4 != 1:
        raise ValueError(f"Paley II needs q = 1 mod 4, got {q}")
    c = np.zeros((q + 1, q + 1), np.int8)
    c[0, 1:] = 1
    c[1:, 0] = 1
    c[1:, 1:] = _jacobsthal(q)
    return (np.kron(c, np.array([[1, 1], [1, -1]], np.int8))
            + np.kron(np.eye(q + 1, dtype=np.int8), np.array([[1, -1], [-1, -1]], np.int8)))


def _williamson(t: int) -> np.ndarray:
    """Order ``4t`` from the stored Williamson quadruple of order ``t``, via the Williamson array

    ``[[A, B, C, D], [-B, A, -D, C], [-C, D, A, -B], [-D, -C, B, A]]``

    (valid because symmetric circulants commute and ``A² + B² + C² + D² = 4t·I``).
    """
    shift = (np.arange(t)[None, :] - np.arange(t)[:, None]) % t  # circulant: M[i, j] = row[j - i]
    mats = []
    for half in _WILLIAMSON[t]:
        h = np.array([1 if ch == "+" else -1 for ch in half], np.int8)
        row = np.concatenate([h, h[:0:-1]])  # x[t - i] = x[i]
        mats.append(row[shift])
    a, b, c, d = mats
    return np.block([[a, b, c, d], [-b, a, -d, c], [-c, d, a, -b], [-d, -c, b, a]])


def _sylvester(p: int) -> np.ndarray:
    """Sylvester ``H_p`` (p a power of two), natural order, int8, by repeated block doubling."""
    h = np.ones((1, 1), np.int8)
    while h.shape[0] < p:
        h = np.block([[h, h], [h, -h]])
    return h


@functools.lru_cache(maxsize=None)
def _base_orders() -> dict[int, tuple[int, str, int]]:
    """``{odd part o: (base order, construction name, its parameter)}`` for every o > 1 that has a
    construction with order <= MAX_FACTOR_ORDER. Preference at each order: Paley I, Paley II,
    Williamson. Only primality tests run here, no matrices are built."""
    out = {}
    for o in range(3, MAX_FACTOR_ORDER // 4 + 1, 2):
        m = 4 * o
        while m <= MAX_FACTOR_ORDER and o not in out:
            if _prime_power(m - 1):
                out[o] = (m, "paley1", m - 1)
            elif m % 8 == 4 and _prime_power(m // 2 - 1):
                out[o] = (m, "paley2", m // 2 - 1)
            elif m == 4 * o and o in _WILLIAMSON:
                out[o] = (m, "williamson", o)
            m *= 2
    return out


def _split_two(n: int) -> tuple[int, int]:
    """``(odd part, power of two)`` of ``n >= 1``."""
    p = n & -n
    return n // p, p


def _construction(m: int) -> str:
    """How :func:`hadamard_factor` builds order ``m``, e.g. ``"paley1(q=11)"``,
    ``"williamson(t=43)"``, ``"paley1(q=19) x sylvester(2)"``, ``"sylvester(64)"``."""
    m = _check_factor_order(m)
    o, p = _split_two(m)
    if o == 1:
        return f"sylvester({m})"
    b, name, param = _base_orders()[o]
    base = f"{name}({'t' if name == 'williamson' else 'q'}={param})"
    return base if m == b else f"{base} x sylvester({m // b})"


# ---- public API -------------------------------------------------------------------------------

def _as_int(value, what: str) -> int:
    if isinstance(value, bool):
        raise QuellmError(f"{what} must be an integer, got {value!r}")
    try:
        return operator.index(value)
    except TypeError:
        raise QuellmError(f"{what} must be an integer, got {value!r}") from None


@functools.lru_cache(maxsize=None)
def _factor_cached(m: int) -> np.ndarray:
    o, p = _split_two(m)
    if o == 1:
        h = _sylvester(m)
    else:
        b, name, param = _base_orders()[o]
        base = {"paley1": _paley1, "paley2": _paley2, "williamson": _williamson}[name](param)
        h = np.kron(base, _sylvester(m // b)) if m > b else base
    h = np.ascontiguousarray(h, dtype=np.int8)
    h.flags.writeable = False
    return h


def factor_orders() -> tuple[int, ...]:
    """The non-power-of-two orders ``m`` that :func:`hadamard_factor` builds, ascending.

    Every order ``b·2^j <= MAX_FACTOR_ORDER`` where ``b`` is a base order (Paley I, Paley II or
    Williamson). Includes the orders QuaRot-style models need: 12, 20, 28, 36, 40, 44, 52, 60,
    76, 108, 140, 148, 156, 172 (and 24, 48, 68, 84, 92, 100, 116, 124, ... ).

    Example:
        >>> factor_orders()[:6]
        (12, 20, 24, 28, 36, 40)
    """
    return tuple(sorted(b << j for (b, _, _) in _base_orders().values()
                        for j in range(8) if b << j <= MAX_FACTOR_ORDER))


def hadamard_factor(m: int) -> np.ndarray:
    """The ±1 Hadamard matrix ``H_m`` of order ``m``: int8, shape ``(m, m)``, ``H_m H_mᵀ = m·I``.

    ``m`` is a power of two ``<= MAX_FACTOR_ORDER`` (Sylvester, natural order) or one of
    :func:`factor_orders`. For ``m = b·2^j`` with ``b`` the base order of ``m``'s odd part,
    ``H_m = kron(H_b, H_{2^j})``. The array is cached and read-only (copy it to modify).

    Raises:
        QuellmError: ``m`` is not a supported order.

    Example:
        >>> h = hadamard_factor(12)
        >>> bool((h.astype(int) @ h.T == 12 * np.eye(12)).all())
        True
    """
    return _factor_cached(_check_factor_order(m))


def _check_factor_order(m) -> int:
    """``m`` as an int if :func:`hadamard_factor` supports it, else QuellmError."""
    m = _as_int(m, "m")
    o = _split_two(m)[0] if m >= 1 else 0
    if m < 1 or m > MAX_FACTOR_ORDER or (o > 1 and (o not in _base_orders()
                                                    or m % _base_orders()[o][0])):
        raise QuellmError(
            f"no Hadamard factor of order m={m}: supported are the powers of two up to "
            f"{MAX_FACTOR_ORDER} and {', '.join(map(str, factor_orders()))}")
    return m


def decompose(n: int) -> tuple[int, int]:
    """Split a transform size as ``n = m·2^k``; returns ``(m, 2^k)``.

    Rule: ``m`` is the smallest shipped order with ``n / m`` a power of two — equivalently the
    largest power of two. For a power of two ``n`` that is ``(1, n)``; otherwise ``m`` is the
    base order of ``n``'s odd part (``12`` for odd part 3, ``20`` for 5, ...). Thus
    ``decompose(5120) == (20, 256)``, not ``(40, 128)``; both give the same ``H_n`` (see the
    module docstring). ``n`` is unbounded above.

    Raises:
        QuellmError (a ValueError): ``n < 1``, or no shipped ``m`` fits; the message names the
        nearest supported sizes below and above ``n``.

    Example:
        >>> decompose(11008), decompose(4096), decompose(5120)
        ((172, 64), (1, 4096), (20, 256))
    """
    n = _as_int(n, "n")
    if n < 1:
        raise QuellmError(f"Hadamard size n must be >= 1, got {n}")
    o, p = _split_two(n)
    if o == 1:
        return 1, n
    base = _base_orders().get(o)
    if base is not None and n % base[0] == 0:
        return base[0], n // base[0]
    below, above = _nearest_sizes(n)
    why = ("no Hadamard matrix construction is shipped for odd part " f"{o}"
           if base is None else f"n has odd part {o} but is not a multiple of {base[0]}")
    raise QuellmError(
        f"unsupported Hadamard size n={n} ({why}); supported sizes are m·2^k with m a power of "
        f"two or one of {', '.join(map(str, sorted(b for b, _, _ in _base_orders().values())))}; "
        f"nearest supported sizes: {below} and {above}")


def _nearest_sizes(n: int) -> tuple[int, int]:
    """The largest supported size below ``n`` and the smallest above it (``n`` unsupported)."""
    below, above = 1, None
    for b in [1] + [b for b, _, _ in _base_orders().values()]:
        if b > n:
            cand_hi = b
        else:
            k = (n // b).bit_length() - 1  # b·2^k <= n < b·2^(k+1)
            if b << k < n:
                below = max(below, b << k)
            cand_hi = b << (k + 1)
        above = cand_hi if above is None else min(above, cand_hi)
    return below, above


def fwht_sizes(max_n: int) -> list[int]:
    """Every supported transform size ``n <= max_n`` (powers of two and ``m·2^k``), ascending.

    Example:
        >>> fwht_sizes(40)
        [1, 2, 4, 8, 12, 16, 20, 24, 28, 32, 36, 40]
    """
    max_n = _as_int(max_n, "max_n")
    out = set()
    for b in [1] + [b for b, _, _ in _base_orders().values()]:
        v = b
        while v <= max_n:
            out.add(v)
            v *= 2
    return sorted(out)


def hadamard_matrix(n: int, normalized: bool = False) -> np.ndarray:
    """Dense ``H_n = kron(H_m, H_{2^k})`` with ``(m, 2^k) = decompose(n)``: float64 ``(n, n)``.

    ``H_n H_nᵀ = n·I``; with ``normalized=True`` the result is ``H_n / sqrt(n)`` (orthogonal, but
    not symmetric when ``m > 2``). Builds ``n²`` doubles (128 MiB at ``n = 4096``): meant for
    tests and offline weight folding, not for applying the transform (use :func:`fwht_numpy`).

    Example:
        >>> hadamard_matrix(2)
        array([[ 1.,  1.],
               [ 1., -1.]])
    """
    m, p = decompose(n)
    h = np.kron(hadamard_factor(m), _sylvester(p)).astype(np.float64)  # kron in int8: exact, fast
    if normalized:
        h /= math.sqrt(h.shape[0])
    return h


def random_hadamard(n: int, seed) -> np.ndarray:
    """QuaRot's residual rotation ``Q = diag(s) · H_{n,norm}ᵀ`` (SPEC §3.2): float64 ``(n, n)``.

    ``H_{n,norm} = hadamard_matrix(n, normalized=True)`` and the signs are drawn as
    ``s = 2 * np.random.default_rng(seed).integers(0, 2, size=n) - 1`` (i.i.d. uniform ±1), so
    the same ``seed`` gives the same ``Q``. ``Q Qᵀ = I``.

    Example:
        >>> q = random_hadamard(12, seed=0)
        >>> bool(np.allclose(q @ q.T, np.eye(12)))
        True
    """
    h = hadamard_matrix(n, normalized=True)
    s = 2.0 * np.random.default_rng(seed).integers(0, 2, size=h.shape[0]) - 1.0
    return s[:, None] * h.T


def fwht_numpy(x, scale: float | None = None) -> np.ndarray:
    """Reference Walsh-Hadamard transform along the last axis: ``x @ hadamard_matrix(n).T * scale``.

    Args:
        x: real array of shape ``(..., n)``, ``n`` a supported size (:func:`fwht_sizes`);
            any batch shape, including empty batches. Computed in float64.
        scale: multiplies the result; default ``1/sqrt(n)`` (the orthonormal transform).

    Returns:
        float64 array of shape ``(..., n)``: ``y = scale · H_n x`` for each row ``x``.

    Inverse: with the default scale the inverse is ``y @ hadamard_matrix(n, normalized=True)``
    (i.e. ``H_nᵀ/√n``). Applying ``fwht_numpy`` twice returns ``x`` only when ``H_m`` is
    symmetric — powers of two and the Paley II orders (36, 52, 76, 100, 124, 148, ...) — but not
    for the Paley I (12, 20, 28, 44, ...) or Williamson (92, 116, 156, 172) factors.

    Algorithm (what the C++ kernels do): view each row as ``X`` of shape ``[m, 2^k]``
    (``(m, 2^k) = decompose(n)``), run ``k`` butterfly stages along the ``2^k`` axis (stage with
    half-width ``h`` maps each block ``[a, b]`` of width ``2h`` to ``[a + b, a - b]``, which is
    ``X · H_{2^k}``), then left-multiply by ``H_m`` and scale. NaN and ±Inf propagate as in the
    dense product: a NaN anywhere in a row makes that whole output row NaN.

    Example:
        >>> fwht_numpy(np.array([1.0, 0.0, 0.0, 0.0]), scale=1.0)
        array([1., 1., 1., 1.])
    """
    x = np.asarray(x)
    if x.ndim == 0:
        raise QuellmError("fwht_numpy: x must have at least one dimension (..., n)")
    if np.iscomplexobj(x) or not (np.issubdtype(x.dtype, np.number) or x.dtype == np.bool_):
        raise QuellmError(f"fwht_numpy: x must be a real array, got dtype {x.dtype}")
    n = x.shape[-1]
    try:
        m, p = decompose(n)
    except QuellmError as e:
        raise QuellmError(f"fwht_numpy: last axis of x has length {n}: {e}") from None
    lead = x.shape[:-1]
    y = x.astype(np.float64).reshape(*lead, m, p)
    with np.errstate(invalid="ignore", over="ignore"):  # inf - inf -> NaN, like the dense product
        h = 1
        while h < p:  # butterfly stage: blocks of width 2h, halves a | b -> a+b | a-b
            y = y.reshape(*lead, m, p // (2 * h), 2, h)
            a, b = y[..., 0, :], y[..., 1, :]
            y = np.stack((a + b, a - b), axis=-2)
            h *= 2
        y = y.reshape(*lead, m, p)
        if m > 1:
            y = np.matmul(hadamard_factor(m).astype(np.float64), y)  # H_m · X along the m axis
        y = y.reshape(*lead, n)
        y *= 1.0 / math.sqrt(n) if scale is None else scale
    return y
