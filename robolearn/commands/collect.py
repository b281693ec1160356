"""`robolearn collect`: demonstrations into an EpisodeStore, from a task's scripted expert in simulation (--task)
or teleoperated on a robot (--rig). Both resume: running the same command again continues the store.

    robolearn collect --task lift --episodes 200          # -> datasets/lift_scripted.episodes.zarr
    robolearn collect --task lift --expert degraded --failure early_close --failure-prob 1.0 --seed 1000
                                                          # -> datasets/lift_degraded.episodes.zarr (all fail)
    robolearn collect --rig sim_arm --out datasets/sim_arm_teleop.episodes.zarr --episodes 20
"""
from __future__ import annotations

import argparse
from pathlib import Path

from robolearn.commands.arguments import positive_int, probability
from robolearn.commands.teleop import teleop_names

EXPERT_KINDS = ("scripted", "degraded")  # robolearn.sim.collect.EXPERT_KINDS (not imported: --help stays light)
SIM_ONLY = ("expert", "seed", "action_mode", "failure", "failure_prob", "no_progress")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("collect", help="collect demonstrations into an EpisodeStore (--task T: scripted expert in "
                                       "simulation; --rig R: teleoperated on a robot)",
                       description=__doc__.split("\n\n")[0], epilog="examples:\n" + __doc__.split("\n\n", 1)[1],
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--task", help="task config name (configs/task/NAME.yaml), e.g. lift, can, stack: its "
                                       "scripted expert in simulation")
    source.add_argument("--rig", help="rig name in hardware/ (e.g. sim_arm) or a rig YAML file: teleoperated")
    p.add_argument("--episodes", type=positive_int, default=None,
                   help="episodes the store should hold when done (--task: default 100; --rig: default until q)")
    p.add_argument("--out", type=Path, help="store path (--task: default datasets/<task>_<expert>.episodes.zarr; "
                                            "--rig: required)")
    sim = p.add_argument_group("--task only")
    sim.add_argument("--expert", default=None, choices=EXPERT_KINDS, help="default scripted")
    sim.add_argument("--seed", type=int, default=None, help="seed of episode 0 (episode i: seed + i; default 0)")
    sim.add_argument("--action-mode", choices=("delta", "absolute"), help="default: the task config's")
    sim.add_argument("--failure", choices=("early_close", "release"),
                     help="degraded expert only: its mistake (default early_close)")
    sim.add_argument("--failure-prob", type=probability,
                     help="degraded expert only: probability that an episode has the mistake (default 1.0)")
    sim.add_argument("--no-progress", action="store_true", help="no progress bar")
    rig = p.add_argument_group("--rig only")
    rig.add_argument("--teleop", default=None, choices=teleop_names(), help="teleop device (default keyboard)")
    p.set_defaults(func=cmd_collect)


def cmd_collect(args: argparse.Namespace) -> int:
    if args.rig is not None:
        given = [f"--{name.replace('_', '-')}" for name in SIM_ONLY
                 if getattr(args, name) is not None and getattr(args, name) is not False]
        if given:
            verb = "applies" if len(given) == 1 else "apply"
            raise ValueError(f"{', '.join(given)} only {verb} to --task (collecting from a scripted expert)")
        if args.out is None:
            raise ValueError("--rig needs --out STORE: the store to record into (created, or continued)")
        return collect_on_rig(args)
    if args.teleop is not None:
        raise ValueError("--teleop only applies to --rig (teleoperated collection)")
    return collect_in_sim(args)


def collect_in_sim(args: argparse.Namespace) -> int:
    from robolearn.config_files import task_by_name
    from robolearn.sim.collect import collect, default_out

    expert = args.expert or "scripted"
    options = {name: value for name, value in (("failure", args.failure), ("p", args.failure_prob)) if value is not None}
    if options and expert != "degraded":
        raise ValueError("--failure and --failure-prob apply to --expert degraded only")
    task = task_by_name(args.task)
    config_mode = task.env_kwargs.get("action_mode")
    if args.action_mode:
        task.env_kwargs = {**task.env_kwargs, "action_mode": args.action_mode}
    out = args.out or default_out(args.task, task.env_kwargs.get("action_mode"), config_mode, expert)
    store = collect(task, 100 if args.episodes is None else args.episodes, out, expert=expert,
                    seed_start=args.seed or 0, progress=not args.no_progress, expert_options=options)
    if args.action_mode and args.action_mode != config_mode:
        print(f"note: task {args.task!r} runs {config_mode!r} actions; train on this store with "
              f"task.env_kwargs.action_mode={args.action_mode} dataset_path={store.path}")
    return 0


def collect_on_rig(args: argparse.Namespace) -> int:
    from robolearn.commands.robot import collect_teleop, make_teleop, on_robot, terminal_events
    from robolearn.control.session_keys import describe_keys
    from robolearn.hal.rig import load_rig

    def job() -> int:
        rig = load_rig(args.rig)
        with terminal_events() as (events, interactive):
            if interactive:
                print(f"recording on {rig.name} into {args.out}; keys: {describe_keys()}")
            elif args.episodes is None:
                raise ValueError("without a terminal for the session keys, give --episodes")
            summary = collect_teleop(rig, args.out, make_teleop(args.teleop or "keyboard"), events, args.episodes,
                                     wait_for_start=interactive)
        print(f"saved {len(summary.saved)} episodes into {args.out} ({summary.rerecorded} re-recorded)")
        return 0
    return on_robot("collect", job)
