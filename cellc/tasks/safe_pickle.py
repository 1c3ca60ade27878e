"""A restricted unpickler for data files: plain containers and numbers, nothing that runs code.

The standard JSB Chorales pickle stores pitches as numpy int64 scalars, i.e. it references
``numpy.core.multiarray.scalar`` and ``numpy.dtype``. Those two globals are replaced by tiny
stand-ins that decode the scalar's bytes into a Python int or float; numpy itself is never
called, and every other global is refused.
"""

from __future__ import annotations

import io
import pickle
import struct
from typing import Any

from cellc.errors import DataError

_SAFE_BUILTINS = {"set", "frozenset", "list", "dict", "tuple", "int", "float", "complex", "bytearray"}


class _DType:
    """Stands in for ``numpy.dtype(code, align, copy)``; keeps only what decoding a scalar needs."""

    def __init__(self, code: Any, *_args: Any) -> None:
        if not isinstance(code, str) or len(code) < 2 or code[0] not in "iuf" or not code[1:].isdigit():
            raise pickle.UnpicklingError(f"numpy dtype {code!r} is not a plain number type")
        self.kind = code[0]
        self.size = int(code[1:])
        self.byteorder = "<"

    def __setstate__(self, state: Any) -> None:
        # numpy's dtype state: (version, byteorder, subarray, names, fields, elsize, alignment, flags)
        if isinstance(state, tuple) and len(state) > 1 and state[1] in ("<", ">", "|", "="):
            self.byteorder = ">" if state[1] == ">" else "<"


def _scalar(dtype: Any, data: Any) -> int | float:
    """Stands in for ``numpy.core.multiarray.scalar(dtype, bytes)`` for int / uint / float dtypes."""
    if not isinstance(dtype, _DType):
        raise pickle.UnpicklingError("numpy scalar without a plain number dtype")
    if isinstance(data, str):  # Python 2 pickles read with encoding="latin1"
        data = data.encode("latin1")
    if not isinstance(data, (bytes, bytearray)) or len(data) != dtype.size:
        raise pickle.UnpicklingError("numpy scalar with malformed data")
    order = "little" if dtype.byteorder == "<" else "big"
    if dtype.kind in "iu":
        return int.from_bytes(data, order, signed=dtype.kind == "i")
    formats = {2: "e", 4: "f", 8: "d"}
    if dtype.size not in formats:
        raise pickle.UnpicklingError(f"unsupported float size {dtype.size}")
    return struct.unpack(("<" if order == "little" else ">") + formats[dtype.size], data)[0]


def _latin1_bytes(text: Any, encoding: Any = "utf-8") -> bytes:
    """Stands in for ``_codecs.encode``, which protocol-2 pickles use to spell bytes as latin-1 text."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError("_codecs.encode used for something other than latin-1 bytes")
    return text.encode("latin1")


_NUMPY_GLOBALS = {
    ("_codecs", "encode"): _latin1_bytes,
    ("numpy", "dtype"): _DType,
    ("numpy.core.multiarray", "scalar"): _scalar,
    ("numpy._core.multiarray", "scalar"): _scalar,
}


class RestrictedUnpickler(pickle.Unpickler):
    """Admits plain containers, strings and numbers (including numpy number scalars) only."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _NUMPY_GLOBALS:
            return _NUMPY_GLOBALS[(module, name)]
        if module in ("builtins", "__builtin__") and name in _SAFE_BUILTINS:
            import builtins

            return getattr(builtins, name)
        raise pickle.UnpicklingError(f"refusing to load global {module}.{name}")


def safe_load_pickle(path: str, data: bytes) -> Any:
    """Unpickle ``data`` (read from ``path``) with :class:`RestrictedUnpickler`; DataError on anything else."""
    try:
        return RestrictedUnpickler(io.BytesIO(data), encoding="latin1").load()
    except Exception as err:  # any failure means the file is corrupt or not a plain-data pickle
        raise DataError(f"{path}: not a readable plain-data pickle ({err})") from None
