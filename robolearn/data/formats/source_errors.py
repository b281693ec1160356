"""One error for a damaged dataset file, whatever its library raised."""
from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from robolearn.data.store import StoreFormatError


@contextlib.contextmanager
def reading(source: Path, what: str, advice: str) -> Iterator[None]:
    """zarr, h5py, json and the codecs raise many types (OSError, RuntimeError, KeyError, TypeError, ...) for damaged
    metadata or chunks: one StoreFormatError naming `source` instead. Our own refusals already name it and pass."""
    try:
        yield
    except StoreFormatError:
        raise
    except Exception as err:
        if str(source) in str(err):
            raise
        raise StoreFormatError(f"{source} could not be read as {what} ({type(err).__name__}: {err}); {advice}") from err
