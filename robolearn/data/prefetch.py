"""Prepare the next batches while the model steps: an iterator run in a background thread, a few items ahead.

Gathering windows (numpy fancy indexing, zarr reads) and pinning them happen in the thread; the training thread
only takes ready batches, so a GPU never waits on data unless the data really is slower than the step. An error in
the thread is raised in the consumer at the item where it happened.
"""
from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator
from typing import Any

_END = object()


class Prefetcher(Iterator[Any]):
    def __init__(self, source: Iterable[Any], depth: int = 2, name: str = "robolearn-prefetch"):
        if depth < 1:
            raise ValueError(f"prefetch depth must be >= 1, got {depth}")
        self._queue: queue.Queue[tuple[Any, BaseException | None]] = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._produce, args=(iter(source),), name=name, daemon=True)
        self._thread.start()

    def _put(self, item: tuple[Any, BaseException | None]) -> bool:
        while not self._stop.is_set():  # wakes now and then so close() never waits on a full queue
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _produce(self, source: Iterator[Any]) -> None:
        try:
            for item in source:
                if not self._put((item, None)):
                    return
            self._put((_END, None))
        except BaseException as err:  # handed to the consumer, raised there
            self._put((None, err))

    def __next__(self) -> Any:
        if self._stop.is_set():
            raise StopIteration
        item, err = self._queue.get()
        if err is not None:
            self.close()
            raise err
        if item is _END:
            self.close()
            raise StopIteration
        return item

    def close(self) -> None:
        """Stop the thread (it finishes the item it is preparing) and drop what it prepared."""
        self._stop.set()
        while True:
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
        if self._thread is not threading.current_thread():
            self._thread.join(timeout=10)

    def __enter__(self) -> Prefetcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
