"""`robolearn critic train` and `robolearn worldmodel train`: the evaluation models, from configs/critic/ and
configs/world_model/ with FIELD=VALUE overrides."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from robolearn.commands.arguments import check_counts, check_device
from robolearn.config_files import model_config, task_by_name

# the smallest value each count of CriticConfig / WorldModelConfig may take (0 steps: an untrained model)
MODEL_COUNTS = {"steps": 0, "batch_size": 1, "log_every": 1}


def register(sub: argparse._SubParsersAction) -> None:
    for verb, group, default, train, what in (
            ("critic", "critic", "iql", cmd_critic_train, "a critic of action chunks for steering"),
            ("worldmodel", "world_model", "latent", cmd_worldmodel_train, "a latent world model for imagined evaluation")):
        p = sub.add_parser(verb, help=f"train {what}", description=f"Train {what}.")
        actions = p.add_subparsers(dest="action", required=True, metavar="train")
        t = actions.add_parser("train", help=f"train {what} (config: configs/{group}/NAME.yaml)",
                               description=f"Train {what} from configs/{group}/NAME.yaml with FIELD=VALUE overrides.")
        t.add_argument("overrides", nargs="*", metavar="FIELD=VALUE",
                       help="config overrides, e.g. steps=2000 batch_size=128 device=cpu")
        t.add_argument("--task", help="task config name (configs/task/NAME.yaml): observed keys and its dataset")
        t.add_argument("--config", default=default, help=f"configs/{group}/NAME.yaml (default {default})")
        t.add_argument("--out", type=Path, help=f"output folder (default runs/{group}_<task>"
                                                f"{'_<config>' if verb == 'critic' else ''})")
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


def build_config(config_class: type, values: dict[str, Any], group: str, args: argparse.Namespace) -> Any:
    """The model's config, every field checked by name and type, its counts checked before any data is read."""
    from robolearn.typed_config import dataclass_from_dict

    config = dataclass_from_dict(config_class, values, f"configs/{group}/{args.config}.yaml with overrides")
    check_counts(config, MODEL_COUNTS, f"{config_class.__name__}")
    check_device(config.device, "device=")
    config.log_every = max(1, min(config.log_every, config.steps))  # so the last record is the final losses
    return config


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
    return _on_every_rank(_critic_train, args)


def cmd_worldmodel_train(args: argparse.Namespace) -> int:
    return _on_every_rank(_worldmodel_train, args)


def _on_every_rank(job, args: argparse.Namespace) -> int:
    """Under torchrun (`torchrun --nproc_per_node=N -m robolearn critic train ...`) every rank runs the job in one
    process group (joined once the config names the device): TrainLoop steps DDP on each rank's share of the
    global batch_size; rank 0 prints and saves."""
    from robolearn.train.distributed import shutdown

    try:
        return job(args)
    finally:
        shutdown()


def _join(config: Any) -> bool:
    """Join torchrun's process group (if launched by it) on the config's device; True on the rank that speaks."""
    from robolearn.train.distributed import init_world

    world, _ = init_world(config.device)
    return world.is_main


def _critic_train(args: argparse.Namespace) -> int:
    from robolearn.data.sources import open_task_store
    from robolearn.data.store import EpisodeStore
    from robolearn.models.critic import CriticConfig, save_critic, train_critic

    values = model_config("critic", args.config, CriticConfig, args.overrides, "robolearn critic train")
    task = task_by_name(args.task) if args.task else None
    if args.policy is not None:  # score exactly the chunk the policy executes, from the history it keeps
        from robolearn.policies.checkpoint import read_record

        record = read_record(args.policy)
        given = {item.partition("=")[0] for item in args.overrides}
        values.update({k: record["config"][src] for k, src in (("n_obs_steps", "n_obs_steps"),
                                                               ("action_steps", "n_action_steps")) if k not in given})
        if task is None and record.get("task"):
            from robolearn.policies.checkpoint import load_task

            task = load_task(args.policy)
    values = observed(values, task, "robolearn critic train")
    config = build_config(CriticConfig, values, "critic", args)
    is_main = _join(config)
    store = EpisodeStore.open(args.dataset) if args.dataset else (
        open_task_store(task, progress=True) if task is not None else None)
    if store is None:
        raise ValueError("robolearn critic train needs data: pass --dataset STORE or --task NAME")
    task_name = task.name if task is not None else (store.task or Path(store.path).stem)
    out = args.out or Path("runs") / f"critic_{task_name}_{args.config}"
    say = print if is_main else (lambda *_: None)
    say(f"training the {config.method} critic on {store.path}: {store.n_episodes} episodes, {store.n_steps} steps; "
          f"n_obs_steps {config.n_obs_steps}, action_steps {config.action_steps}, {config.steps} steps")
    history: list[dict[str, float]] = []
    critic = train_critic(store, config, progress=not args.no_progress, history=history)
    if not is_main:
        return 0
    save_critic(critic, out, info={"task": task_name, "dataset": str(store.path), "config": args.config,
                                   "policy": str(args.policy) if args.policy else None,
                                   "final": history[-1] if history else {}})
    say(f"saved critic to {out}\n  final losses ({final_losses(history)})")
    return 0


def _worldmodel_train(args: argparse.Namespace) -> int:
    from robolearn.data.sources import open_task_store
    from robolearn.data.store import EpisodeStore
    from robolearn.models.world_model import WorldModelConfig, save_world_model, train_world_model

    values = model_config("world_model", args.config, WorldModelConfig, args.overrides, "robolearn worldmodel train")
    task = task_by_name(args.task) if args.task else None
    values = observed(values, task, "robolearn worldmodel train")
    config = build_config(WorldModelConfig, values, "world_model", args)
    is_main = _join(config)
    if args.dataset:
        stores = [EpisodeStore.open(path) for path in args.dataset]
    elif task is not None:
        stores = [open_task_store(task, progress=True)]
    else:
        raise ValueError("robolearn worldmodel train needs data: pass --dataset STORE (repeatable) or --task NAME")
    task_name = task.name if task is not None else (stores[0].task or Path(stores[0].path).stem)
    out = args.out or Path("runs") / f"world_model_{task_name}"
    say = print if is_main else (lambda *_: None)
    say(f"training a world model on {', '.join(str(s.path) for s in stores)}: "
          f"{sum(s.n_episodes for s in stores)} episodes, {sum(s.n_steps for s in stores)} steps; {config.steps} steps")
    history: list[dict[str, float]] = []
    model = train_world_model(stores, config, progress=not args.no_progress, history=history)
    if not is_main:
        return 0
    save_world_model(model, out, info={"task": task_name, "datasets": [str(s.path) for s in stores],
                                       "initial_observations": str(stores[0].path), "config": args.config,
                                       "final": history[-1] if history else {}})
    say(f"saved world model to {out}\n  final losses ({final_losses(history)})")
    return 0
