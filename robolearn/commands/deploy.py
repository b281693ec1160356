"""`robolearn deploy --rig RIG CHECKPOINT`: a trained policy on a robot, on the rig's real-time clock."""
from __future__ import annotations

import argparse
from pathlib import Path

from robolearn.commands.arguments import (
    EXECUTION_MODES,
    add_energy_gate_arguments,
    add_rig_argument,
    check_device,
    positive_int,
)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("deploy", help="run a policy checkpoint on a robot (--rig sim_arm CHECKPOINT)",
                       description="Run a trained policy on a robot. Keys: n start, e end (saved), y success, "
                                   "x redo, q quit.")
    add_rig_argument(p)
    p.add_argument("checkpoint", type=Path, help="policy checkpoint folder")
    p.add_argument("--episodes", type=positive_int, default=1)
    p.add_argument("--execution", default="receding", metavar="|".join(EXECUTION_MODES),
                   help="chunk execution: receding horizon, temporal ensembling, or asynchronous real-time chunking")
    add_energy_gate_arguments(p)
    p.add_argument("--record", type=Path, metavar="STORE", help="also record the episodes into this store")
    p.add_argument("--seed", type=int, default=0, help="seed of the first episode (the sim arm places its cube from it)")
    p.add_argument("--device", default=None, help="torch device for the policy (default: cuda if present)")
    p.set_defaults(func=cmd_deploy)


def cmd_deploy(args: argparse.Namespace) -> int:
    from robolearn.commands.robot import deploy, on_robot, terminal_events
    from robolearn.control.chunking import ChunkExecution
    from robolearn.control.session_keys import describe_keys
    from robolearn.hal.rig import load_rig
    from robolearn.policies.checkpoint import load_policy

    def job() -> int:
        # a bad mode, gate or device is refused before the robot is touched
        execution = ChunkExecution(mode=args.execution, energy_threshold=args.energy_threshold,
                                   energy_replans=args.energy_replans)
        check_device(args.device, "--device")
        rig = load_rig(args.rig)
        policy = load_policy(args.checkpoint, device=args.device)
        with terminal_events() as (events, interactive):
            if interactive:
                print(f"deploying {args.checkpoint} on {rig.name}; keys: {describe_keys()}")
            summary = deploy(rig, policy, args.episodes, events, wait_for_start=interactive, execution=execution,
                             record=args.record, seed_start=args.seed)
        if args.record is not None:
            print(f"recorded {len(summary.saved)} episodes into {args.record}")
        return 0
    return on_robot("deploy", job)
