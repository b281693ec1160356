"""`robolearn eval`: a checkpoint in its task's simulator, steered by a critic (--steer) or inside a world model
(--imagine), with any chunk execution mode."""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from robolearn.config_files import with_overrides
from robolearn.env import observation_mismatches


def cmd_eval(args: argparse.Namespace) -> int:
    from robolearn.control.chunking import ChunkExecution
    from robolearn.eval.rollout import evaluate, format_report
    from robolearn.policies.checkpoint import load_policy, load_task

    steer_flags = [flag for flag, value in (("--k", args.k), ("--steer-mode", args.steer_mode), ("--beta", args.beta),
                                            ("--guidance", args.guidance)) if value is not None]
    if steer_flags and args.steer is None:
        raise ValueError(f"{', '.join(steer_flags)} only apply to steered evaluation: add --steer critic=PATH")
    if args.initial_observations is not None and args.imagine is None:
        raise ValueError("--initial-observations only applies with --imagine WORLD_MODEL")
    if (args.delay_steps is not None or args.blend_steps is not None) and args.execution != "rtc":
        raise ValueError("--delay-steps and --blend-steps only apply with --execution rtc")
    critic_path = parse_steer(args.steer) if args.steer is not None else None
    policy = load_policy(args.checkpoint, device=args.device if args.device != "auto" else None)
    task = load_task(args.checkpoint)
    policy.config = with_overrides(policy.config, args.set)
    extras: dict[str, dict[str, Any]] = {}
    if critic_path is not None:
        policy, extras["steering"] = steer(policy, critic_path, args)
    if args.imagine is not None:
        task, extras["imagination"] = imagined_task(policy, task, args.imagine, args.initial_observations, args.device)
    execution = ChunkExecution(mode=args.execution, delay_steps=args.delay_steps, blend_steps=args.blend_steps)
    record = rollout_store(args.record, task, args.checkpoint) if args.record is not None else None
    report = evaluate(policy, task, n_episodes=args.episodes, start_seed=args.seed, n_envs=args.n_envs,
                      n_workers=args.n_workers, video_path=args.video, video_episodes=args.video_episodes,
                      progress=not args.json, execution=execution, record=record)
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


def rollout_store(path: Path, task: Any, checkpoint: Path) -> Any:
    """The store evaluation episodes are recorded into: a new one, or one that already holds this task's rollouts."""
    from robolearn.data.store import EpisodeStore

    if path.exists() and any(path.iterdir()):
        store = EpisodeStore.open(path, mode="a")
        if store.task != task.name:
            raise ValueError(f"{path} holds episodes of task {store.task!r}, not {task.name!r}; record into another store")
        return store
    path.parent.mkdir(parents=True, exist_ok=True)
    return EpisodeStore.create(path, fps=task.spec().control_hz, task=task.name,
                               attrs={"source": "policy rollouts", "policy": str(checkpoint)})


def parse_steer(spec: str) -> Path:
    """`--steer critic=PATH` -> PATH (the folder `robolearn critic train` wrote)."""
    key, sep, value = spec.partition("=")
    if key.strip() != "critic" or not sep or not value.strip():
        raise ValueError(f"--steer expects critic=PATH (a critic checkpoint folder from `robolearn critic train`), "
                         f"got {spec!r}")
    return Path(value.strip())


def steer(policy: Any, critic_path: Path, args: argparse.Namespace) -> tuple[Any, dict[str, Any]]:
    """The policy wrapped in a SteeredPolicy with the critic at `critic_path`, and the settings for the report."""
    from robolearn.models.critic import load_critic
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

    from robolearn.models.world_model import KIND, WorldModelConfig
    from robolearn.nn.checkpoint_folder import config_from_record, read_checkpoint_record

    record = read_checkpoint_record(KIND, world_model)
    wm = config_from_record(KIND, WorldModelConfig, record["config"])
    pc = policy.config
    if wm.action_dim != pc.action_dim:
        raise ValueError(f"world model {world_model} takes {wm.action_dim}-dim actions, the policy gives {pc.action_dim}")
    problems = observation_mismatches(pc.obs_shapes, wm.obs_shapes, "the policy", f"world model {world_model}")
    if problems:
        raise ValueError(f"{'; '.join(problems)}: train the world model on the policy's task")
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
