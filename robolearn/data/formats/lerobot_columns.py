"""LeRobot parquet columns <-> numpy arrays, feature by feature.

A feature of shape (1,) is a plain column (LeRobot's `datasets.Value`); shape (n,) a list column of length n
(`Sequence`); more dimensions nested lists (`Array2D`...). Images inside parquet are structs of encoded bytes
(PNG/JPEG, `datasets.Image`). On import every value keeps its dtype and the feature's shape, so a (1,) feature
is a store key of per-step shape (1,).
"""
from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from robolearn.data.formats.lerobot_meta import frame_shape
from robolearn.data.store import StoreFormatError


def to_numpy(path: Path, name: str, column: pa.ChunkedArray, feature: dict[str, Any]) -> np.ndarray:
    """A numeric column as an (n_rows, *shape) array of the feature's dtype; nulls and wrong sizes are errors."""
    shape, dtype = tuple(feature["shape"]), np.dtype(feature["dtype"])
    n = len(column)
    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if array.null_count:
        raise StoreFormatError(f"{path}: column {name!r} has {array.null_count} missing (null) values")
    while pa.types.is_list(array.type) or pa.types.is_large_list(array.type) or pa.types.is_fixed_size_list(array.type):
        array = pc.list_flatten(array)
        if array.null_count:
            raise StoreFormatError(f"{path}: column {name!r} has missing (null) values inside its lists")
    if not (pa.types.is_integer(array.type) or pa.types.is_floating(array.type) or pa.types.is_boolean(array.type)):
        raise StoreFormatError(f"{path}: column {name!r} holds {column.type}, not the numbers its feature "
                               f"({feature['dtype']}) says")
    values = array.to_numpy(zero_copy_only=False)
    if values.size != n * int(np.prod(shape)):
        raise StoreFormatError(f"{path}: column {name!r} holds {values.size} values for {n} rows; its feature shape "
                               f"{list(shape)} needs {n * int(np.prod(shape))}")
    return values.astype(dtype, copy=False).reshape(n, *shape)


def images_to_numpy(path: Path, name: str, column: pa.ChunkedArray, feature: dict[str, Any]) -> np.ndarray:
    """An `image` column (structs with encoded `bytes`) as uint8 (n_rows, H, W, 3)."""
    from PIL import Image

    height, width, channels = frame_shape(feature)
    out = np.empty((len(column), height, width, channels), np.uint8)
    for i, cell in enumerate(column.to_pylist()):
        data = cell.get("bytes") if isinstance(cell, dict) else None
        if not data:
            raise StoreFormatError(f"{path}: image column {name!r} row {i} has no embedded image bytes (images "
                                   f"kept as separate files are not supported)")
        try:
            image = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
        except OSError as err:
            raise StoreFormatError(f"{path}: image column {name!r} row {i} is not a readable image ({err})") from err
        if image.shape != out.shape[1:]:
            raise StoreFormatError(f"{path}: image column {name!r} row {i} is {image.shape}, its feature says "
                                   f"{out.shape[1:]}")
        out[i] = image
    return out


def from_numpy(values: np.ndarray) -> pa.Array:
    """(n, *shape) values as a column: plain for shape (1,), fixed-size lists (nested for more dimensions)."""
    n, shape = len(values), values.shape[1:]
    if shape in ((), (1,)):
        return pa.array(values.reshape(n))
    array: pa.Array = pa.array(np.ascontiguousarray(values).reshape(-1))
    for size in reversed(shape):
        array = pa.FixedSizeListArray.from_arrays(array, size)
    return array
