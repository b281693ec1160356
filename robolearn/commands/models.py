"""`robolearn critic train` and `robolearn worldmodel train`: the evaluation models, from configs/critic/ and
configs/world_model/ with FIELD=VALUE overrides."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from robolearn.config_files import model_config, task_by_name


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
    print(f"training the {config.method} critic on {store.path}: {store.n_episodes} episodes, {store.n_steps} steps; "
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
    from robolearn.models.world_model import WorldModelConfig, save_world_model, train_world_model

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
