"""Safe, atomic files: weights and full training checkpoints in safetensors.

Nothing here ever unpickles. A checkpoint is one safetensors file holding tensors (model
parameters, optimizer moments, RNG states) and, in its string metadata, JSON for everything
else (config, step, optimizer hyper-parameters, metrics, versions) plus a SHA-256 checksum of
all of it, verified on load. Files are written to a temporary file, flushed, fsynced and
renamed over the target, so a crash at any moment leaves the previous file intact."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from .errors import CheckpointError

FORMAT = "vaekit-checkpoint"
FORMAT_VERSION = 1


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Writes ``data`` to ``path`` atomically (temporary file, fsync, rename, fsync dir)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _checksum(tensors: dict[str, torch.Tensor], meta_json: str) -> str:
    h = hashlib.sha256(meta_json.encode())
    for key in sorted(tensors):
        t = tensors[key].detach().cpu().contiguous()
        h.update(key.encode())
        h.update(str(t.dtype).encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def save_tensors(path: str | Path, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    """Atomically writes ``tensors`` and JSON-serialisable ``meta`` with a checksum."""
    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    meta_json = json.dumps({"format": FORMAT, "format_version": FORMAT_VERSION, **meta})
    metadata = {"vaekit": meta_json, "sha256": _checksum(tensors, meta_json)}
    atomic_write_bytes(path, st_save(tensors, metadata=metadata))


def load_tensors(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Reads a file written by :func:`save_tensors`, verifying format, version and checksum."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: file not found")
    data = path.read_bytes()
    try:
        tensors = st_load(data)
        header_len = int.from_bytes(data[:8], "little")
        header = json.loads(data[8 : 8 + header_len])
        metadata = header.get("__metadata__") or {}
    except (SafetensorError, ValueError, json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(
            f"{path}: not a valid safetensors file (corrupt or truncated: {err}); "
            "delete it or restore a good copy"
        ) from None
    meta_json = metadata.get("vaekit")
    if meta_json is None:
        raise CheckpointError(f"{path}: not a vaekit file (no vaekit metadata)")
    if _checksum(tensors, meta_json) != metadata.get("sha256"):
        raise CheckpointError(f"{path}: checksum mismatch, the file is corrupt; restore a good copy")
    meta = json.loads(meta_json)
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a vaekit checkpoint")
    if int(meta.get("format_version", 0)) > FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: written by a newer vaekit (format {meta['format_version']} > "
            f"{FORMAT_VERSION}); upgrade vaekit to load it"
        )
    return tensors, meta


def flatten_state(state: Any, prefix: str, tensors: dict[str, torch.Tensor]) -> Any:
    """Splits a nested state (dicts, lists, tensors, numbers) into tensors stored under dotted
    keys and a JSON skeleton that references them; :func:`unflatten_state` inverts it."""
    if isinstance(state, torch.Tensor):
        tensors[prefix] = state
        return {"__tensor__": prefix}
    if isinstance(state, dict):
        return {"__dict__": [[_key(k), flatten_state(v, f"{prefix}.{k}", tensors)]
                             for k, v in state.items()]}
    if isinstance(state, (list, tuple)):
        return [flatten_state(v, f"{prefix}.{i}", tensors) for i, v in enumerate(state)]
    if state is None or isinstance(state, (bool, int, float, str)):
        return state
    raise TypeError(f"cannot store {type(state).__name__} in a checkpoint")


def _key(k: Any) -> Any:
    if isinstance(k, (int, str)):
        return k
    raise TypeError(f"cannot store key of type {type(k).__name__}")


def unflatten_state(skeleton: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(skeleton, dict):
        if "__tensor__" in skeleton:
            key = skeleton["__tensor__"]
            if key not in tensors:
                raise CheckpointError(f"checkpoint is missing tensor '{key}' (damaged or not written "
                                      "by vaekit); restore a good copy or start a new run")
            return tensors[key]
        return {k: unflatten_state(v, tensors) for k, v in skeleton["__dict__"]}
    if isinstance(skeleton, list):
        return [unflatten_state(v, tensors) for v in skeleton]
    return skeleton


def save_arrays(path: str | Path, arrays: dict[str, Any]) -> None:
    """Writes one array as ``.npy`` (``np.save``), several as an ``.npz`` archive
    (``np.savez``), atomically."""
    import io

    import numpy as np

    buffer = io.BytesIO()
    if len(arrays) == 1:
        np.save(buffer, next(iter(arrays.values())))
    else:
        np.savez(buffer, **arrays)
    atomic_write_bytes(path, buffer.getvalue())
