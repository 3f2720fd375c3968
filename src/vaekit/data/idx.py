"""LeCun's IDX format (MNIST, Fashion-MNIST), read from plain or gzip-compressed files."""

from __future__ import annotations

import gzip
import struct
import zlib
from pathlib import Path

import numpy as np

from ..errors import DataError

# ------------------------------------------------------------------------------------------
# IDX files (MNIST, Fashion-MNIST)

IDX_IMAGES_MAGIC = 0x00000803  # unsigned bytes, 3 dimensions
IDX_LABELS_MAGIC = 0x00000801  # unsigned bytes, 1 dimension


def parse_idx(data: bytes, name: str, expected_magic: int | None = None) -> np.ndarray:
    """Decodes uncompressed IDX bytes (LeCun's format: a big-endian magic number 0x000008NN,
    where NN is the number of dimensions, NN big-endian uint32 sizes, then uint8 values) into a
    uint8 array of that shape. ``name`` names the file in error messages."""
    if len(data) < 4:
        raise DataError(f"{name}: only {len(data)} bytes, too short for an IDX header "
                        "(re-download it or delete it so vaekit downloads it again)")
    (magic,) = struct.unpack(">I", data[:4])
    num_dims = magic & 0xFF
    if expected_magic is not None and magic != expected_magic:
        raise DataError(f"{name}: IDX magic number 0x{magic:08x}, expected 0x{expected_magic:08x} "
                        "(wrong or corrupt file; re-download it)")
    if magic >> 8 != 0x08 or num_dims == 0:
        raise DataError(f"{name}: IDX magic number 0x{magic:08x} is not that of an unsigned-byte "
                        "IDX file (wrong or corrupt file; re-download it)")
    header_size = 4 + 4 * num_dims
    if len(data) < header_size:
        raise DataError(f"{name}: truncated IDX header ({len(data)} bytes, {header_size} needed; "
                        "re-download it)")
    dims = struct.unpack(f">{num_dims}I", data[4:header_size])
    expected_size = int(np.prod(dims, dtype=object))
    actual_size = len(data) - header_size
    if actual_size != expected_size:
        shape = "x".join(map(str, dims))
        raise DataError(f"{name}: the IDX header says {shape} = {expected_size} values but the "
                        f"file holds {actual_size} (truncated or corrupt; re-download it)")
    if expected_size == 0:
        raise DataError(f"{name}: the IDX file holds no examples (shape {dims}); re-download it")
    return np.frombuffer(data, dtype=np.uint8, offset=header_size).reshape(dims)


def read_idx(path: str | Path, expected_magic: int | None = None) -> np.ndarray:
    """Reads an IDX file (gzip-compressed when its name ends in .gz) into a uint8 array; see
    :func:`parse_idx`."""
    path = Path(path)
    return parse_idx(decompressed(read_bytes(path), path), path.name, expected_magic)


def read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as error:
        raise DataError(f"{path}: cannot read it ({error.strerror or error}); check the path "
                        "and its permissions") from error


def decompressed(data: bytes, path: Path) -> bytes:
    if path.suffix != ".gz":
        return data
    try:
        return gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as error:
        raise DataError(f"{path.name}: not a gzip file or truncated ({error}); re-download it or "
                        "delete it so vaekit downloads it again") from error
