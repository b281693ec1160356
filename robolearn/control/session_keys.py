"""Session control events (start, stop, re-record, quit) from the keyboard or from code.

`KeyboardEvents` puts the terminal in cbreak mode (keys arrive one at a time, unechoed, Ctrl-C still
interrupts) and polls stdin with a zero timeout, so the control loop never blocks on it; the terminal is
restored on exit. `EventQueue` takes events from code (tests, a GUI, another thread) through the same `poll()`.
"""
from __future__ import annotations

import enum
import os
import queue
import select
import sys
import termios
import tty
from collections.abc import Mapping
from typing import Protocol, runtime_checkable


class SessionEvent(enum.Enum):
    START = "start"  # begin the next episode
    STOP = "stop"  # end the episode now and save it
    SUCCESS = "success"  # end the episode now, save it and label it a success (the operator's verdict)
    RERECORD = "rerecord"  # drop the episode in progress and record it again (same seed)
    QUIT = "quit"  # save the episode in progress, then end the session


# Keys the keyboard teleop does not use (it moves the arm with w/s a/d r/f u/j i/k o/l and space), so one
# keyboard can drive the arm and the session at once.
DEFAULT_KEYS: dict[str, SessionEvent] = {
    "n": SessionEvent.START, "e": SessionEvent.STOP, "y": SessionEvent.SUCCESS, "x": SessionEvent.RERECORD,
    "q": SessionEvent.QUIT,
}


def describe_keys(keymap: Mapping[str, SessionEvent] = DEFAULT_KEYS) -> str:
    """'s: start, e: stop, ...' for the operator's prompt."""
    return ", ".join(f"{key!r}: {event.value}" if key.isspace() else f"{key}: {event.value}" for key, event in keymap.items())


@runtime_checkable
class EventSource(Protocol):
    def poll(self) -> list[SessionEvent]: ...  # events since the last poll, oldest first; never blocks


class EventQueue:
    """Events pushed from code; thread-safe."""

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[SessionEvent] = queue.SimpleQueue()

    def put(self, event: SessionEvent) -> None:
        if not isinstance(event, SessionEvent):
            raise TypeError(f"expected a SessionEvent, got {event!r}")
        self._queue.put(event)

    def poll(self) -> list[SessionEvent]:
        events = []
        while not self._queue.empty():
            events.append(self._queue.get_nowait())
        return events


class KeyboardEvents:
    """Single key presses on a terminal as session events; use as a context manager."""

    def __init__(self, fd: int | None = None, keymap: Mapping[str, SessionEvent] = DEFAULT_KEYS):
        self.fd = sys.stdin.fileno() if fd is None else fd
        bad = [k for k in keymap if len(k) != 1]
        if bad:
            raise ValueError(f"keymap keys must be single characters, got {bad}")
        self.keymap = dict(keymap)
        self._saved: list | None = None

    def __enter__(self) -> KeyboardEvents:
        if not os.isatty(self.fd):
            raise RuntimeError(f"keyboard session control needs an interactive terminal, but fd {self.fd} is not a tty; "
                               f"run in a terminal, or drive the session from code with EventQueue")
        self._saved = termios.tcgetattr(self.fd)
        tty.setcbreak(self.fd, termios.TCSANOW)
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Give the terminal its settings back (safe to call twice)."""
        if self._saved is not None:
            termios.tcsetattr(self.fd, termios.TCSADRAIN, self._saved)
            self._saved = None

    def poll(self) -> list[SessionEvent]:
        if self._saved is None:
            raise RuntimeError("KeyboardEvents is not active; use it as `with KeyboardEvents() as keys:`")
        events = []
        while select.select([self.fd], [], [], 0)[0]:
            data = os.read(self.fd, 64)
            if not data:  # end of file: the terminal went away
                break
            events += [self.keymap[c] for c in data.decode(errors="ignore") if c in self.keymap]
        return events
