"""`robolearn teleop --rig RIG`: drive a robot from a teleop device through the rig's safety layer, recording nothing."""
from __future__ import annotations

import argparse

from robolearn.commands.arguments import add_rig_argument, positive_float


def teleop_names() -> list[str]:
    from robolearn.registry import TELEOPS

    return TELEOPS.names()


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("teleop", help="drive a robot from a teleop device (--rig sim_arm)",
                       description="Drive a robot from a teleop device (nothing is recorded). Keys: e or q stop.")
    add_rig_argument(p)
    p.add_argument("--teleop", default="keyboard", choices=teleop_names(), help="teleop device")
    p.add_argument("--seconds", type=positive_float, default=60.0, help="how long to drive (default 60)")
    p.set_defaults(func=cmd_teleop)


def cmd_teleop(args: argparse.Namespace) -> int:
    from robolearn.commands.robot import make_teleop, on_robot, teleoperate, terminal_events, timing_line
    from robolearn.hal.rig import load_rig

    def job() -> int:
        rig = load_rig(args.rig)
        with terminal_events() as (events, interactive):
            if interactive:
                print(f"teleoperating {rig.name} for {args.seconds:g} s; e or q stops")
            result = teleoperate(rig, make_teleop(args.teleop), args.seconds, events)
        print(timing_line(result))
        return 0
    return on_robot("teleop", job)
