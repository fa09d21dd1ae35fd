"""The IDX format of (Fashion-)MNIST, parsed with NumPy alone (no torchvision, no network).

An IDX file is a big-endian header, ``0x00 0x00 <dtype code> <ndim>`` then ``ndim`` uint32 sizes,
followed by the array in C order. Every inconsistency raises ``IdxFormatError`` naming the file,
so a corrupt or truncated download fails loudly instead of training on garbage.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

from equiv.errors import IdxFormatError

DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_bytes(path: Path) -> bytes:
    """The file's content, decompressed when its name ends in ``.gz``."""
    if path.suffix != ".gz":
        return path.read_bytes()
    try:
        return gzip.decompress(path.read_bytes())
    except (OSError, EOFError) as err:  # bad gzip header, truncated stream, bad CRC
        raise IdxFormatError(f"{path}: not a readable gzip file ({err})") from err


def parse_idx(data: bytes, name: str = "<bytes>") -> np.ndarray:
    """The array stored in IDX ``data``; ``name`` only labels errors."""
    if len(data) < 4:
        raise IdxFormatError(f"{name}: {len(data)} bytes, too short for an IDX header")
    zero, code, ndim = int.from_bytes(data[:2], "big"), data[2], data[3]
    if zero != 0 or code not in DTYPES or ndim == 0:
        raise IdxFormatError(f"{name}: bad IDX magic number 0x{data[:4].hex()}")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise IdxFormatError(f"{name}: truncated IDX header")
    shape = tuple(int(s) for s in np.frombuffer(data, ">u4", count=ndim, offset=4))
    dtype = np.dtype(DTYPES[code])
    expected = header + int(np.prod(shape)) * dtype.itemsize
    if len(data) != expected:
        raise IdxFormatError(f"{name}: {len(data)} bytes but its header {shape} needs {expected} "
                             f"({'truncated' if len(data) < expected else 'trailing data'})")
    return np.frombuffer(data, dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def read_idx(path: Path, ndim: int | None = None) -> np.ndarray:
    """Read an IDX file (raw or ``.gz``), optionally requiring ``ndim`` dimensions."""
    array = parse_idx(read_bytes(path), str(path))
    if ndim is not None and array.ndim != ndim:
        raise IdxFormatError(f"{path}: expected {ndim} dimensions, found shape {array.shape}")
    return array


def write_idx(path: Path, array: np.ndarray) -> None:
    """Write ``array`` (uint8 or another IDX dtype) as IDX, gzip-compressed if ``.gz``.

    For tests and for converting data; the inverse of ``read_idx``.
    """
    codes = {np.dtype(v).newbyteorder("="): k for k, v in DTYPES.items()}
    dtype = array.dtype.newbyteorder("=")
    if dtype not in codes:
        raise ValueError(f"IDX cannot store dtype {array.dtype}")
    header = bytes([0, 0, codes[dtype], array.ndim]) + np.asarray(array.shape, ">u4").tobytes()
    payload = header + np.ascontiguousarray(array, dtype=DTYPES[codes[dtype]]).tobytes()
    path.write_bytes(gzip.compress(payload) if path.suffix == ".gz" else payload)
