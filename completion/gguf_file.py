"""Read a GGUF file's metadata and tensor table, and map its tensors without copying them.

Only what loading needs: scalar metadata, string arrays on request (the vocabulary), and
each tensor's name, shape, ggml type and bytes as a read-only memory map. gguf-py's reader
builds a numpy view per string (~20 s for a 150k-token vocabulary on 2 cores); this walks
the same bytes with `struct` in well under a second.
"""

from __future__ import annotations

import struct
from collections.abc import Container
from dataclasses import dataclass
from math import prod
from pathlib import Path

import numpy as np

from kernels.gguf_blocks import FORMATS_BY_ID

# GGUF metadata value types: fixed-width scalars (struct format), 8 = string, 9 = array.
_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_STRING, _ARRAY = 8, 9
DEFAULT_ALIGNMENT = 32


class GGUFError(ValueError):
    """Not a GGUF file this reader understands (with the reason)."""


@dataclass(frozen=True)
class GGUFTensor:
    name: str
    shape: tuple[int, ...]  # torch order: (out_features, in_features) for a weight matrix
    type_id: int  # ggml type
    data: np.ndarray  # uint8 memory map of the tensor's bytes

    @property
    def format_name(self) -> str:
        fmt = FORMATS_BY_ID.get(self.type_id)
        return fmt.name if fmt else f"ggml type {self.type_id}"


@dataclass(frozen=True)
class GGUFFile:
    path: Path
    metadata: dict
    tensors: dict[str, GGUFTensor]

    @property
    def architecture(self) -> str:
        return self.metadata["general.architecture"]


def read_gguf(path: Path | str, string_arrays: Container[str] = ()) -> GGUFFile:
    """Parse `path`; string arrays named in `string_arrays` are read, other arrays of strings
    are recorded as their length."""
    path = Path(path)
    blob = np.memmap(path, mode="r", dtype=np.uint8)
    try:
        if bytes(blob[:4]) != b"GGUF":
            raise GGUFError(f"{path} is not a GGUF file (no GGUF magic)")
        version, tensor_count, kv_count = struct.unpack_from("<IQQ", blob, 4)
        if version not in (2, 3):
            raise GGUFError(f"{path} is GGUF version {version}; versions 2 and 3 are supported")
        reader = _Reader(blob)
        reader.pos = 24
        metadata = {}
        for _ in range(kv_count):
            key = reader.string()
            metadata[key] = reader.value(reader.unpack("<I"), key in string_arrays)
        table = []
        for _ in range(tensor_count):
            name = reader.string()
            dims = [reader.unpack("<Q") for _ in range(reader.unpack("<I"))]
            table.append((name, tuple(reversed(dims)), reader.unpack("<I"), reader.unpack("<Q")))
    except (struct.error, UnicodeDecodeError, IndexError) as error:
        raise GGUFError(f"{path}: truncated or malformed GGUF header ({error})") from error
    alignment = int(metadata.get("general.alignment", DEFAULT_ALIGNMENT))
    data_start = -(-reader.pos // alignment) * alignment
    tensors = {}
    for name, shape, type_id, offset in table:
        size = _byte_size(type_id, shape, name)
        start = data_start + offset
        if start + size > len(blob):
            raise GGUFError(f"{path}: tensor {name} lies past the end of the file (truncated?)")
        tensors[name] = GGUFTensor(name, shape, type_id, blob[start:start + size])
    if "general.architecture" not in metadata:
        raise GGUFError(f"{path} names no general.architecture")
    return GGUFFile(path, metadata, tensors)


def _byte_size(type_id: int, shape: tuple[int, ...], name: str) -> int:
    fmt = FORMATS_BY_ID.get(type_id)
    if fmt is None:
        return 0  # a format without a kernel: left unmapped, the caller refuses the file
    count = prod(shape)
    if count % fmt.block_weights:
        raise GGUFError(f"tensor {name}: {count} weights do not fill whole {fmt.name} blocks")
    return count // fmt.block_weights * fmt.block_bytes


class _Reader:
    def __init__(self, blob: np.ndarray):
        self.blob, self.pos = blob, 0

    def unpack(self, fmt: str):
        (value,) = struct.unpack_from(fmt, self.blob, self.pos)
        self.pos += struct.calcsize(fmt)
        return value

    def string(self) -> str:
        length = self.unpack("<Q")
        if self.pos + length > len(self.blob):
            raise IndexError("string past the end of the file")
        text = bytes(self.blob[self.pos:self.pos + length]).decode("utf-8")
        self.pos += length
        return text

    def value(self, value_type: int, keep_strings: bool):
        if value_type in _SCALARS:
            return self.unpack(_SCALARS[value_type])
        if value_type == _STRING:
            return self.string()
        if value_type != _ARRAY:
            raise GGUFError(f"unknown GGUF metadata type {value_type}")
        element_type, count = self.unpack("<I"), self.unpack("<Q")
        if element_type in _SCALARS:
            fmt = _SCALARS[element_type]
            values = struct.unpack_from(f"<{count}{fmt[1]}", self.blob, self.pos)
            self.pos += count * struct.calcsize(fmt)
            return list(values)
        if element_type != _STRING:
            raise GGUFError(f"GGUF arrays of type {element_type} are not supported")
        if keep_strings:
            return [self.string() for _ in range(count)]
        for _ in range(count):  # skip: variable-length entries have to be walked
            self.pos += 8 + self.unpack("<Q")
        return count
