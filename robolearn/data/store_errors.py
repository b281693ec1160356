"""The errors an EpisodeStore raises for stores it cannot (or may not) use; `robolearn.data.store` re-exports them."""
from __future__ import annotations


class StoreFormatError(ValueError):
    """The path exists but is not a store this version of robolearn can read (or its files are damaged)."""


class StoreIncompleteError(StoreFormatError):
    """The store is a leftover of an import or collection that never finished (it carries the `incomplete` mark)."""


class StoreLockedError(RuntimeError):
    """Another handle (this or another process) is writing to the store: one writer per store."""
