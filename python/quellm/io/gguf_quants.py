"""Decoding ggml's tensor types (the block formats of GGUF files) to float32.

:func:`dequantize` uses ``gguf.quants.dequantize`` from the ``gguf`` package when it is there
(every type it knows). quellm's own vectorised numpy decoders below cover F32, F16, BF16, F64,
Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K and Q6_K; they are the fallback for ``gguf`` versions
without ``gguf.quants.dequantize`` and, in the tests, an independent check of it (bit-exact).
Each block layout is written down next to its decoder.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

__all__ = ["NUMPY_TYPES", "dequantize"]


def _gguf() -> Any:
    try:
        import gguf
    except ImportError:
        raise ImportError("reading GGUF files needs the 'gguf' package: pip install 'quellm[gguf]'") from None
    return gguf


# numpy versions of ggml's block formats, used when the installed gguf package has no
# gguf.quants.dequantize (and, in the tests, to check that it decodes what we expect).
# Each takes the blocks as uint8 [n_blocks, type_size] and returns float32 [n_blocks, block_size].

def _half(blocks: np.ndarray, at: int) -> np.ndarray:
    """The little-endian f16 at byte ``at`` of each block, as float32 [n, 1]."""
    return np.ascontiguousarray(blocks[:, at:at + 2]).view("<f2").astype(np.float32)


def _nibbles(qs: np.ndarray) -> np.ndarray:
    """[n, k] bytes -> [n, 2k]: the k low nibbles, then the k high nibbles."""
    return np.concatenate([qs & 0x0F, qs >> 4], axis=-1)


def _dequant_q8_0(b: np.ndarray) -> np.ndarray:
    # block_q8_0 (34 bytes, 32 weights): f16 d, int8 q[32];  x = d * q
    return _half(b, 0) * b[:, 2:].view(np.int8).astype(np.float32)


def _dequant_q4_0(b: np.ndarray) -> np.ndarray:
    # block_q4_0 (18 bytes, 32 weights): f16 d, qs[16]; weight j in the low nibble of byte j,
    # weight j+16 in its high nibble;  x = d * (q - 8)
    return _half(b, 0) * (_nibbles(b[:, 2:]).astype(np.float32) - 8.0)


def _dequant_q4_1(b: np.ndarray) -> np.ndarray:
    # block_q4_1 (20 bytes, 32 weights): f16 d, f16 m, qs[16] (nibbles as q4_0);  x = d * q + m
    return _half(b, 0) * _nibbles(b[:, 4:]).astype(np.float32) + _half(b, 2)


def _high_bits(qh: np.ndarray, n: int) -> np.ndarray:
    """[blocks, bytes] little-endian bit field -> [blocks, n] bits (bit i of the field)."""
    return np.unpackbits(np.ascontiguousarray(qh), axis=-1, bitorder="little")[:, :n]


def _dequant_q5_0(b: np.ndarray) -> np.ndarray:
    # block_q5_0 (22 bytes, 32 weights): f16 d, u32 qh (bit i = 5th bit of weight i), qs[16]
    # (nibbles as q4_0);  x = d * (q - 16)
    q = _nibbles(b[:, 6:]) | (_high_bits(b[:, 2:6], 32) << 4)
    return _half(b, 0) * (q.astype(np.float32) - 16.0)


def _dequant_q5_1(b: np.ndarray) -> np.ndarray:
    # block_q5_1 (24 bytes, 32 weights): f16 d, f16 m, u32 qh, qs[16];  x = d * q + m
    q = _nibbles(b[:, 8:]) | (_high_bits(b[:, 4:8], 32) << 4)
    return _half(b, 0) * q.astype(np.float32) + _half(b, 2)


def _k_scales(s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The eight 6-bit (scale, min) pairs of a q4_K/q5_K super-block, from its 12 bytes.

    Sub-blocks 0..3: scale = s[j] & 63, min = s[j+4] & 63. Sub-blocks 4..7: the low 4 bits
    come from s[j+4] (scale: low nibble, min: high nibble), the top 2 bits from the top bits of
    s[j-4] (scale) and s[j] (min).
    """
    s = s.astype(np.uint8)
    lo_sc, lo_m = s[:, 0:4] & 63, s[:, 4:8] & 63
    hi_sc = (s[:, 8:12] & 0x0F) | ((s[:, 0:4] >> 6) << 4)
    hi_m = (s[:, 8:12] >> 4) | ((s[:, 4:8] >> 6) << 4)
    return (np.concatenate([lo_sc, hi_sc], axis=-1).astype(np.float32),
            np.concatenate([lo_m, hi_m], axis=-1).astype(np.float32))


def _dequant_q4_k(b: np.ndarray) -> np.ndarray:
    # block_q4_K (144 bytes, 256 weights): f16 d, f16 dmin, scales[12], qs[128]. Eight
    # sub-blocks of 32; bytes qs[32c : 32c+32] hold sub-block 2c in their low nibbles and 2c+1 in
    # their high nibbles;  x = d * scale[s] * q - dmin * min[s]
    n = b.shape[0]
    sc, m = _k_scales(b[:, 4:16])
    qs = b[:, 16:].reshape(n, 4, 32)
    q = np.stack([qs & 0x0F, qs >> 4], axis=2).reshape(n, 8, 32).astype(np.float32)
    d, dmin = _half(b, 0), _half(b, 2)
    return ((d * sc)[:, :, None] * q - (dmin * m)[:, :, None]).reshape(n, 256)


def _dequant_q5_k(b: np.ndarray) -> np.ndarray:
    # block_q5_K (176 bytes, 256 weights): f16 d, f16 dmin, scales[12], qh[32], qs[128]; as q4_K
    # plus a 5th bit: bit s of qh[l] for weight l of sub-block s
    n = b.shape[0]
    sc, m = _k_scales(b[:, 4:16])
    qs = b[:, 48:].reshape(n, 4, 32)
    q = np.stack([qs & 0x0F, qs >> 4], axis=2).reshape(n, 8, 32)
    hbit = np.unpackbits(b[:, 16:48][:, None, :], axis=1, count=8, bitorder="little")  # [n, 8, 32]
    q = (q | (hbit << 4)).astype(np.float32)
    d, dmin = _half(b, 0), _half(b, 2)
    return ((d * sc)[:, :, None] * q - (dmin * m)[:, :, None]).reshape(n, 256)


def _dequant_q6_k(b: np.ndarray) -> np.ndarray:
    # block_q6_K (210 bytes, 256 weights): ql[128], qh[64], int8 scales[16], f16 d. Two halves of
    # 128 weights; in half h, for l < 32: weights l, l+32, l+64, l+96 take the low nibble of
    # ql[l], low of ql[l+32], high of ql[l], high of ql[l+32], and bits 0-1, 2-3, 4-5, 6-7 of
    # qh[l] as their top two bits; x = d * scale[16-weight group] * (q - 32)
    n = b.shape[0]
    ql = b[:, 0:128].reshape(n, 2, 2, 32)  # [n, half, which 32 bytes, l]
    qh = b[:, 128:192].reshape(n, 2, 1, 32)
    low = np.stack([ql[:, :, 0] & 0x0F, ql[:, :, 1] & 0x0F, ql[:, :, 0] >> 4, ql[:, :, 1] >> 4], axis=2)  # [n,2,4,32]
    high = (qh >> np.array([0, 2, 4, 6], np.uint8)[None, None, :, None]) & 3
    q = (low | (high << 4)).astype(np.float32) - 32.0
    sc = b[:, 192:208].view(np.int8).astype(np.float32).reshape(n, 2, 4, 2, 1)
    d = _half(b, 208).reshape(n, 1, 1, 1, 1)
    return (d * sc * q.reshape(n, 2, 4, 2, 16)).reshape(n, 256)


def _dequant_bf16(b: np.ndarray) -> np.ndarray:
    return (np.ascontiguousarray(b).view("<u2").astype(np.uint32) << 16).view(np.float32)


def _dequant_f16(b: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(b).view("<f2").astype(np.float32)


def _dequant_f32(b: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(b).view("<f4").copy()


def _dequant_f64(b: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(b).view("<f8").astype(np.float32)


# type name -> (weights per block, bytes per block, decoder)
_NUMPY_DEQUANT: dict[str, tuple[int, int, Callable[[np.ndarray], np.ndarray]]] = {
    "F32": (1, 4, _dequant_f32),
    "F16": (1, 2, _dequant_f16),
    "BF16": (1, 2, _dequant_bf16),
    "F64": (1, 8, _dequant_f64),
    "Q8_0": (32, 34, _dequant_q8_0),
    "Q4_0": (32, 18, _dequant_q4_0),
    "Q4_1": (32, 20, _dequant_q4_1),
    "Q5_0": (32, 22, _dequant_q5_0),
    "Q5_1": (32, 24, _dequant_q5_1),
    "Q4_K": (256, 144, _dequant_q4_k),
    "Q5_K": (256, 176, _dequant_q5_k),
    "Q6_K": (256, 210, _dequant_q6_k),
}
_INTEGER_TYPES = ("I8", "I16", "I32", "I64")
#: The ggml types quellm's numpy decoders handle without the gguf package's help.
NUMPY_TYPES = tuple(_NUMPY_DEQUANT)


def dequantize(raw: np.ndarray, type_name: str, n_elements: int, *, use_gguf: bool = True) -> np.ndarray:
    """Decode ``n_elements`` weights of ggml type ``type_name`` (``"Q4_K"``, ...) from ``raw``.

    Args:
        raw: the tensor's data as the file stores it (any dtype; its bytes are used).
        type_name: a ``gguf.GGMLQuantizationType`` name.
        n_elements: number of weights.
        use_gguf: decode with ``gguf.quants.dequantize`` when the installed ``gguf`` has it
            (every ggml type it knows); otherwise, or with ``use_gguf=False``, with quellm's
            own numpy decoders (F32, F16, BF16, F64, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K,
            Q6_K).

    Returns:
        float32 [n_elements], a new array.

    Raises:
        ValueError: an unsupported type or a byte count that does not fit the type.
    """
    # Inf/NaN scales in a (corrupt) file decode to Inf/NaN weights, silently, like every decoder
    with np.errstate(over="ignore", invalid="ignore"):
        return _dequantize(raw, type_name, n_elements, use_gguf)


def _dequantize(raw: np.ndarray, type_name: str, n_elements: int, use_gguf: bool) -> np.ndarray:
    buf = np.ascontiguousarray(raw).reshape(-1).view(np.uint8)
    if type_name in _INTEGER_TYPES:
        raise ValueError(f"tensor type {type_name} holds integers, not weights")
    if use_gguf:
        gguf = _gguf()
        quants = getattr(gguf, "quants", None)
        gq = getattr(quants, "dequantize", None)
        qtype = getattr(gguf.GGMLQuantizationType, type_name, None)
        if gq is not None and qtype is not None and qtype in gguf.GGML_QUANT_SIZES:
            block, size = gguf.GGML_QUANT_SIZES[qtype]
            if n_elements % block or buf.size != n_elements // block * size:
                raise ValueError(f"{buf.size} bytes do not hold {n_elements} weights of type {type_name}")
            if qtype in (gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.F16):
                buf = buf.view(np.float32 if qtype == gguf.GGMLQuantizationType.F32 else np.float16)
            try:
                out = gq(buf.reshape(1, -1), qtype)
            except NotImplementedError:
                pass  # try our own decoders
            else:
                return np.array(out, dtype=np.float32).reshape(-1)
    spec = _NUMPY_DEQUANT.get(type_name)
    if spec is None:
        raise ValueError(f"tensor type {type_name} is not supported (quellm decodes "
                         f"{', '.join(_NUMPY_DEQUANT)} and whatever gguf.quants can)")
    block, size, fn = spec
    if n_elements % block or buf.size != n_elements // block * size:
        raise ValueError(f"{buf.size} bytes do not hold {n_elements} weights of type {type_name}")
    return fn(buf.reshape(-1, size)).reshape(-1).astype(np.float32, copy=False)
