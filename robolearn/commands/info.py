"""`robolearn info STORE [--verify]`: what an EpisodeStore holds; --verify reads every chunk to prove it whole."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("info", help="summarize an EpisodeStore (--verify: read every chunk)",
                       description="Episodes, steps, keys and success labels of an EpisodeStore.")
    p.add_argument("store", type=Path, help="EpisodeStore folder")
    p.add_argument("--verify", action="store_true",
                   help="also read every chunk of every array and check it against the store's record (exit 2 when "
                        "anything is missing or damaged)")
    p.set_defaults(func=cmd_info)


def cmd_info(args: argparse.Namespace) -> int:
    from robolearn.data.store import EpisodeStore

    store = EpisodeStore.open(args.store)
    lengths = store.episode_lengths
    print(f"{store.path}: {store.n_episodes} episodes, {store.n_steps} steps, task={store.task}, fps={store.fps}")
    if len(lengths):
        print(f"  episode length: min {lengths.min()}, mean {lengths.mean():.1f}, max {lengths.max()}")
        labels = [store.episode_meta(i).get("success") for i in range(store.n_episodes)]
        labelled = [bool(v) for v in labels if v is not None]
        if labelled:
            print(f"  success: {sum(labelled)} of {len(labelled)} labelled episodes"
                  + (f" ({len(labels) - len(labelled)} unlabelled)" if len(labelled) < len(labels) else ""))
    for key, spec in store.specs.items():
        print(f"  {key:<16} {str(spec.shape):<16} {spec.dtype}")
    if args.verify:
        verify(store)
    return 0


def verify(store: Any) -> None:
    """Print EpisodeStore.verify()'s report; a damaged store raises StoreFormatError listing every problem, which
    the command prints as one line (exit 2)."""
    report = store.verify()
    print(f"  verified: every chunk of {len(report['keys'])} keys read and decoded ({report['episodes']} episodes, "
          f"{report['steps']} steps)")
    for key, found in report["keys"].items():
        print(f"    {key:<16} " + ", ".join(f"{name} {value}" for name, value in found.items()))
