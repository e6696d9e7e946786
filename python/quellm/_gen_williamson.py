"""Offline search for Williamson quadruples; prints the half-rows stored in ``hadamard.py``.

Run once, by hand (never imported by quellm at run time)::

    python -m quellm._gen_williamson 23 29 39 43     # the orders hadamard.py ships (~25 s)

What it looks for
-----------------
Four symmetric circulant ±1 matrices ``A, B, C, D`` of odd order ``t`` with
``A² + B² + C² + D² = 4t·I``. Plugged into the Williamson array they give a Hadamard matrix of
order ``4t`` (see ``hadamard._williamson``). A symmetric circulant is fixed by its half-row
``x[0..m]``, ``m = (t-1)/2`` (``x[t-i] = x[i]``). Two equivalent forms of the condition are used:

* periodic autocorrelation (integers, exact): ``PAF_A(s) + PAF_B(s) + PAF_C(s) + PAF_D(s) = 0``
  for ``s = 1..m``, where ``PAF_X(s) = sum_i x[i]·x[(i+s) mod t]``;
* power spectral density (a filter): the eigenvalues of a symmetric circulant are real,
  ``λ_j(X) = sum_i x[i]·cos(2π·i·j/t)``, and the condition says
  ``λ_j(A)² + λ_j(B)² + λ_j(C)² + λ_j(D)² = 4t`` for every ``j``. So a candidate with some
  ``λ_j² > 4t`` can never be part of a quadruple, and neither can a pair whose summed PSD exceeds 4t.

Search
------
Multiplying all indices by a unit ``u`` of ``Z_t`` maps Williamson quadruples to Williamson
quadruples, so we look for quadruples fixed by a subgroup ``G`` of the units that contains ``-1``:
every sequence is then constant on each ``G``-orbit of ``Z_t \\ {0}``. With ``r`` orbits there are
``2^r`` sequences with ``x[0] = +1`` (negating a whole matrix is harmless, so ``x[0] = +1`` is
no loss). Subgroups are tried from the fewest orbits up; for each:

1. enumerate the ``2^r`` sequences, drop those with a PSD value above ``4t``;
2. form all unordered pairs ``{X, Y}`` whose summed PSD stays ``<= 4t`` and key each by the
   integer vector ``PAF_X + PAF_Y`` (hashed to one int64 by a random linear form);
3. meet in the middle: a pair ``{A, B}`` and a pair ``{C, D}`` with ``key(A,B) = -key(C,D)``
   (hash match, then checked exactly) is a Williamson quadruple.

If no subgroup with at most ``max_orbits`` orbits gives a quadruple (t = 39 is such a case: only
``G = {±1}`` works, 19 free signs), the fallback ``_search_rowsums`` enumerates all ``2^m``
half-rows with ``x[0] = +1``, keeps those with PSD ``<= 4t``, and splits by row sums: with every
``x[0] = +1`` the row sums ``s_X`` satisfy ``s_A² + s_B² + s_C² + s_D² = 4t`` (PSD at ``j = 0``).
For each such multiset, A is restricted to sequences that are lexicographically smallest under
the multipliers (the multipliers act on the whole quadruple, so this loses nothing), the pairs
``(A, B)`` are stored sorted by hash and the pairs ``(C, D)`` are streamed against them.

The first quadruple found is verified by building the order-``4t`` matrix and checking
``H Hᵀ = 4t·I``, then printed as ``+``/``-`` strings (half-rows ``x[0..m]``).

Observed on a 2-core machine: t = 23, 29, 43 are found by the subgroup search in under 3 s
(t = 43 with a subgroup of order 6, 7 orbits); t = 39 by the row-sum search in ~20 s.
"""

from __future__ import annotations

import argparse
import math
import sys
import time

import numpy as np


def _unit_subgroups(t: int) -> list[frozenset[int]]:
    """Subgroups of the units of Z_t of the form <-1, g> (all g), smallest orbit count first."""
    units = [u for u in range(1, t) if math.gcd(u, t) == 1]
    seen: set[frozenset[int]] = set()
    for g in units:
        grp = {1, t - 1}
        frontier = list(grp)
        while frontier:
            nxt = []
            for h in frontier:
                for s in (g, t - 1):
                    v = h * s % t
                    if v not in grp:
                        grp.add(v)
                        nxt.append(v)
            frontier = nxt
        seen.add(frozenset(grp))
    return sorted(seen, key=lambda s: (len(_orbits(t, s)), len(s)))


def _orbits(t: int, grp: frozenset[int]) -> list[list[int]]:
    """Orbits of ``grp`` on 1..(t-1)/2 (each orbit is closed under ±, so half is enough)."""
    m = (t - 1) // 2
    done = [False] * (m + 1)
    out = []
    for i in range(1, m + 1):
        if done[i]:
            continue
        orb = sorted({min(g * i % t, t - g * i % t) for g in grp})
        for j in orb:
            done[j] = True
        out.append(orb)
    return out


def _full_rows(half: np.ndarray, t: int) -> np.ndarray:
    """(N, m+1) half-rows -> (N, t) symmetric first rows."""
    m = (t - 1) // 2
    return np.concatenate([half, half[:, m:0:-1]], axis=1)


def _paf(full: np.ndarray) -> np.ndarray:
    """(N, t) rows -> (N, m) periodic autocorrelation at shifts 1..m (int32)."""
    t = full.shape[1]
    m = (t - 1) // 2
    f = full.astype(np.int32)
    return np.stack([(f * np.roll(f, -s, axis=1)).sum(1) for s in range(1, m + 1)], axis=1)


def _psd(full: np.ndarray) -> np.ndarray:
    """(N, t) symmetric rows -> (N, m+1) power spectral density λ_j², j = 0..m."""
    t = full.shape[1]
    m = (t - 1) // 2
    cos = np.cos(2 * np.pi * np.outer(np.arange(t), np.arange(m + 1)) / t)
    return (full.astype(np.float64) @ cos) ** 2


def _candidates(t: int, orbits: list[list[int]]) -> np.ndarray:
    """All half-rows (x[0] = +1) constant on the orbits, with every PSD value <= 4t."""
    m = (t - 1) // 2
    r = len(orbits)
    bits = (np.arange(2**r)[:, None] >> np.arange(r)[None, :]) & 1
    signs = 1 - 2 * bits.astype(np.int8)  # (2^r, r)
    half = np.ones((2**r, m + 1), np.int8)
    for k, orb in enumerate(orbits):
        half[:, orb] = signs[:, [k]]
    full = _full_rows(half, t)
    ok = (_psd(full) <= 4 * t + 1e-6).all(axis=1)
    return half[ok]


def _search_orbits(t: int, orbits: list[list[int]], seed: int = 0) -> tuple[np.ndarray, ...] | None:
    """Meet-in-the-middle over pairs of orbit-constant candidates; a quadruple of half-rows or None."""
    cand = _candidates(t, orbits)
    n = len(cand)
    if n == 0:
        return None
    full = _full_rows(cand, t)
    paf = _paf(full).astype(np.int64)  # (n, m)
    psd = _psd(full)  # (n, m+1)
    rng = np.random.default_rng(seed)
    w = rng.integers(-(2**40), 2**40, size=paf.shape[1], dtype=np.int64)
    hv = paf @ w  # (n,) hash of each PAF vector; linear, so hash(X+Y) = hv[X] + hv[Y]
    keys, ii, jj = [], [], []
    for i in range(n):
        j = np.arange(i, n)
        ok = (psd[i][None, :] + psd[j] <= 4 * t + 1e-6).all(axis=1)
        j = j[ok]
        keys.append(hv[i] + hv[j])
        ii.append(np.full(j.size, i, np.int32))
        jj.append(j.astype(np.int32))
    keys = np.concatenate(keys)
    ii = np.concatenate(ii)
    jj = np.concatenate(jj)
    order = np.argsort(keys, kind="stable")
    keys, ii, jj = keys[order], ii[order], jj[order]
    pos = np.searchsorted(keys, -keys)
    hit = np.flatnonzero((pos < keys.size) & (keys[np.minimum(pos, keys.size - 1)] == -keys))
    for p in hit:
        q = pos[p]
        while q < keys.size and keys[q] == -keys[p]:
            a, b, c, d = ii[p], jj[p], ii[q], jj[q]
            if not (paf[a] + paf[b] + paf[c] + paf[d]).any():
                return cand[a], cand[b], cand[c], cand[d]
            q += 1
    return None


def _multiplier_images(half: np.ndarray, t: int) -> np.ndarray:
    """(N, m+1) half-rows -> (U, N, m+1): the images under i -> u·i for the units u in 1..m."""
    m = (t - 1) // 2
    units = [u for u in range(1, m + 1) if math.gcd(u, t) == 1]
    out = []
    for u in units:
        src = np.array([min(u * i % t, t - u * i % t) for i in range(m + 1)])
        out.append(half[:, src])
    return np.stack(out)


def _is_canonical(half: np.ndarray, t: int) -> np.ndarray:
    """(N,) mask: the half-row is the lexicographically smallest in its multiplier orbit."""
    m = (t - 1) // 2
    weights = (1 << np.arange(m, -1, -1, dtype=np.int64))  # x[0] most significant
    code = lambda h: ((h < 0).astype(np.int64) * weights).sum(-1)  # noqa: E731
    return code(half) <= code(_multiplier_images(half, t)).min(axis=0)


def _search_rowsums(t: int, seed: int = 0, verbose: bool = True) -> tuple[np.ndarray, ...] | None:
    """Exhaustive-style meet in the middle over all 2^m half-rows, split by row sums.

    With every x[0] = +1, each row sum s_X is fixed by the sequence and ``sum s_X² = 4t``.
    For each multiset {s1, s2, s3, s4} of possible row sums with that property: A (row sum s1,
    taken canonical under the multipliers, which act on the whole quadruple at once) and B
    (row sum s2) form the stored side; C, D (s3, s4) are streamed and looked up.
    """
    m = (t - 1) // 2
    bits = (np.arange(2**m, dtype=np.int64)[:, None] >> np.arange(m)[None, :]) & 1
    half = np.ones((2**m, m + 1), np.int8)
    half[:, 1:] = 1 - 2 * bits
    keep = []
    for i in range(0, len(half), 1 << 16):
        keep.append((_psd(_full_rows(half[i:i + (1 << 16)], t)) <= 4 * t + 1e-6).all(axis=1))
    half = half[np.concatenate(keep)]
    full = _full_rows(half, t)
    rows = full.sum(1).astype(np.int64)
    psd = _psd(full)
    paf = _paf(full).astype(np.int64)
    rng = np.random.default_rng(seed)
    w = rng.integers(-(2**40), 2**40, size=m, dtype=np.int64)
    hv = paf @ w
    sums = sorted(set(rows.tolist()))
    by_sum = {s: np.flatnonzero(rows == s) for s in sums}
    decomps = sorted({tuple(sorted((a, b, c, d), key=lambda v: (by_sum[v].size, v)))
                      for a in sums for b in sums for c in sums for d in sums
                      if a * a + b * b + c * c + d * d == 4 * t})
    lim = 4 * t + 1e-6
    for s1, s2, s3, s4 in decomps:
        t0 = time.perf_counter()
        la = by_sum[s1][_is_canonical(half[by_sum[s1]], t)]
        lb, lc, ld = by_sum[s2], by_sum[s3], by_sum[s4]
        keys, ia, ib = [], [], []
        for a in la:
            ok = (psd[a][None, :] + psd[lb] <= lim).all(axis=1)
            keys.append(hv[a] + hv[lb[ok]])
            ia.append(np.full(int(ok.sum()), a, np.int32))
            ib.append(lb[ok].astype(np.int32))
        keys = np.concatenate(keys)
        order = np.argsort(keys)
        keys, ia, ib = keys[order], np.concatenate(ia)[order], np.concatenate(ib)[order]
        n_cd = 0
        for k, c in enumerate(lc):
            dd = ld[k:] if s3 == s4 else ld
            ok = (psd[c][None, :] + psd[dd] <= lim).all(axis=1)
            dd = dd[ok]
            n_cd += dd.size
            want = -(hv[c] + hv[dd])
            pos = np.searchsorted(keys, want)
            pos = np.minimum(pos, keys.size - 1)
            for j in np.flatnonzero(keys[pos] == want):
                q = pos[j]
                while q < keys.size and keys[q] == want[j]:
                    a, b, d = ia[q], ib[q], dd[j]
                    if not (paf[a] + paf[b] + paf[c] + paf[d]).any():
                        if verbose:
                            print(f"t={t}: row sums {(s1, s2, s3, s4)}: found after "
                                  f"{time.perf_counter() - t0:.1f} s", file=sys.stderr)
                        return half[a], half[b], half[c], half[d]
                    q += 1
        if verbose:
            print(f"t={t}: row sums {(s1, s2, s3, s4)}: none ({keys.size} AB pairs, {n_cd} CD pairs, "
                  f"{time.perf_counter() - t0:.1f} s)", file=sys.stderr)
    return None


def _williamson_matrix(halves: tuple[np.ndarray, ...], t: int) -> np.ndarray:
    """The order-4t Williamson-array matrix from four half-rows (for the self-check)."""
    idx = (np.arange(t)[None, :] - np.arange(t)[:, None]) % t
    a, b, c, d = (_full_rows(h[None, :], t)[0][idx].astype(np.int64) for h in halves)
    return np.block([[a, b, c, d], [-b, a, -d, c], [-c, d, a, -b], [-d, -c, b, a]])


def search(t: int, max_orbits: int = 14, verbose: bool = True):
    """Find a Williamson quadruple of odd order ``t``; returns four half-rows or None."""
    if t < 3 or t % 2 == 0:
        raise ValueError(f"t must be odd and >= 3, got {t}")
    for grp in _unit_subgroups(t):
        orbits = _orbits(t, grp)
        if len(orbits) > max_orbits:
            break
        t0 = time.perf_counter()
        found = _search_orbits(t, orbits)
        if verbose:
            print(f"t={t}: subgroup of order {len(grp)} ({len(orbits)} orbits): "
                  f"{'found' if found is not None else 'none'} in {time.perf_counter() - t0:.2f} s",
                  file=sys.stderr)
        if found is not None:
            h = _williamson_matrix(found, t)
            assert (h @ h.T == 4 * t * np.eye(4 * t, dtype=np.int64)).all()
            return found
    if (t - 1) // 2 > 22:  # 2^m half-rows no longer fit comfortably in memory
        return None
    found = _search_rowsums(t, verbose=verbose)
    if found is not None:
        h = _williamson_matrix(found, t)
        assert (h @ h.T == 4 * t * np.eye(4 * t, dtype=np.int64)).all()
    return found


def _fmt(half: np.ndarray) -> str:
    return "".join("+" if v > 0 else "-" for v in half)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("orders", type=int, nargs="+", help="odd orders t (Hadamard order 4t)")
    ap.add_argument("--max-orbits", type=int, default=14)
    args = ap.parse_args(argv)
    rc = 0
    for t in args.orders:
        t0 = time.perf_counter()
        found = search(t, max_orbits=args.max_orbits)
        if found is None:
            print(f"# t={t}: no quadruple found", file=sys.stderr)
            rc = 1
            continue
        print(f"    {t}: ({', '.join(repr(_fmt(h)) for h in found)}),"
              f"  # {time.perf_counter() - t0:.1f} s")
    return rc


if __name__ == "__main__":
    sys.exit(main())
