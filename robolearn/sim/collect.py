"""Demonstrations from a scripted expert, written episode by episode into an EpisodeStore.

Resumable: episode i always uses seed `seed_start + i`, and every finished episode is committed atomically, so
a run killed at any point (even SIGKILL) leaves a readable store of the episodes done so far, and running the
same command again continues at the next episode. Failed expert episodes are kept (success=False in their
metadata) rather than dropped, so the store says exactly how good its demonstrations are.

The command line is robolearn.commands.collect (`robolearn collect --task lift --episodes 200`).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from robolearn.data.store import EpisodeStore
from robolearn.env import Env
from robolearn.paths import datasets_dir
from robolearn.task import TaskConfig

EXPERT_KINDS = ("scripted", "degraded")  # degraded: the scripted expert with a failure mode (experts/degraded.py)


def _make_expert(kind: str, env: Env, options: dict[str, Any] | None = None) -> Any:
    from robolearn.sim.experts import make_degraded_expert, make_expert
    from robolearn.sim.robosuite_env import RobosuiteEnv

    if kind not in EXPERT_KINDS:
        raise ValueError(f"unknown expert {kind!r}; expected one of {EXPERT_KINDS}")
    if not isinstance(env, RobosuiteEnv):
        raise ValueError(f"scripted experts exist for the robosuite tasks only; this task's env is {type(env).__name__}")
    if kind == "degraded":
        return make_degraded_expert(env.task, env, **(options or {}))
    if options:
        raise ValueError(f"the scripted expert takes no options, got {sorted(options)}")
    return make_expert(env.task, env)


def _store_attrs(task: TaskConfig, env: Env, expert: str, seed_start: int,
                 options: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"source": f"{expert} expert", "expert": expert, "seed_start": int(seed_start), "env": task.env,
            "env_kwargs": dict(task.env_kwargs), "action_mode": getattr(env, "action_mode", None),
            "obs_keys": sorted(env.spec.obs), "action_meaning": env.spec.action_meaning,
            "expert_options": dict(options or {})}


def _open_for_resume(out: Path, task: TaskConfig, attrs: dict[str, Any]) -> EpisodeStore:
    """Open an existing store to continue it, refusing one made for another task, action mode or seed sequence."""
    store = EpisodeStore.open(out, mode="a")
    have = store.attrs
    problems = []
    if store.task != task.name:
        problems.append(f"it belongs to task {store.task!r}, not {task.name!r}")
    for key in ("action_mode", "obs_keys", "expert", "seed_start", "expert_options"):
        if key in have and have[key] != attrs[key]:
            problems.append(f"its {key} is {have[key]!r}, this run's is {attrs[key]!r}")
    if problems:
        store.close()  # release the writer's lock: the user may fix the command and run it again at once
        raise ValueError(f"cannot continue the collection in {out}: {'; '.join(problems)}. "
                         f"Choose another --out, or delete {out} to start over.")
    return store


def _create(out: Path, task: TaskConfig, fps: float, attrs: dict[str, Any]) -> EpisodeStore:
    """A new empty store, built under a temporary name and renamed into place (EpisodeStore.build), so a crash
    leaves nothing half-made; episodes are then appended to it one by one."""
    with EpisodeStore.build(out, fps=fps, task=task.name) as store:
        store.set_attrs(**attrs)
    return EpisodeStore.open(out, mode="a")


def run_episode(env: Env, expert: Any, seed: int) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """One expert episode: time-major arrays (obs before each action, the action, its reward) and its metadata."""
    obs = env.reset(seed=seed)
    expert.reset()
    frames: dict[str, list[np.ndarray]] = {key: [] for key in env.spec.obs}
    actions, rewards = [], []
    done, info = False, {"success": False}
    while not done:
        action = np.asarray(expert.act(obs), dtype=np.float32)
        for key in frames:
            frames[key].append(obs[key])
        next_obs, reward, done, info = env.step(action)
        actions.append(action)
        rewards.append(reward)
        obs = next_obs
    data = {key: np.stack(values) for key, values in frames.items()}
    data["action"] = np.stack(actions)
    data["reward"] = np.asarray(rewards, dtype=np.float32)
    meta = {"seed": int(seed), "success": bool(info["success"]), "return": float(np.sum(rewards))}
    if hasattr(expert, "episode_info"):  # e.g. which mistake a degraded expert made in this episode
        meta.update(expert.episode_info())
    return data, meta


def collect(task: TaskConfig, n_episodes: int, out: Path, expert: str = "scripted", seed_start: int = 0,
            progress: bool = True, expert_options: dict[str, Any] | None = None) -> EpisodeStore:
    """Run the task's expert until `out` holds `n_episodes` episodes (episode i: seed seed_start + i).

    `expert_options` go to the degraded expert (e.g. {"failure": "early_close", "p": 0.5})."""
    from tqdm import tqdm

    if n_episodes < 1:
        raise ValueError(f"n_episodes must be >= 1, got {n_episodes}")
    if expert not in EXPERT_KINDS:
        raise ValueError(f"unknown expert {expert!r}; expected one of {EXPERT_KINDS}")
    out = Path(out)
    env = task.make_env()
    try:
        policy = _make_expert(expert, env, expert_options)
        attrs = _store_attrs(task, env, expert, seed_start, expert_options)
        resume = out.exists() and any(out.iterdir())
        # the writer's lock is held until the last episode is in, and released even if the expert crashes
        with _open_for_resume(out, task, attrs) if resume else _create(out, task, env.spec.control_hz, attrs) as store:
            done = store.n_episodes
            failed = sum(not store.episode_meta(i).get("success", False) for i in range(done))
            bar = tqdm(total=n_episodes, initial=min(done, n_episodes), desc=f"collect {task.name}", unit="ep",
                       disable=not progress)
            for i in range(done, n_episodes):
                data, meta = run_episode(env, policy, seed_start + i)
                store.append_episode(data, expert=expert, **meta)
                failed += not meta["success"]
                bar.update(1)
                bar.set_postfix(failed=failed, steps=len(data["action"]))
            bar.close()
            total = store.n_episodes
    finally:
        env.close()
    if progress:
        print(f"{out}: {total} episodes, {total - failed} successful, {failed} failed (kept, success=False)")
    return EpisodeStore.open(out)


def collect_for_task(task: TaskConfig, out: Path, progress: bool = True) -> EpisodeStore:
    """A sim task's missing demonstrations, made by its scripted expert (open_task_store's `make_missing`)."""
    print(f"no dataset {task.dataset!r} found: collecting {task.expert_episodes} {task.expert} demonstrations into {out}")
    return collect(task, n_episodes=task.expert_episodes, out=out, expert=task.expert, progress=progress)


def default_out(task_name: str, action_mode: str | None, config_mode: str | None, expert: str = "scripted") -> Path:
    """datasets/<task>_<expert>.episodes.zarr (scripted: the name the task config looks for); another action mode
    than the config's gets its own name, so a delta-action task never trains on absolute actions by accident."""
    suffix = "" if action_mode == config_mode else f"_{action_mode}"
    return datasets_dir() / f"{task_name}_{expert}{suffix}.episodes.zarr"
