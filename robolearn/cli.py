"""The `robolearn` command: one entry point, one verb per job.

    robolearn demo   [overrides...]             the main job: train on Push-T for a few minutes, evaluate, report
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


def parse_assignments(assignments: Sequence[str], config_class: type, flag: str) -> dict[str, Any]:
    """`FIELD=VALUE` strings -> {field: YAML-parsed value}, every field checked against the dataclass."""
    import dataclasses

    import yaml

    fields = {f.name: f for f in dataclasses.fields(config_class)}
    changes = {}
    for item in assignments:
        key, sep, value = item.partition("=")
        if not sep or key not in fields:
            raise ValueError(f"{flag} expects FIELD=VALUE with a field of {config_class.__name__} "
                             f"({', '.join(sorted(fields))}); got {item!r}")
        changes[key] = _typed(key, yaml.safe_load(value), fields[key])
    return changes


def _typed(key: str, value: Any, spec: Any) -> Any:
    """A parsed value checked against the field's default: YAML reads 3e-4 as a string, a float field wants a
    number, and a wrong type is the user's mistake to name here rather than a TypeError deep in a config."""
    import dataclasses

    default = spec.default if spec.default is not dataclasses.MISSING else (
        spec.default_factory() if spec.default_factory is not dataclasses.MISSING else None)
    if isinstance(default, bool) or default is None:
        want: type | None = bool if isinstance(default, bool) else None
    else:
        want = next((t for t in (int, float, str, list, dict) if isinstance(default, t)), None)
    if want is None or (isinstance(value, want) and not (want is not bool and isinstance(value, bool))):
        return value
    if want is float and not isinstance(value, bool):
        try:
            return float(value)
        except (TypeError, ValueError):
            pass
    raise ValueError(f"{key} must be {want.__name__}, got {value!r}")


def with_overrides(config: Any, assignments: Sequence[str]) -> Any:
    """Inference-time settings (`scheduler=ddpm`, `num_inference_steps=4`, ...) applied to a policy config."""
    import dataclasses

    return dataclasses.replace(config, **parse_assignments(assignments, type(config), "--set"))  # re-validates


def cmd_eval(args: argparse.Namespace) -> int:
    from robolearn.eval.rollout import evaluate, format_report
    from robolearn.policies.checkpoint import load_policy, load_task

    steer_flags = [flag for flag, value in (("--k", args.k), ("--steer-mode", args.steer_mode), ("--beta", args.beta),
                                            ("--guidance", args.guidance)) if value is not None]
    if steer_flags and args.steer is None:
        raise ValueError(f"{', '.join(steer_flags)} only apply to steered evaluation: add --steer critic=PATH")
    if args.initial_observations is not None and args.imagine is None:
        raise ValueError("--initial-observations only applies with --imagine WORLD_MODEL")
    critic_path = parse_steer(args.steer) if args.steer is not None else None
    policy = load_policy(args.checkpoint, device=args.device if args.device != "auto" else None)
    task = load_task(args.checkpoint)
    policy.config = with_overrides(policy.config, args.set)
    extras: dict[str, dict[str, Any]] = {}
    if critic_path is not None:
        policy, extras["steering"] = steer(policy, critic_path, args)
    if args.imagine is not None:
        task, extras["imagination"] = imagined_task(policy, task, args.imagine, args.initial_observations, args.device)
    from robolearn.control.chunking import ChunkExecution

    if args.delay_steps is not None and args.execution != "rtc":
        raise ValueError("--delay-steps only applies with --execution rtc")
    execution = ChunkExecution(mode=args.execution, delay_steps=args.delay_steps)
    report = evaluate(policy, task, n_episodes=args.episodes, start_seed=args.seed, n_envs=args.n_envs,
                      n_workers=args.n_workers, video_path=args.video, video_episodes=args.video_episodes,
                      progress=not args.json, execution=execution)
    if "steering" in extras:  # what steering costs: one batched decision of K candidates, scored
        extras["steering"]["latency_ms_per_decision"] = report.inference_ms_per_chunk
    if args.json:
        print(json.dumps({**report.to_dict(), **extras}))
    else:
        print(format_report(report))
        for name, settings in extras.items():
            print(f"  {name}: " + ", ".join(f"{k}={v:.1f}" if isinstance(v, float) and k.endswith("_ms_per_decision")
                                          else f"{k}={v}" for k, v in settings.items()))
    return 0


# ----------------------------------------------------------------------------------------- steering and imagination
def parse_steer(spec: str) -> Path:
    """`--steer critic=PATH` -> PATH (the folder `robolearn critic train` wrote)."""
    key, sep, value = spec.partition("=")
    if key.strip() != "critic" or not sep or not value.strip():
        raise ValueError(f"--steer expects critic=PATH (a critic checkpoint folder from `robolearn critic train`), "
                         f"got {spec!r}")
    return Path(value.strip())


def steer(policy: Any, critic_path: Path, args: argparse.Namespace) -> tuple[Any, dict[str, Any]]:
    """The policy wrapped in a SteeredPolicy with the critic at `critic_path`, and the settings for the report."""
    from robolearn.eval.critic import load_critic
    from robolearn.eval.steering import SteeredPolicy

    critic = load_critic(critic_path, device=policy.device)
    k, mode = 16 if args.k is None else args.k, args.steer_mode or "argmax"
    beta, scale = 1.0 if args.beta is None else args.beta, 0.0 if args.guidance is None else args.guidance
    try:
        steered = SteeredPolicy(policy, critic, k=k, mode=mode, beta=beta, guidance_scale=scale)
    except (TypeError, ValueError, KeyError) as err:  # mismatched pair or settings: say which pair
        detail = err.args[0] if err.args else err
        raise ValueError(f"cannot steer {args.checkpoint} with critic {critic_path}: {detail}") from err
    settings = {"critic": str(critic_path), "critic_method": critic.config.method, "k": k, "mode": mode,
                **({"beta": beta} if mode == "softmax" else {}), "guidance_scale": scale}
    return steered, settings


def imagined_task(policy: Any, task: Any, world_model: Path, initial: Path | None,
                  device: str) -> tuple[Any, dict[str, Any]]:
    """The policy's task with its simulator swapped for an ImaginedEnv on `world_model`, starting from real initial
    observations: `initial`, else the store the world model was trained on (its checkpoint info), else the task's
    own dataset."""
    import dataclasses

    from robolearn.eval.world_model import KIND, WorldModelConfig
    from robolearn.nn.checkpoint_folder import config_from_record, read_checkpoint_record

    record = read_checkpoint_record(KIND, world_model)
    wm = config_from_record(KIND, WorldModelConfig, record["config"])
    pc = policy.config
    if wm.action_dim != pc.action_dim:
        raise ValueError(f"world model {world_model} takes {wm.action_dim}-dim actions, the policy gives {pc.action_dim}")
    for key, shape in pc.obs_shapes.items():
        if key not in wm.obs_shapes:
            raise ValueError(f"the policy observes {key!r}, which world model {world_model} does not predict (it "
                             f"predicts {sorted(wm.obs_shapes)}); train it with the policy's task")
        if list(wm.obs_shapes[key]) != list(shape):
            raise ValueError(f"observation {key!r}: world model {world_model} predicts shape {list(wm.obs_shapes[key])}, "
                             f"the policy expects {list(shape)}")
    if initial is None:
        recorded = record.get("info", {}).get("initial_observations")
        if recorded and Path(recorded).exists():
            initial = Path(recorded)
        else:
            from robolearn.data.sources import open_task_store

            initial = open_task_store(task, progress=False).path
    kwargs = {"world_model": str(world_model), "initial_observations": str(initial),
              **({"device": device} if device != "auto" else {})}
    imagined = dataclasses.replace(task, name=f"{task.name} (imagined)", env="robolearn.eval.imagination:ImaginedEnv",
                                   env_kwargs=kwargs, score_key="", expert="", expert_episodes=0)
    return imagined, {"world_model": str(world_model), "initial_observations": str(initial),
                      "max_episode_steps": wm.max_episode_steps}


# ----------------------------------------------------------------------------------------- critic and world model training
def task_by_name(name: str) -> Any:
    """configs/task/NAME.yaml as a TaskConfig."""
    import yaml

    from robolearn.task import TaskConfig

    folder = project_root() / "configs" / "task"
    path = folder / f"{name}.yaml"
    if "/" in name or not path.exists():
        known = ", ".join(sorted(p.stem for p in folder.glob("*.yaml")))
        raise FileNotFoundError(f"no task config {name!r} in {folder} (tasks: {known})")
    return TaskConfig(**yaml.safe_load(path.read_text()))


def model_config(group: str, name: str, config_class: type, overrides: Sequence[str], flag: str) -> dict[str, Any]:
    """configs/GROUP/NAME.yaml (its `name` only labels it) with FIELD=VALUE overrides applied, as keyword arguments."""
    import dataclasses

    import yaml

    folder = project_root() / "configs" / group
    path = folder / f"{name}.yaml"
    if "/" in name or not path.exists():
        known = ", ".join(sorted(p.stem for p in folder.glob("*.yaml")))
        raise FileNotFoundError(f"no {group} config {name!r} in {folder} (configs: {known})")
    values = {k: v for k, v in (yaml.safe_load(path.read_text()) or {}).items() if k != "name"}
    unknown = sorted(set(values) - {f.name for f in dataclasses.fields(config_class)})
    if unknown:
        raise ValueError(f"{path} sets {unknown}, which {config_class.__name__} does not have")
    return {**values, **parse_assignments(overrides, config_class, flag)}


def observed(values: dict[str, Any], task: Any, what: str) -> dict[str, Any]:
    """Fill in the task's observation keys and sources unless the overrides name them."""
    if not values.get("obs_keys"):
        if task is None:
            raise ValueError(f"{what} needs to know what is observed: pass --task NAME (or a --policy checkpoint), "
                             f"or set obs_keys=[...]")
        values = {**values, "obs_keys": list(task.obs_keys), "obs_sources": dict(task.obs_sources),
                  "action_key": task.action_key}
    return values


def final_losses(history: list[dict[str, float]]) -> str:
    if not history:
        return "no steps trained"
    last = history[-1]
    return f"step {int(last['step'])}: " + ", ".join(f"{k} {v:.4g}" for k, v in last.items() if k != "step")


def cmd_critic_train(args: argparse.Namespace) -> int:
    from robolearn.data.sources import open_task_store
    from robolearn.data.store import EpisodeStore
    from robolearn.eval.critic import CriticConfig, save_critic, train_critic

    values = model_config("critic", args.config, CriticConfig, args.overrides, "robolearn critic train")
    task = task_by_name(args.task) if args.task else None
    if args.policy is not None:  # score exactly the chunk the policy executes, from the history it keeps
        from robolearn.policies.checkpoint import read_record

        record = read_record(args.policy)
        given = {item.partition("=")[0] for item in args.overrides}
        values.update({k: record["config"][src] for k, src in (("n_obs_steps", "n_obs_steps"),
                                                               ("action_steps", "n_action_steps")) if k not in given})
        if task is None and record.get("task"):
            from robolearn.task import TaskConfig

            task = TaskConfig(**record["task"])
    values = observed(values, task, "robolearn critic train")
    store = EpisodeStore.open(args.dataset) if args.dataset else (
        open_task_store(task, progress=True) if task is not None else None)
    if store is None:
        raise ValueError("robolearn critic train needs data: pass --dataset STORE or --task NAME")
    config = CriticConfig(**values)
    config.log_every = max(1, min(config.log_every, config.steps))  # so the last record is the final losses
    task_name = task.name if task is not None else (store.task or Path(store.path).stem)
    out = args.out or Path("runs") / f"critic_{task_name}_{args.config}"
    print(f"training a {config.method} critic on {store.path}: {store.n_episodes} episodes, {store.n_steps} steps; "
          f"n_obs_steps {config.n_obs_steps}, action_steps {config.action_steps}, {config.steps} steps")
    history: list[dict[str, float]] = []
    critic = train_critic(store, config, progress=not args.no_progress, history=history)
    save_critic(critic, out, info={"task": task_name, "dataset": str(store.path), "config": args.config,
                                   "policy": str(args.policy) if args.policy else None,
                                   "final": history[-1] if history else {}})
    print(f"saved critic to {out}\n  final losses ({final_losses(history)})")
    return 0


def cmd_worldmodel_train(args: argparse.Namespace) -> int:
    from robolearn.data.sources import open_task_store
    from robolearn.data.store import EpisodeStore
    from robolearn.eval.world_model import WorldModelConfig, save_world_model, train_world_model

    values = model_config("world_model", args.config, WorldModelConfig, args.overrides, "robolearn worldmodel train")
    task = task_by_name(args.task) if args.task else None
    values = observed(values, task, "robolearn worldmodel train")
    if args.dataset:
        stores = [EpisodeStore.open(path) for path in args.dataset]
    elif task is not None:
        stores = [open_task_store(task, progress=True)]
    else:
        raise ValueError("robolearn worldmodel train needs data: pass --dataset STORE (repeatable) or --task NAME")
    config = WorldModelConfig(**values)
    config.log_every = max(1, min(config.log_every, config.steps))
    task_name = task.name if task is not None else (stores[0].task or Path(stores[0].path).stem)
    out = args.out or Path("runs") / f"world_model_{task_name}"
    print(f"training a world model on {', '.join(str(s.path) for s in stores)}: "
          f"{sum(s.n_episodes for s in stores)} episodes, {sum(s.n_steps for s in stores)} steps; {config.steps} steps")
    history: list[dict[str, float]] = []
    model = train_world_model(stores, config, progress=not args.no_progress, history=history)
    save_world_model(model, out, info={"task": task_name, "datasets": [str(s.path) for s in stores],
                                       "initial_observations": str(stores[0].path), "config": args.config,
                                       "final": history[-1] if history else {}})
    print(f"saved world model to {out}\n  final losses ({final_losses(history)})")
    return 0


def cmd_collect(args: argparse.Namespace) -> int:
    from robolearn.sim.collect import main as collect_in_sim

    if any(a == "--rig" or a.startswith("--rig=") for a in args.args):  # teleoperated, on a robot
        return cmd_robot(args)
    return collect_in_sim(args.args)


def cmd_robot(args: argparse.Namespace) -> int:
    from robolearn.robot_commands import run_command

    return run_command(args.command, args.args)


ROBOT_VERBS = {"teleop": "drive a robot from a teleop device (--rig sim_arm)",
               "deploy": "run a policy checkpoint on a robot (--rig sim_arm CHECKPOINT)",
               "replay": "send a recorded episode's actions to a robot again (--rig sim_arm STORE)"}
PASS_THROUGH = {"collect": cmd_collect, **dict.fromkeys(ROBOT_VERBS, cmd_robot)}


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
    p.add_argument("--execution", default="receding", metavar="receding|ensemble|rtc",
                   help="chunk execution: receding horizon, temporal ensembling (every step), or real-time chunking")
    p.add_argument("--delay-steps", type=int, default=None,
                   help="rtc only: inference latency to simulate, in control periods (default: the policy's chunk "
                        "is ready at once, which reproduces receding horizon)")
    p.add_argument("--device", default="auto")
    p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                   help="override a policy config field for this evaluation, e.g. scheduler=ddpm, "
                        "num_inference_steps=4, integrator=midpoint (repeatable)")
    p.add_argument("--video", type=Path, help="write a video of the first episodes here (.mp4)")
    p.add_argument("--video-episodes", type=int, default=4)
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
    p.set_defaults(func=cmd_eval)

    for verb, group, default, train, what in (
            ("critic", "critic", "iql", cmd_critic_train, "a critic of action chunks for steering"),
            ("worldmodel", "world_model", "latent", cmd_worldmodel_train, "a latent world model for imagined evaluation")):
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

    for verb, help_ in ROBOT_VERBS.items():  # parsed by robolearn.robot_commands (robolearn VERB --help)
        sub.add_parser(verb, add_help=False, help=help_).add_argument("args", nargs=argparse.REMAINDER)

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
    except (FileNotFoundError, FileExistsError, KeyError, IndexError, ValueError, PermissionError, ConnectionError) as err:
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        verb = f"{args.command} {args.action}" if getattr(args, "action", None) else args.command
        print(f"robolearn {verb}: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
