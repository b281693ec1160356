"""`robolearn replay --rig RIG STORE --episode I`: send a recorded episode's actions to a robot again."""
from __future__ import annotations

import argparse
from pathlib import Path

from robolearn.commands.arguments import add_rig_argument, non_negative_int


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("replay", help="send a recorded episode's actions to a robot again (--rig sim_arm STORE)",
                       description="Send a recorded episode's actions to a robot again, at the rate they were recorded.")
    add_rig_argument(p)
    p.add_argument("store", type=Path, help="EpisodeStore holding the episode")
    p.add_argument("--episode", type=non_negative_int, default=0, help="episode index (default 0)")
    p.set_defaults(func=cmd_replay)


def cmd_replay(args: argparse.Namespace) -> int:
    from robolearn.commands.robot import on_robot, replay, timing_line
    from robolearn.hal.rig import load_rig

    def job() -> int:
        result = replay(load_rig(args.rig), args.store, args.episode)
        print(f"replayed episode {args.episode} of {args.store}: {timing_line(result)}")
        return 0
    return on_robot("replay", job)
