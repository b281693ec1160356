"""An operator session: episodes one after another, started, stopped, redone or ended by session events.

The operator starts an episode, ends it early (saved; or saved and labelled a success, the label a real robot
cannot give itself and critics learn from), drops it and records it again with the same seed, or
quits (the episode in progress is saved). An episode that runs to its end is saved too. The loop's recorder
does the saving, so an interrupted session never leaves a half-written episode behind. Without a recorder
(deploying a policy without recording) the same keys start, stop, redo and quit episodes.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from robolearn.control.loop import ControlLoop, EndEpisode, EpisodeResult, StepEvent
from robolearn.control.session_keys import EventSource, SessionEvent


@dataclass
class SessionSummary:
    saved: list[int] = field(default_factory=list)  # store indices of the episodes kept (with a recorder)
    kept: int = 0  # episodes that count towards n_episodes: ended any way but re-record
    results: list[EpisodeResult] = field(default_factory=list)  # every episode run, re-recorded ones included
    rerecorded: int = 0
    quit: bool = False  # ended by the operator (rather than by reaching n_episodes or running out of seeds)


def record_session(loop: ControlLoop, events: EventSource, seeds: Iterable[int], n_episodes: int | None = None,
                   wait_for_start: bool = True, idle_poll_s: float = 0.02,
                   message: Callable[[str], None] = print) -> SessionSummary:
    """Run up to `n_episodes` kept episodes (one env, one seed each), each saved by the loop's recorder if it has one."""
    if n_episodes is not None and n_episodes < 1:
        raise ValueError(f"n_episodes must be >= 1 or None (until quit), got {n_episodes}")
    summary = SessionSummary()
    seed_iter = iter(seeds)
    backlog: list[SessionEvent] = []  # events that came in the same poll as START

    def control(event: StepEvent) -> EndEpisode | None:
        pending, backlog[:] = [*backlog, *events.poll()], []
        for e in pending:
            if e is SessionEvent.SUCCESS:
                return EndEpisode("success", success=True)
            if e is SessionEvent.STOP:
                return EndEpisode("stop")
            if e is SessionEvent.RERECORD:
                return EndEpisode("rerecord", save=False)
            if e is SessionEvent.QUIT:
                summary.quit = True
                return EndEpisode("quit")
        return None

    seed = next(seed_iter, None)
    while seed is not None and (n_episodes is None or summary.kept < n_episodes):
        if wait_for_start:
            message(f"episode {summary.kept} (seed {seed}): press start")
            if _wait_for_start(events, idle_poll_s, backlog) is SessionEvent.QUIT:
                summary.quit = True
                break
        result = loop.run([seed], on_step=control)[0]
        summary.results.append(result)
        if result.end_reason == "rerecord":
            summary.rerecorded += 1
            message(f"episode dropped after {result.steps} steps; recording it again")
            continue
        summary.kept += 1
        if result.episode_index is not None:
            summary.saved.append(result.episode_index)
        saved = f"; saved as episode {result.episode_index}" if result.episode_index is not None else ""
        message(f"episode ended ({result.end_reason}) after {result.steps} steps{saved}")
        if summary.quit:
            break
        seed = next(seed_iter, None)
    return summary


def _wait_for_start(events: EventSource, idle_poll_s: float, backlog: list[SessionEvent]) -> SessionEvent:
    """Block until START or QUIT. Events before it mean nothing between episodes and are dropped; events
    after it in the same poll go to `backlog` for the episode."""
    while True:
        polled = events.poll()
        for n, event in enumerate(polled):
            if event in (SessionEvent.START, SessionEvent.QUIT):
                backlog[:] = polled[n + 1:]
                return event
        time.sleep(idle_poll_s)
