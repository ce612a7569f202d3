"""List columns from flat numpy buffers: the values and one offset per row handed to polars through the
Arrow C data interface (``__arrow_c_array__``), without a copy, pyarrow or any per-row work.

Polars imports the buffers in place and calls the array's ``release`` when it no longer needs them; until
then the numpy arrays stay referenced here (``_ALIVE``). The schema is only read during the import.
"""

from __future__ import annotations

import ctypes
import itertools
import threading
from typing import Any

import numpy as np
import polars as pl

_FORMATS = {np.dtype(np.uint8): b"C", np.dtype(np.int8): b"c", np.dtype(np.uint16): b"S", np.dtype(np.int16): b"s",
            np.dtype(np.uint32): b"I", np.dtype(np.int32): b"i", np.dtype(np.uint64): b"L",
            np.dtype(np.int64): b"l"}
_NULLABLE = 2  # ARROW_FLAG_NULLABLE
_LARGE_LIST = b"+L"  # int64 offsets
_ITEM = b"item"
_SCHEMA_NAME = b"arrow_schema"
_ARRAY_NAME = b"arrow_array"


class _Schema(ctypes.Structure):
    pass


class _Array(ctypes.Structure):
    pass


_SchemaRelease = ctypes.CFUNCTYPE(None, ctypes.POINTER(_Schema))
_ArrayRelease = ctypes.CFUNCTYPE(None, ctypes.POINTER(_Array))
_Schema._fields_ = [("format", ctypes.c_char_p), ("name", ctypes.c_char_p), ("metadata", ctypes.c_char_p),
                    ("flags", ctypes.c_int64), ("n_children", ctypes.c_int64),
                    ("children", ctypes.POINTER(ctypes.POINTER(_Schema))), ("dictionary", ctypes.POINTER(_Schema)),
                    ("release", _SchemaRelease), ("private_data", ctypes.c_void_p)]
_Array._fields_ = [("length", ctypes.c_int64), ("null_count", ctypes.c_int64), ("offset", ctypes.c_int64),
                   ("n_buffers", ctypes.c_int64), ("n_children", ctypes.c_int64),
                   ("buffers", ctypes.POINTER(ctypes.c_void_p)), ("children", ctypes.POINTER(ctypes.POINTER(_Array))),
                   ("dictionary", ctypes.POINTER(_Array)), ("release", _ArrayRelease),
                   ("private_data", ctypes.c_void_p)]

_ALIVE: dict[int, Any] = {}  # key (private_data) -> what the structures point at
_LOCK = threading.Lock()
_KEYS = itertools.count(1)


def _forget_array(array: Any) -> None:
    key = array.contents.private_data
    with _LOCK:
        _ALIVE.pop(key, None)
    array.contents.release = _ArrayRelease()


def _mark_released(array: Any) -> None:  # a child: its parent's release frees what it points at
    array.contents.release = _ArrayRelease()


def _mark_schema_released(schema: Any) -> None:  # the schema is read during the import, not kept
    schema.contents.release = _SchemaRelease()


_RELEASE_ARRAY = _ArrayRelease(_forget_array)
_RELEASE_CHILD = _ArrayRelease(_mark_released)
_RELEASE_CHILD_SCHEMA = _SchemaRelease(_mark_schema_released)
_capsule = ctypes.pythonapi.PyCapsule_New
_capsule.restype = ctypes.py_object
_capsule.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_void_p]


class _FlatLists:
    """An Arrow large list array over ``values`` cut at ``offsets`` (``__arrow_c_array__``)."""

    def __init__(self, values: np.ndarray, offsets: np.ndarray) -> None:
        self.values = np.ascontiguousarray(values)
        self.offsets = np.ascontiguousarray(offsets, np.int64)

    def __arrow_c_array__(self, requested_schema: object | None = None) -> tuple[object, object]:
        key = next(_KEYS)
        child_schema = _Schema(format=_FORMATS[self.values.dtype], name=_ITEM, flags=_NULLABLE,
                               release=_RELEASE_CHILD_SCHEMA)
        schema_children = (ctypes.POINTER(_Schema) * 1)(ctypes.pointer(child_schema))
        schema = _Schema(format=_LARGE_LIST, name=b"", flags=_NULLABLE, n_children=1, children=schema_children,
                         release=_RELEASE_CHILD_SCHEMA)
        child_buffers = (ctypes.c_void_p * 2)(None, self.values.ctypes.data)
        child = _Array(length=len(self.values), n_buffers=2, buffers=child_buffers, release=_RELEASE_CHILD)
        array_children = (ctypes.POINTER(_Array) * 1)(ctypes.pointer(child))
        buffers = (ctypes.c_void_p * 2)(None, self.offsets.ctypes.data)
        array = _Array(length=len(self.offsets) - 1, n_buffers=2, buffers=buffers, n_children=1,
                       children=array_children, release=_RELEASE_ARRAY, private_data=key)
        self._schema = (schema, child_schema, schema_children)  # read by the import, within it
        with _LOCK:
            _ALIVE[key] = (array, child, array_children, buffers, child_buffers, self.values, self.offsets)
        return (_capsule(ctypes.addressof(schema), _SCHEMA_NAME, None),
                _capsule(ctypes.addressof(array), _ARRAY_NAME, None))


def list_series(name: str, values: np.ndarray, counts: np.ndarray) -> pl.Series:
    """One list per row, row i holding the next ``counts[i]`` of ``values`` (integers of 1-8 bytes)."""
    offsets = np.zeros(len(counts) + 1, np.int64)
    np.cumsum(counts, out=offsets[1:])
    if int(offsets[-1]) != len(values):
        raise ValueError(f"{len(values)} values for lists of {int(offsets[-1])} in all")
    return pl.Series(name, _FlatLists(values, offsets))
