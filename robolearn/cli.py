"""The `robolearn` command: one entry point, one verb per job.

    robolearn demo   [overrides...]             the main job: train on Push-T for a few minutes, evaluate, report
    robolearn train  [overrides...]             train from configs/train.yaml (hydra overrides: key=value)
    robolearn eval   CHECKPOINT [--episodes N] [--json]
    robolearn collect --task lift [--episodes N]  scripted demonstrations in simulation into an EpisodeStore
    robolearn convert SRC DST [--from FORMAT | --to FORMAT]     formats: diffusion_policy zarr, robomimic HDF5
    robolearn info   STORE                      episodes, steps, keys of an EpisodeStore
"""
from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from robolearn.data.sources import project_root


def compose(config_name: str, overrides: Sequence[str]) -> dict[str, Any]:
    """Compose a hydra config from the project's configs/ folder into a plain dict."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from omegaconf import OmegaConf

    config_dir = project_root() / "configs"
    if not (config_dir / f"{config_name}.yaml").exists():
        raise FileNotFoundError(f"no config {config_name}.yaml in {config_dir}")
    with initialize_config_dir(config_dir=str(config_dir), version_base=None):
        cfg = hydra_compose(config_name=config_name, overrides=list(overrides))
    return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]


def run_training(config_name: str, overrides: Sequence[str], resume: bool) -> int:
    from robolearn.eval.rollout import format_report
    from robolearn.train import RunConfig, Trainer

    run = RunConfig.from_dict(compose(config_name, overrides))
    trainer = Trainer(run)
    if resume and trainer.resume():
        print(f"resumed {run.out_dir} at step {trainer.step}")
    n_params = sum(p.numel() for p in trainer.policy.parameters())
    print(f"training {run.policy_class.split(':')[-1]} ({n_params / 1e6:.1f} M params) on {run.task.name}: "
          f"{trainer.store.n_episodes} episodes, {len(trainer.windows)} windows, device {trainer.device}")
    report = trainer.fit()
    print(f"\nrun folder: {run.out_dir}\n  checkpoint          {trainer.checkpoint_dir}\n"
          f"  training            {trainer.step} steps in {trainer.train_seconds / 60:.1f} min")
    if report is not None:
        print(format_report(report))
    return 0


def with_overrides(config: Any, assignments: Sequence[str]) -> Any:
    """Inference-time settings (`scheduler=ddpm`, `num_inference_steps=4`, ...) applied to a policy config."""
    import dataclasses

    import yaml

    fields = {f.name for f in dataclasses.fields(config)}
    changes = {}
    for item in assignments:
        key, sep, value = item.partition("=")
        if not sep or key not in fields:
            raise ValueError(f"--set expects FIELD=VALUE with a field of {type(config).__name__} "
                             f"({', '.join(sorted(fields))}); got {item!r}")
        changes[key] = yaml.safe_load(value)
    return dataclasses.replace(config, **changes)  # re-runs the config's own validation


def cmd_eval(args: argparse.Namespace) -> int:
    from robolearn.eval.rollout import evaluate, format_report
    from robolearn.policies.checkpoint import load_policy, load_task

    policy = load_policy(args.checkpoint, device=args.device if args.device != "auto" else None)
    task = load_task(args.checkpoint)
    policy.config = with_overrides(policy.config, args.set)
    report = evaluate(policy, task, n_episodes=args.episodes, start_seed=args.seed, n_envs=args.n_envs,
                      n_workers=args.n_workers, video_path=args.video, video_episodes=args.video_episodes, progress=not args.json)
    if args.json:
        print(json.dumps(report.to_dict()))
    else:
        print(format_report(report))
    return 0


def cmd_collect(args: argparse.Namespace) -> int:
    from robolearn.sim.collect import main as collect_in_sim

    return collect_in_sim(args.args)


PASS_THROUGH = {"collect": cmd_collect}


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


def cmd_info(args: argparse.Namespace) -> int:
    from robolearn.data.store import EpisodeStore

    store = EpisodeStore.open(args.store)
    lengths = store.episode_lengths
    print(f"{store.path}: {store.n_episodes} episodes, {store.n_steps} steps, task={store.task}, fps={store.fps}")
    if len(lengths):
        print(f"  episode length: min {lengths.min()}, mean {lengths.mean():.1f}, max {lengths.max()}")
    for key, spec in store.specs.items():
        print(f"  {key:<16} {str(spec.shape):<16} {spec.dtype}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="robolearn", description="Learn robot manipulation policies.")
    sub = parser.add_subparsers(dest="command", required=True)

    for name, config, help_ in (("demo", "demo", "main job: train on Push-T for a few minutes and evaluate"),
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
    p.add_argument("--device", default="auto")
    p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                   help="override a policy config field for this evaluation, e.g. scheduler=ddpm, "
                        "num_inference_steps=4, integrator=midpoint (repeatable)")
    p.add_argument("--video", type=Path, help="write a video of the first episodes here (.mp4)")
    p.add_argument("--video-episodes", type=int, default=4)
    p.add_argument("--json", action="store_true", help="print one JSON object with the metrics")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("collect", add_help=False, help="collect demonstrations into an EpisodeStore "
                       "(robolearn collect --task lift --expert scripted --episodes N; --help for all options)")
    p.add_argument("args", nargs=argparse.REMAINDER)
    p.set_defaults(func=cmd_collect)

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
    except (FileNotFoundError, FileExistsError, KeyError, ValueError, PermissionError, ConnectionError) as err:
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"robolearn {args.command}: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
