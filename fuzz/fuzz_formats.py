"""Fuzz target: the decoders of every format in ``quellm.formats.names()``.

The first byte picks one of two modes:

* **well-formed** (even): the next bytes pick a format, a parameter set, the number of rows, the
  length along the encoded axis and the axis; the rest is used as raw codes, scales, zero
  points and tensor scale (zero-padded when short). Every byte pattern is a legal code in
  ``formats.py``'s specification (E8M0 ``0xFF`` and E4M3 ``0x7F``/``0xFF`` are NaN, E5M2 has
  Inf/NaN codes, ``-0`` is allowed), so ``Packed.from_tensors`` and ``decode`` must succeed,
  and the result must equal an independent element-wise decode: element values from
  ``ml_dtypes`` (OCP float codes) or two's complement, times the decoded scale.
* **arbitrary** (odd): the ``format`` JSON, the codes, scales, zero points and tensor scale are
  all taken from the input (``join_parts`` framing), with fuzzed dtypes and shapes; loading and
  decoding must succeed or raise :class:`quellm.QuellmError`.

    python fuzz/fuzz_formats.py WORKDIR fuzz/corpus/formats -max_total_time=60   # atheris
    python fuzz/fuzz_formats.py --plain --max-time 60                          # no atheris
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _harness  # noqa: E402

with _harness.instrument():
    import ml_dtypes
    import numpy as np

    from quellm import formats
    from quellm.errors import QuellmError

NAMES = formats.names()
#: parameter sets tried per format (the first: defaults)
VARIANTS: dict[str, list[dict]] = {
    "int4": [{}, {"sym": False}, {"granularity": "tensor"}, {"group": 4, "sym": False}, {"group": 8, "narrow": True}],
    "int8": [{}, {"group": 4}, {"sym": False, "granularity": "tensor"}, {"sym": False, "group": 2}],
    "ovp4": [{}, {"granularity": "tensor"}],
    "ovp4_flint": [{}, {"granularity": "tensor"}],
    "ovp8": [{}, {"granularity": "tensor"}],
    "bfp": [{}, {"mantissa_bits": 6, "block": 16}, {"mantissa_bits": 8, "block": 8}, {"rounding": "rna"}],
}
_ELEM = {"e4m3": ml_dtypes.float8_e4m3fn, "e5m2": ml_dtypes.float8_e5m2, "e3m2": ml_dtypes.float6_e3m2fn,
         "e2m3": ml_dtypes.float6_e2m3fn, "e2m1": ml_dtypes.float4_e2m1fn}
_MX_ELEM = {"mxfp8_e4m3": "e4m3", "mxfp8_e5m2": "e5m2", "mxfp6_e3m2": "e3m2", "mxfp6_e2m3": "e2m3", "mxfp4": "e2m1"}


def _take(stream: bytearray, n: int) -> bytes:
    out = bytes(stream[:n])
    del stream[:n]
    return out + bytes(n - len(out))


def _unpack(codes: np.ndarray, bits: int) -> np.ndarray:
    """(rows, bytes) -> (rows, elements) codes, written independently of formats.py."""
    c = codes.astype(np.uint32)
    if bits == 8:
        return c
    if bits == 4:
        out = np.empty((c.shape[0], c.shape[1] * 2), np.uint32)
        out[:, 0::2], out[:, 1::2] = c & 0xF, c >> 4
        return out
    assert bits == 6
    w = c.reshape(c.shape[0], -1, 3)
    word = w[..., 0] | (w[..., 1] << 8) | (w[..., 2] << 16)
    return np.stack([(word >> (6 * t)) & 63 for t in range(4)], axis=-1).reshape(c.shape[0], -1)


def _same(got: np.ndarray, want: np.ndarray, what: str) -> None:
    ok = (got == want) | (np.isnan(got) & np.isnan(want))
    if not ok.all():
        i = np.argwhere(~ok)[0]
        raise AssertionError(f"{what}: decode differs from the spec at {tuple(i)}: got {got[tuple(i)]!r}, "
                             f"want {want[tuple(i)]!r}")


def _expected(name: str, fmt, codes, scales, zeros, ts, rows: int, k: int) -> np.ndarray | None:
    """The spec's value of every element, (rows, k) float32 (None where no oracle is written)."""
    info = fmt.info
    e = _unpack(codes, info.element_bits)
    blen = info.block_size or k
    per = info.scale_granularity

    def bcast(a: np.ndarray) -> np.ndarray:  # per-scale values -> (rows, k)
        a = a.reshape(-1)
        if per == "tensor":
            return np.broadcast_to(a[0], (rows, k))
        return np.repeat(a.reshape(rows, -1), blen, axis=1)

    with np.errstate(all="ignore"):
        if info.family == "int":
            b = info.element_bits
            s = bcast(scales.astype(np.float32))
            if fmt.params["sym"]:
                q = np.where(e >= 1 << (b - 1), e.astype(np.int64) - (1 << b), e).astype(np.float32)
            else:
                q = e.astype(np.float32) - bcast(zeros.astype(np.float32))
            return (q * s).astype(np.float32)
        if info.family == "mx":
            x = np.ldexp(1.0, scales.astype(np.int64) - 127)
            x = np.where(scales == 255, np.nan, x)
            if name == "mxint8":
                v = e.astype(np.uint8).view(np.int8).astype(np.float64) / 64
            else:
                v = e.astype(np.uint8).view(_ELEM[_MX_ELEM[name]]).astype(np.float64)
            return (v * bcast(x)).astype(np.float32)
        if info.family == "nvfp4":
            v = e.astype(np.uint8).view(ml_dtypes.float4_e2m1fn).astype(np.float64)
            sb = scales.view(ml_dtypes.float8_e4m3fn).astype(np.float64)
            return ((v * bcast(sb)).astype(np.float32) * ts.astype(np.float32)[0]).astype(np.float32)
        if info.family == "bfp":
            m = fmt.params["mantissa_bits"]
            mag = (e & ((1 << (m - 1)) - 1)).astype(np.float64)
            v = np.where(e >> (m - 1), -mag, mag)
            d = np.where(scales == 255, np.nan, np.ldexp(1.0, scales.astype(np.int64) - 127 + 2 - m))
            return (v * bcast(d)).astype(np.float32)
        if info.family == "ovp" and name == "ovp4":
            lo, hi = e[:, 0::2], e[:, 1::2]
            out = np.full((rows, k), np.inf, np.float32)  # inf: "no oracle" (outlier values)
            normal = lambda c: np.where(c >= 8, c.astype(np.int64) - 16, c).astype(np.float32)  # noqa: E731
            pair_normal = (lo != 8) & (hi != 8)
            s = bcast(scales.astype(np.float32))
            out[:, 0::2] = np.where(lo == 8, 0, np.where(pair_normal, normal(lo), np.inf))
            out[:, 1::2] = np.where(hi == 8, 0, np.where(pair_normal, normal(hi), np.inf))
            return np.where(np.isinf(out), np.inf, out * s).astype(np.float32)
    return None


def check_well_formed(data: bytes) -> None:
    h = data[1:7].ljust(6, b"\0")
    stream = bytearray(data[7:])
    name = NAMES[h[0] % len(NAMES)]
    variants = VARIANTS.get(name, [{}])
    fmt = formats.get(name, **variants[h[1] % len(variants)])
    info = fmt.info
    rows = 1 + h[2] % 4
    k = (1 + h[3] % 4) * info.align
    axis = h[4] & 1
    shape = (rows, k) if axis == 1 else (k, rows)
    n_scales = {"tensor": 1, "row": rows, "block": rows * k // (info.block_size or k)}[info.scale_granularity]
    sshape = (1, 1) if info.scale_granularity == "tensor" else (rows, n_scales // rows)
    codes = np.frombuffer(_take(stream, rows * k * info.element_bits // 8), np.uint8).reshape(rows, -1)
    if info.scale_dtype == "f32":
        scales = np.frombuffer(_take(stream, 4 * n_scales), "<f4").reshape(sshape)
    else:
        scales = np.frombuffer(_take(stream, n_scales), np.uint8).reshape(sshape)
    zeros = np.frombuffer(_take(stream, 4 * n_scales), "<f4").reshape(sshape) if info.zero_point else None
    ts = np.frombuffer(_take(stream, 4), "<f4").copy() if info.tensor_scale else None
    meta = json.dumps({"quellm_packed": 1, "format": name, "params": fmt.params, "shape": list(shape), "axis": axis})
    t = {"format": np.frombuffer(meta.encode(), np.uint8), "codes": codes, "scales": scales}
    if zeros is not None:
        t["zeros"] = zeros
    if ts is not None:
        t["tensor_scale"] = ts
    try:
        p = formats.Packed.from_tensors(t, "")
        out = p.decode()
    except QuellmError as e:
        raise AssertionError(f"{name} {fmt.params}: a well-formed packed tensor was rejected: {e}") from e
    assert out.dtype == np.float32 and out.shape == shape, (out.dtype, out.shape, shape)
    got = np.moveaxis(out, axis, -1).reshape(rows, k)
    want = _expected(name, fmt, codes, scales, zeros, ts, rows, k)
    if want is not None:
        known = ~np.isinf(want) | (name != "ovp4")
        _same(np.where(known, got, 0), np.where(known, want, 0), f"{name} {fmt.params}")


_SCALE_DTYPES = (np.float32, np.uint8, np.float64, np.int8)


def check_arbitrary(data: bytes) -> None:
    h = data[1:5].ljust(4, b"\0")
    meta, codes_b, scales_b, zeros_b, ts_b = _harness.split_parts(data[5:], 5)

    def arr(b: bytes, dtype, cols: int) -> np.ndarray:
        a = np.frombuffer(b[: len(b) - len(b) % np.dtype(dtype).itemsize], dtype)
        cols = max(1, cols)
        return a[: a.size - a.size % cols].reshape(-1, cols) if cols > 1 else a.reshape(-1, 1)

    t = {"format": np.frombuffer(meta, np.uint8),
         "codes": arr(codes_b, np.uint8, 1 + h[0] % 64),
         "scales": arr(scales_b, _SCALE_DTYPES[h[1] % 4], 1 + h[2] % 16)}
    if h[3] & 1:
        t["zeros"] = arr(zeros_b, np.float32, 1 + h[2] % 16)
    if h[3] & 2:
        t["tensor_scale"] = np.frombuffer(ts_b[: len(ts_b) - len(ts_b) % 4], np.float32)
    if h[3] & 4:
        t["codes"] = t["codes"].reshape(-1)  # a 1-D codes array
    p = formats.Packed.from_tensors(t, "")
    out = p.decode()
    assert out.shape == tuple(p.shape) and out.dtype == np.float32, (out.shape, p.shape, out.dtype)


def check(data: bytes) -> None:
    if not data:
        return
    (check_arbitrary if data[0] & 1 else check_well_formed)(data)


if __name__ == "__main__":
    _harness.main(check, "formats")
