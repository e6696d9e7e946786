"""Reading and writing Hugging Face checkpoint directories.

A checkpoint directory holds ``config.json``, the weights as ``model.safetensors`` or as shards
listed by ``model.safetensors.index.json``, and usually ``tokenizer.json``. Every safetensors
file is validated by the ``safetensors`` library when it is opened (header, offsets, file
length); tensors are then memory-mapped read-only and materialised only when asked for, so
opening a checkpoint costs no more than reading its headers and a user's files are never
modified.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import struct
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ml_dtypes
import numpy as np
from safetensors import SafetensorError, safe_open
from safetensors.numpy import save_file

from ..errors import CheckpointError
from .config import ModelConfig, check_layer_count, read_config

__all__ = ["Checkpoint", "TensorInfo", "load_checkpoint", "save_checkpoint", "DTYPES"]

WEIGHTS_NAME = "model.safetensors"
INDEX_NAME = "model.safetensors.index.json"
CONFIG_NAME = "config.json"
TOKENIZER_NAME = "tokenizer.json"

#: safetensors dtype name -> numpy dtype (bf16 and fp8 through ml_dtypes).
DTYPES: dict[str, np.dtype] = {
    "F64": np.dtype(np.float64),
    "F32": np.dtype(np.float32),
    "F16": np.dtype(np.float16),
    "BF16": np.dtype(ml_dtypes.bfloat16),
    "F8_E4M3": np.dtype(ml_dtypes.float8_e4m3fn),
    "F8_E5M2": np.dtype(ml_dtypes.float8_e5m2),
    "I64": np.dtype(np.int64),
    "I32": np.dtype(np.int32),
    "I16": np.dtype(np.int16),
    "I8": np.dtype(np.int8),
    "U64": np.dtype(np.uint64),
    "U32": np.dtype(np.uint32),
    "U16": np.dtype(np.uint16),
    "U8": np.dtype(np.uint8),
    "BOOL": np.dtype(np.bool_),
}
_FLOAT_DTYPES = ("F32", "F16", "BF16", "F64")


@dataclass(frozen=True)
class TensorInfo:
    """Where a tensor lives and what it is, read from its file's header."""

    name: str
    dtype: str  # safetensors name: "F32", "BF16", ...
    shape: tuple[int, ...]
    file: Path
    offset: int  # byte offset of the data from the start of the file
    nbytes: int


def _read_safetensors(path: Path) -> tuple[dict[str, TensorInfo], dict[str, str]]:
    """Validate ``path`` with the safetensors library, then return its tensor table.

    The library checks the header (JSON, dtypes, offsets covering the data exactly, the file
    length); the offsets are then taken from the header it has accepted.
    """
    try:
        with safe_open(str(path), framework="numpy") as f:
            metadata = f.metadata() or {}
            keys = list(f.keys())
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{path}: not a valid safetensors file: {e}") from None
    try:
        with open(path, "rb") as fh:
            (n,) = struct.unpack("<Q", fh.read(8))
            header = json.loads(fh.read(n))
    except (OSError, struct.error, json.JSONDecodeError, UnicodeDecodeError) as e:  # pragma: no cover - safe_open accepted it
        raise CheckpointError(f"{path}: cannot read safetensors header: {e}") from None
    table: dict[str, TensorInfo] = {}
    for name in keys:
        entry = header[name]
        dtype = entry["dtype"]
        if dtype not in DTYPES:
            raise CheckpointError(f"{path}: tensor {name!r} has dtype {dtype}, which quellm cannot read")
        begin, end = entry["data_offsets"]
        table[name] = TensorInfo(name, dtype, tuple(int(s) for s in entry["shape"]), path, 8 + n + begin, end - begin)
    return table, metadata


class Checkpoint(Mapping[str, np.ndarray]):
    """A checkpoint directory opened for reading: the typed config and lazily loaded tensors.

    ``ckpt[name]`` returns a read-only numpy view memory-mapped from the file, in the stored
    dtype (bf16 as ``ml_dtypes.bfloat16``); :meth:`get` converts. Iterating yields tensor names.

    Example::

        ckpt = quellm.load_checkpoint("./SmolLM2-135M")
        ckpt.config.hidden_size                      # 576
        w = ckpt.get("model.norm.weight", np.float32)
    """

    def __init__(self, path: Path, config: ModelConfig, raw_config: dict[str, Any],
                 tensors: dict[str, TensorInfo], metadata: dict[str, str]):
        self.path = path
        self.config = config
        self.raw_config = raw_config
        self.metadata = metadata
        self._tensors = tensors
        self._maps: dict[Path, np.memmap] = {}

    # -- Mapping -----------------------------------------------------------------------------
    def __getitem__(self, name: str) -> np.ndarray:
        info = self._tensors.get(name)
        if info is None:
            raise KeyError(name)
        mm = self._maps.get(info.file)
        if mm is None:
            try:
                mm = np.memmap(info.file, dtype=np.uint8, mode="r")
            except (OSError, ValueError) as e:
                raise CheckpointError(f"{info.file}: cannot map tensor {name!r}: {e}") from None
            self._maps[info.file] = mm
        if info.offset + info.nbytes > mm.shape[0]:
            raise CheckpointError(f"{info.file}: tensor {name!r} lies past the end of the file (was it truncated after opening?)")
        raw = mm[info.offset: info.offset + info.nbytes]
        arr = np.ndarray(info.shape, dtype=DTYPES[info.dtype], buffer=raw)
        arr.flags.writeable = False
        return arr

    def __iter__(self) -> Iterator[str]:
        return iter(self._tensors)

    def __len__(self) -> int:
        return len(self._tensors)

    # -- extras -------------------------------------------------------------------------------
    def info(self, name: str) -> TensorInfo:
        """Dtype, shape, file and size of one tensor, without reading its data."""
        try:
            return self._tensors[name]
        except KeyError:
            raise CheckpointError(f"{self.path}: no tensor named {name!r}") from None

    def get(self, name: str, dtype: Any = None) -> np.ndarray:  # type: ignore[override]
        """Tensor ``name``; with ``dtype`` (e.g. ``np.float32``) a converted copy.

        Raises:
            CheckpointError: the checkpoint has no such tensor.
        """
        if name not in self._tensors:
            raise CheckpointError(f"{self.path}: no tensor named {name!r}")
        arr = self[name]
        return arr if dtype is None else arr.astype(dtype)

    @property
    def tokenizer_path(self) -> Path | None:
        """``tokenizer.json`` in the directory, if there is one."""
        p = self.path / TOKENIZER_NAME
        return p if p.is_file() else None

    @property
    def files(self) -> list[Path]:
        return sorted({t.file for t in self._tensors.values()})

    def nbytes_on_disk(self) -> int:
        return sum(f.stat().st_size for f in self.files)

    def dtype_counts(self) -> dict[str, int]:
        """Number of parameters per stored dtype."""
        out: dict[str, int] = {}
        for t in self._tensors.values():
            out[t.dtype] = out.get(t.dtype, 0) + math.prod(t.shape)
        return out

    def close(self) -> None:
        """Drop the memory maps (arrays already returned keep theirs alive)."""
        self._maps.clear()

    def __enter__(self) -> "Checkpoint":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Checkpoint({str(self.path)!r}, {self.config.architecture}, {len(self)} tensors)"


def _weight_files(path: Path) -> list[Path]:
    index = path / INDEX_NAME
    single = path / WEIGHTS_NAME
    if index.is_file():
        try:
            data = json.loads(index.read_text(encoding="utf-8"))
            weight_map = data["weight_map"]
            if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
                raise TypeError("'weight_map' must map tensor names to file names")
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, RecursionError) as e:
            raise CheckpointError(f"{index}: invalid sharded index: {e}") from None
        files = []
        for shard in dict.fromkeys(weight_map.values()):
            p = path / shard
            if Path(shard).is_absolute() or ".." in Path(shard).parts:
                raise CheckpointError(f"{index}: shard name {shard!r} points outside the checkpoint directory")
            if not p.is_file():
                raise CheckpointError(f"{index}: shard {shard!r} listed in the index is missing")
            files.append(p)
        return files
    if single.is_file():
        return [single]
    found = sorted(path.glob("*.safetensors"))
    if len(found) == 1:
        return found
    raise CheckpointError(f"{path}: no {WEIGHTS_NAME} or {INDEX_NAME} found")


def load_checkpoint(path: str | os.PathLike[str], *, validate: bool = True) -> Checkpoint:
    """Open a Hugging Face checkpoint directory.

    Args:
        path: directory with ``config.json`` and ``model.safetensors`` (or a sharded
            ``model.safetensors.index.json``).
        validate: check that every tensor the architecture needs is present with the shape the
            config implies (only headers are read).

    Returns:
        A :class:`Checkpoint`; tensors are read lazily.

    Raises:
        CheckpointError: a missing or malformed file, an unsupported architecture, a missing
            tensor, a shape that disagrees with the config, a tensor in two shards. The message
            names the file and the tensor.
    """
    path = Path(path)
    if not path.is_dir():
        raise CheckpointError(f"{path}: not a directory (expected a Hugging Face checkpoint directory)")
    config, raw = read_config(path / CONFIG_NAME)
    tensors: dict[str, TensorInfo] = {}
    metadata: dict[str, str] = {}
    for f in _weight_files(path):
        table, meta = _read_safetensors(f)
        metadata.update(meta)
        for name, info in table.items():
            if name in tensors:
                raise CheckpointError(f"{f}: tensor {name!r} also appears in {tensors[name].file.name}")
            tensors[name] = info
    ckpt = Checkpoint(path, config, raw, tensors, metadata)
    if validate:
        _validate(ckpt)
    return ckpt


def _validate(ckpt: Checkpoint) -> None:
    check_layer_count(ckpt.config, len(ckpt), str(ckpt.path / CONFIG_NAME))
    required, optional = ckpt.config.tensor_shapes()
    for name, shape in {**required, **optional}.items():
        info = ckpt._tensors.get(name)
        if info is None:
            if name in required:
                raise CheckpointError(f"{ckpt.path}: tensor {name!r} required by {ckpt.config.architecture} is missing")
            continue
        if info.shape != shape:
            raise CheckpointError(
                f"{info.file}: tensor {name!r} has shape {list(info.shape)} but config.json implies {list(shape)}"
            )
        if info.dtype not in _FLOAT_DTYPES:
            raise CheckpointError(f"{info.file}: tensor {name!r} has dtype {info.dtype}; expected one of {', '.join(_FLOAT_DTYPES)}")


# ---- writing ----------------------------------------------------------------------------------

def _config_dict(config: ModelConfig | Mapping[str, Any]) -> dict[str, Any]:
    if isinstance(config, Mapping):
        return dict(config)
    raw = getattr(config, "raw", None)
    if not raw:
        raise CheckpointError("save_checkpoint: config has no raw config.json dictionary; pass a dict")
    return dict(raw)


def _shard(tensors: Mapping[str, np.ndarray], max_shard_bytes: int | None) -> list[dict[str, np.ndarray]]:
    if not max_shard_bytes:
        return [dict(tensors)]
    shards: list[dict[str, np.ndarray]] = [{}]
    size = 0
    for name, t in tensors.items():
        if shards[-1] and size + t.nbytes > max_shard_bytes:
            shards.append({})
            size = 0
        shards[-1][name] = t
        size += t.nbytes
    return shards


def save_checkpoint(
    directory: str | os.PathLike[str],
    config: ModelConfig | Mapping[str, Any],
    tensors: Mapping[str, np.ndarray],
    extra_json: Mapping[str, Any] | None = None,
    *,
    extra_files: Mapping[str, str | os.PathLike[str] | bytes] | None = None,
    overwrite: bool = False,
    max_shard_bytes: int | None = None,
    metadata: Mapping[str, str] | None = None,
) -> Path:
    """Write a checkpoint directory atomically.

    Everything is written into a temporary directory beside ``directory`` and renamed into
    place at the end, so a failure leaves nothing behind and readers never see a half-written
    checkpoint.

    Args:
        directory: where to write; must not exist unless ``overwrite``.
        config: the ``config.json`` content (a dict, or a parsed config carrying its raw dict).
        tensors: name -> numpy array (f32/f16/bf16 and the integer dtypes of packed formats).
        extra_json: file name -> JSON-serialisable object (e.g. ``{"quellm.json": recipe}``).
        extra_files: file name -> bytes or a path to copy (e.g. ``tokenizer.json``).
        overwrite: replace an existing directory.
        max_shard_bytes: split the weights into shards of at most this many bytes (a tensor
            larger than that gets a shard of its own) with a ``model.safetensors.index.json``.
        metadata: string pairs for the safetensors header (``format: pt`` by default).

    Returns:
        The directory's path.
    """
    dest = Path(directory)
    if dest.exists() and not overwrite:
        raise CheckpointError(f"{dest}: already exists (pass overwrite=True to replace it)")
    if dest.exists() and not dest.is_dir():
        raise CheckpointError(f"{dest}: exists and is not a directory")
    arrays: dict[str, np.ndarray] = {}
    for name, t in tensors.items():
        a = np.asarray(t)
        if a.dtype not in DTYPES.values():
            raise CheckpointError(f"save_checkpoint: tensor {name!r} has dtype {a.dtype}, which safetensors cannot store")
        arrays[name] = np.ascontiguousarray(a)
    names = set(extra_json or {}) | set(extra_files or {})
    for reserved in (CONFIG_NAME, WEIGHTS_NAME, INDEX_NAME):
        if reserved in names:
            raise CheckpointError(f"save_checkpoint: {reserved} is written by quellm; do not pass it as an extra file")
    for n in names:
        if Path(n).name != n:
            raise CheckpointError(f"save_checkpoint: extra file name {n!r} must be a plain file name")

    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.tmp-", dir=dest.parent))
    try:
        (tmp / CONFIG_NAME).write_text(json.dumps(_config_dict(config), indent=2, sort_keys=True) + "\n", encoding="utf-8")
        meta = {"format": "pt", **dict(metadata or {})}
        shards = _shard(arrays, max_shard_bytes)
        if len(shards) == 1:
            save_file(shards[0], str(tmp / WEIGHTS_NAME), metadata=meta)
        else:
            weight_map = {}
            for i, shard in enumerate(shards, 1):
                fname = f"model-{i:05d}-of-{len(shards):05d}.safetensors"
                save_file(shard, str(tmp / fname), metadata=meta)
                weight_map.update({name: fname for name in shard})
            index = {"metadata": {"total_size": sum(a.nbytes for a in arrays.values())}, "weight_map": weight_map}
            (tmp / INDEX_NAME).write_text(json.dumps(index, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        for fname, obj in (extra_json or {}).items():
            (tmp / fname).write_text(json.dumps(obj, indent=2) + "\n", encoding="utf-8")
        for fname, src in (extra_files or {}).items():
            if isinstance(src, bytes):
                (tmp / fname).write_bytes(src)
            else:
                shutil.copyfile(src, tmp / fname)
        os.chmod(tmp, 0o755)
        if dest.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{dest.name}.old-", dir=dest.parent))
            os.rename(dest, old / dest.name)
            try:
                os.rename(tmp, dest)
            except OSError:
                os.rename(old / dest.name, dest)  # put the original back
                raise
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest
