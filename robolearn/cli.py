"""The `robolearn` command: one entry point, one verb per job.

    robolearn demo   [overrides...]             the main job: scripted Lift demos, a few minutes of training, evaluation
    robolearn train  [overrides...]             train from configs/train.yaml (hydra overrides: key=value)
    robolearn eval   CHECKPOINT [--episodes N] [--json]
                     [--steer critic=CRITIC [--k 16] [--steer-mode argmax|softmax] [--beta B] [--guidance SCALE]]
                     [--imagine WORLD_MODEL [--initial-observations STORE]]   in the simulator, or in a world model
    robolearn critic train --task T [--dataset STORE] [--config iql|mc] [--policy CKPT] [--out DIR] [key=value...]
    robolearn worldmodel train --task T [--dataset STORE ...] [--config latent] [--out DIR] [key=value...]
    robolearn collect --task lift [--episodes N]  scripted demonstrations in simulation into an EpisodeStore
    robolearn collect --rig sim_arm --out STORE [--episodes N] [--teleop keyboard|spacemouse]   teleoperated, on a robot
    robolearn teleop  --rig sim_arm [--teleop keyboard|spacemouse] [--seconds S]
    robolearn deploy  --rig sim_arm CHECKPOINT [--episodes N] [--execution receding|ensemble|rtc] [--record STORE]
    robolearn replay  --rig sim_arm STORE [--episode I]
    robolearn convert SRC DST [--from FORMAT | --to FORMAT]     formats: diffusion_policy zarr, robomimic HDF5
    robolearn info   STORE                      episodes, steps, keys of an EpisodeStore
    robolearn bench  [NAME ARGS...]             the benchmarks in scripts/ (no NAME: list them)
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from robolearn.config_files import compose, with_overrides  # noqa: F401  (with_overrides: part of the CLI's API)


def lazy(module: str, name: str) -> Callable[[argparse.Namespace], int]:
    """A verb's job, imported when it runs: `robolearn info` should not wait for torch."""
    def run(args: argparse.Namespace) -> int:
        import importlib

        return getattr(importlib.import_module(module), name)(args)
    return run


def run_training(config_name: str, overrides: Sequence[str], resume: bool) -> int:
    from robolearn.eval.rollout import format_report
    from robolearn.sim.collect import collect_for_task
    from robolearn.train import RunConfig, Trainer

    run = RunConfig.from_dict(compose(config_name, overrides))
    trainer = Trainer(run, make_missing=collect_for_task)
    if resume and trainer.resume():
        print(f"resumed {run.out_dir} at step {trainer.step}")
    n_params = sum(p.numel() for p in trainer.policy.parameters())
    print(f"training {type(trainer.policy).__name__} ({n_params / 1e6:.1f} M params) on {run.task.name}: "
          f"{trainer.store.n_episodes} episodes, {len(trainer.windows)} windows, device {trainer.device}")
    report = trainer.fit()
    print(f"\nrun folder: {run.out_dir}\n  checkpoint          {trainer.checkpoint_dir}\n"
          f"  training            {trainer.step} steps in {trainer.train_seconds / 60:.1f} min\n"
          f"  report              {trainer.out / 'report.md'}")
    if report is not None:
        print(format_report(report))
    return 0


def cmd_collect(args: argparse.Namespace) -> int:
    from robolearn.sim.collect import main as collect_in_sim

    if any(a == "--rig" or a.startswith("--rig=") for a in args.args):  # teleoperated, on a robot
        return cmd_robot(args)
    return collect_in_sim(args.args)


def cmd_robot(args: argparse.Namespace) -> int:
    from robolearn.commands.robot import run_command

    return run_command(args.command, args.args)


ROBOT_VERBS = {"teleop": "drive a robot from a teleop device (--rig sim_arm)",
               "deploy": "run a policy checkpoint on a robot (--rig sim_arm CHECKPOINT)",
               "replay": "send a recorded episode's actions to a robot again (--rig sim_arm STORE)"}


FORMATS = ("diffusion_policy", "robomimic")


def cmd_convert(args: argparse.Namespace) -> int:
    from robolearn.data.formats.diffusion_policy import export_diffusion_policy, import_diffusion_policy
    from robolearn.data.formats.robomimic import export_robomimic, import_robomimic
    from robolearn.data.store import EpisodeStore

    if args.to is not None:
        export = {"diffusion_policy": export_diffusion_policy, "robomimic": export_robomimic}[args.to]
        out = export(EpisodeStore.open(args.src), args.dst, overwrite=args.overwrite)
        print(f"wrote {args.to} file {out}")
        return 0
    # robomimic datasets are HDF5 files; everything else is taken for a diffusion_policy zarr
    source_format = args.from_ or ("robomimic" if args.src.suffix in (".hdf5", ".h5") else "diffusion_policy")
    importer = {"diffusion_policy": import_diffusion_policy, "robomimic": import_robomimic}[source_format]
    print(importer(args.src, args.dst, task=args.task, fps=args.fps, overwrite=args.overwrite))
    return 0


def benchmarks() -> dict[str, Path]:
    from robolearn.paths import scripts_dir

    return {p.stem.removeprefix("bench_"): p for p in sorted(scripts_dir().glob("bench_*.py"))}


def cmd_bench(args: argparse.Namespace) -> int:
    """Run scripts/bench_NAME.py with the remaining arguments, or list the benchmarks."""
    import runpy

    found = benchmarks()
    if not args.args or args.args[0] in ("-h", "--help"):
        print("robolearn bench NAME [ARGS...]  (each prints a table; NAME --help for its options)")
        for name, path in found.items():
            doc = (path.read_text().split('"""')[1:2] or [""])[0].strip().split("\n\n")[0]
            print(f"  {name:<14} {' '.join(doc.split()).split('. ')[0]}")
        return 0
    name, rest = args.args[0], args.args[1:]
    if name not in found:
        raise ValueError(f"no benchmark {name!r}; available: {', '.join(found)}")
    saved = sys.argv
    sys.argv = [str(found[name]), *rest]
    try:
        runpy.run_path(str(found[name]), run_name="__main__")
    except SystemExit as done:  # the script's own argparse (--help, a usage error) or exit code
        return done.code if isinstance(done.code, int) else 0 if done.code is None else 1
    finally:
        sys.argv = saved
    return 0


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
    return 0


PASS_THROUGH = {"collect": cmd_collect, "bench": cmd_bench, **dict.fromkeys(ROBOT_VERBS, cmd_robot)}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="robolearn", description="Learn robot manipulation policies.")
    sub = parser.add_subparsers(dest="command", required=True)

    for name, config, help_ in (("demo", "demo", "main job: Lift demos, a few minutes of training, evaluation"),
                                ("train", "train", "train a policy (hydra overrides: task=... policy=... train.steps=...)")):
        p = sub.add_parser(name, help=help_)
        p.add_argument("overrides", nargs="*", help="hydra overrides, e.g. train.steps=1000 out_dir=runs/x")
        p.add_argument("--resume", action="store_true", help="continue from the run folder's last checkpoint")
        p.set_defaults(func=lambda a, c=config: run_training(c, a.overrides, a.resume))

    p = sub.add_parser("eval", help="evaluate a checkpoint in its task's simulator")
    p.add_argument("checkpoint", type=Path, help="checkpoint folder (with policy.json and model.safetensors)")
    p.add_argument("--episodes", type=int, default=50)
    p.add_argument("--seed", type=int, default=100_000, help="seed of the first episode (episode i: seed + i)")
    p.add_argument("--n-envs", type=int, default=50, help="envs stepped together, one batched policy call")
    p.add_argument("--n-workers", type=int, default=0,
                   help="worker processes stepping the envs in parallel (0: in this process; worth it for robosuite)")
    p.add_argument("--execution", default="receding", metavar="receding|ensemble|rtc",
                   help="chunk execution: receding horizon, temporal ensembling (every step), or real-time chunking")
    p.add_argument("--delay-steps", type=int, default=None,
                   help="rtc only: inference latency to simulate, in control periods (default: the policy's chunk "
                        "is ready at once)")
    p.add_argument("--blend-steps", type=int, default=None,
                   help="rtc only: steps of a new chunk blended with the old one (default: the whole overlap; 0: switch "
                        "at once, which with --delay-steps 0 reproduces receding horizon)")
    p.add_argument("--device", default="auto")
    p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                   help="override a policy config field for this evaluation, e.g. scheduler=ddpm, "
                        "num_inference_steps=4, integrator=midpoint (repeatable)")
    p.add_argument("--video", type=Path, help="write a video of the first episodes here (.mp4)")
    p.add_argument("--video-episodes", type=int, default=4)
    p.add_argument("--record", type=Path, metavar="STORE",
                   help="record every episode into this store (created, or added to): rollouts for world models and critics")
    p.add_argument("--json", action="store_true", help="print one JSON object with the metrics")
    steering = p.add_argument_group("value-guided steering (robolearn.eval.steering)")
    steering.add_argument("--steer", metavar="critic=PATH",
                          help="choose among the policy's candidate chunks with this critic (robolearn critic train)")
    steering.add_argument("--k", type=int, help="candidate chunks per decision (default 16)")
    steering.add_argument("--steer-mode", choices=("argmax", "softmax"), help="pick the best, or draw by softmax(Q/beta)")
    steering.add_argument("--beta", type=float, help="softmax temperature (default 1)")
    steering.add_argument("--guidance", type=float, metavar="SCALE",
                          help="also push samples up the critic's gradient while sampling (diffusion and flow heads)")
    imagination = p.add_argument_group("imagination (robolearn.eval.imagination)")
    imagination.add_argument("--imagine", type=Path, metavar="WORLD_MODEL",
                             help="evaluate inside this world model (robolearn worldmodel train) instead of the simulator")
    imagination.add_argument("--initial-observations", type=Path, metavar="STORE",
                             help="store whose episodes' first frames start imagined episodes (default: the world "
                                  "model's training store, else the task's dataset)")
    p.set_defaults(func=lazy("robolearn.commands.evaluate", "cmd_eval"))

    for verb, group, default, train, what in (
            ("critic", "critic", "iql", lazy("robolearn.commands.models", "cmd_critic_train"),
             "a critic of action chunks for steering"),
            ("worldmodel", "world_model", "latent", lazy("robolearn.commands.models", "cmd_worldmodel_train"),
             "a latent world model for imagined evaluation")):
        p = sub.add_parser(verb, help=f"train {what}")
        actions = p.add_subparsers(dest="action", required=True, metavar="train")
        t = actions.add_parser("train", help=f"train {what} (config: configs/{group}/NAME.yaml)")
        t.add_argument("overrides", nargs="*", metavar="FIELD=VALUE",
                       help="config overrides, e.g. steps=2000 batch_size=128 device=cpu")
        t.add_argument("--task", help="task config name (configs/task/NAME.yaml): observed keys and its dataset")
        t.add_argument("--config", default=default, help=f"configs/{group}/NAME.yaml (default {default})")
        t.add_argument("--out", type=Path, help=f"output folder (default runs/{verb.replace('worldmodel', 'world_model')}_"
                                                f"<task>{'_<config>' if verb == 'critic' else ''})")
        t.add_argument("--no-progress", action="store_true", help="no progress bar")
        if verb == "critic":
            t.add_argument("--dataset", type=Path, help="EpisodeStore to learn from (default: the task's dataset)")
            t.add_argument("--policy", type=Path, metavar="CKPT", help="policy checkpoint to match: its n_obs_steps "
                           "and n_action_steps (and task, without --task)")
        else:
            t.add_argument("--dataset", type=Path, action="append", metavar="STORE",
                           help="EpisodeStore to learn from, repeatable: demonstrations and recorded rollouts "
                                "(default: the task's dataset)")
        t.set_defaults(func=train)

    for verb, help_ in ROBOT_VERBS.items():  # parsed by robolearn.commands.robot (robolearn VERB --help)
        sub.add_parser(verb, add_help=False, help=help_).add_argument("args", nargs=argparse.REMAINDER)

    p = sub.add_parser("collect", add_help=False, help="collect demonstrations into an EpisodeStore "
                       "(robolearn collect --task lift --expert scripted --episodes N; --help for all options)")
    p.add_argument("args", nargs=argparse.REMAINDER)
    p.set_defaults(func=cmd_collect)

    sub.add_parser("bench", add_help=False, help="run a benchmark from scripts/ (robolearn bench: the list)"
                   ).add_argument("args", nargs=argparse.REMAINDER)

    p = sub.add_parser("convert", help="import a dataset into an EpisodeStore, or export one")
    p.add_argument("src", type=Path)
    p.add_argument("dst", type=Path)
    direction = p.add_mutually_exclusive_group()
    direction.add_argument("--from", dest="from_", choices=FORMATS,
                           help="format of SRC, imported into the EpisodeStore DST (default: robomimic for .hdf5/.h5 files, "
                                "else diffusion_policy)")
    direction.add_argument("--to", choices=FORMATS, help="export the EpisodeStore SRC to this format")
    p.add_argument("--task", help="task name recorded in the store")
    p.add_argument("--fps", type=float, help="control rate recorded in the store")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=cmd_convert)

    p = sub.add_parser("info", help="summarize an EpisodeStore")
    p.add_argument("store", type=Path)
    p.set_defaults(func=cmd_info)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in PASS_THROUGH:  # verbs with their own parser get their arguments untouched, in order
        args = argparse.Namespace(command=argv[0], args=argv[1:], func=PASS_THROUGH[argv[0]])
    else:
        args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (FileNotFoundError, FileExistsError, KeyError, IndexError, ValueError, PermissionError, ConnectionError) as err:
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        verb = f"{args.command} {args.action}" if getattr(args, "action", None) else args.command
        print(f"robolearn {verb}: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
