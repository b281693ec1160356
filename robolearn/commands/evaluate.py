"""`robolearn eval`: a checkpoint in its task's simulator, steered by a critic (--steer) or inside a world model
(--imagine), with any chunk execution mode."""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

from robolearn.commands.arguments import (
    EXECUTION_MODES,
    add_energy_gate_arguments,
    check_device,
    non_negative_int,
    positive_int,
)
from robolearn.config_files import with_overrides
from robolearn.env import observation_mismatches


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="evaluate a checkpoint in its task's simulator (or steered, or imagined)",
                       description="Evaluate a policy checkpoint: batched rollouts from fixed seeds, success rate with "
                                   "a Wilson interval, score with a t interval.")
    p.add_argument("checkpoints", type=Path, nargs="+", metavar="CHECKPOINT",
                   help="checkpoint folder (with policy.json and model.safetensors); several are composed into one "
                        "policy (--compose-weights or --compose-search)")
    p.add_argument("--episodes", type=positive_int, default=50)
    p.add_argument("--seed", type=int, default=100_000, help="seed of the first episode (episode i: seed + i)")
    p.add_argument("--n-envs", type=positive_int, default=50, help="envs stepped together, one batched policy call")
    p.add_argument("--n-workers", type=non_negative_int, default=0,
                   help="worker processes stepping the envs in parallel (0: in this process; worth it for robosuite)")
    p.add_argument("--execution", default="receding", metavar="|".join(EXECUTION_MODES),
                   help="chunk execution: receding horizon, temporal ensembling (every step), or real-time chunking")
    p.add_argument("--delay-steps", type=non_negative_int, default=None,
                   help="rtc only: inference latency to simulate, in control periods (default: the policy's chunk "
                        "is ready at once)")
    p.add_argument("--blend-steps", type=non_negative_int, default=None,
                   help="rtc only: steps of a new chunk blended with the old one (default: the whole overlap; 0: switch "
                        "at once, which with --delay-steps 0 reproduces receding horizon)")
    add_energy_gate_arguments(p)
    p.add_argument("--device", default="auto", help="torch device for the policy (auto: cuda when present)")
    p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                   help="override a policy config field for this evaluation, e.g. scheduler=ddpm, "
                        "num_inference_steps=4, integrator=midpoint (repeatable)")
    p.add_argument("--video", type=Path, help="write a video of the first episodes here (.mp4)")
    p.add_argument("--video-episodes", type=non_negative_int, default=4)
    p.add_argument("--record", type=Path, metavar="STORE",
                   help="record every episode into this store (created, or added to): rollouts for world models and critics")
    p.add_argument("--json", action="store_true", help="print one JSON object with the metrics (strict JSON: no NaN)")
    steering = p.add_argument_group("value-guided steering (robolearn.eval.steering)")
    steering.add_argument("--steer", metavar="critic=PATH",
                          help="choose among the policy's candidate chunks with this critic (robolearn critic train)")
    steering.add_argument("--k", type=positive_int, help="candidate chunks per decision (default 16)")
    steering.add_argument("--steer-mode", choices=("argmax", "softmax"), help="pick the best, or draw by softmax(Q/beta)")
    steering.add_argument("--beta", type=float, help="softmax temperature (default 1)")
    steering.add_argument("--guidance", type=float, metavar="SCALE",
                          help="also push samples up the critic's gradient while sampling (diffusion and flow heads)")
    composition = p.add_argument_group("composition of several checkpoints (robolearn.policies.compose)")
    composition.add_argument("--compose-weights", type=weight_list, metavar="W1,W2,...",
                             help="convex weights of the checkpoints' per-step predictions, e.g. 0.3,0.7")
    composition.add_argument("--compose-search", type=positive_int, nargs="?", const=4, metavar="RESOLUTION",
                             help="choose the weights on a grid of steps 1/RESOLUTION (default 4) by success on "
                                  "search seeds, in the simulator or in --imagine's world model")
    composition.add_argument("--search-episodes", type=positive_int, default=10, help="episodes per searched weight")
    composition.add_argument("--search-seed", type=int, default=200_000,
                             help="first search seed; search seeds must not overlap the reported ones")
    imagination = p.add_argument_group("imagination (robolearn.eval.imagination)")
    imagination.add_argument("--imagine", type=Path, metavar="WORLD_MODEL",
                             help="evaluate inside this world model (robolearn worldmodel train) instead of the simulator")
    imagination.add_argument("--initial-observations", type=Path, metavar="STORE",
                             help="store whose episodes' first frames start imagined episodes (default: the world "
                                  "model's training store, else the task's dataset)")
    p.set_defaults(func=cmd_eval)


def strict_json(value: Any) -> str:
    """One line of JSON every parser reads: NaN and infinities (an empty interval, no score) become null."""
    def finite(v: Any) -> Any:
        if type(v).__module__ == "numpy" and hasattr(v, "item"):  # a numpy scalar
            v = v.item()
        if isinstance(v, float) and not math.isfinite(v):
            return None
        if isinstance(v, dict):
            return {k: finite(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [finite(x) for x in v]
        return v
    return json.dumps(finite(value), allow_nan=False)


def cmd_eval(args: argparse.Namespace) -> int:
    from robolearn.control.chunking import ChunkExecution
    from robolearn.eval.rollout import evaluate, format_report
    from robolearn.policies.checkpoint import load_policy, load_task
    from robolearn.policies.compose import ComposedPolicy

    steer_flags = [flag for flag, value in (("--k", args.k), ("--steer-mode", args.steer_mode), ("--beta", args.beta),
                                            ("--guidance", args.guidance)) if value is not None]
    if steer_flags and args.steer is None:
        raise ValueError(f"{', '.join(steer_flags)} only apply to steered evaluation: add --steer critic=PATH")
    if args.initial_observations is not None and args.imagine is None:
        raise ValueError("--initial-observations only applies with --imagine WORLD_MODEL")
    if (args.delay_steps is not None or args.blend_steps is not None) and args.execution != "rtc":
        raise ValueError("--delay-steps and --blend-steps only apply with --execution rtc")
    composing = check_composition(args)
    critic_path = parse_steer(args.steer) if args.steer is not None else None
    check_device(args.device, "--device")
    args.checkpoint = args.checkpoints[0]  # the task, steering messages and recordings name the first
    parents = [load_policy(c, device=args.device if args.device != "auto" else None) for c in args.checkpoints]
    task = load_task(args.checkpoint)
    for checkpoint in args.checkpoints[1:]:
        other = load_task(checkpoint).name
        if other != task.name:
            raise ValueError(f"{checkpoint} was trained on task {other!r}, {args.checkpoint} on {task.name!r}: "
                             f"composed checkpoints must share their task")
    for parent in parents:
        parent.config = with_overrides(parent.config, args.set)
    policy = parents[0]
    extras: dict[str, dict[str, Any]] = {}
    execution = ChunkExecution(mode=args.execution, delay_steps=args.delay_steps, blend_steps=args.blend_steps,
                               energy_threshold=args.energy_threshold, energy_replans=args.energy_replans)
    if args.imagine is not None:  # checked against every key the (composed) policy reads
        reader = policy if not composing else ComposedPolicy(parents, [1.0 / len(parents)] * len(parents))
        task, extras["imagination"] = imagined_task(reader, task, args.imagine, args.initial_observations, args.device)
    if composing:
        policy, extras["composition"] = compose(parents, task, args, execution)
    if critic_path is not None:
        policy, extras["steering"] = steer(policy, critic_path, args)
    record = rollout_store(args.record, task, args.checkpoint) if args.record is not None else None
    try:
        report = evaluate(policy, task, n_episodes=args.episodes, start_seed=args.seed, n_envs=args.n_envs,
                          n_workers=args.n_workers, video_path=args.video, video_episodes=args.video_episodes,
                          progress=not args.json, execution=execution, record=record)
    finally:
        if record is not None:
            record.close()  # the write lock goes now, not when the handle is collected
    if "steering" in extras:  # what steering costs: one batched decision of K candidates, scored
        extras["steering"]["latency_ms_per_decision"] = report.inference_ms_per_chunk
    if args.json:
        print(strict_json({**report.to_dict(), **extras}))
    else:
        print(format_report(report))
        for name, settings in extras.items():
            print(f"  {name}: " + ", ".join(f"{k}={v:.1f}" if isinstance(v, float) and k.endswith("_ms_per_decision")
                                          else f"{k}={v}" for k, v in settings.items()))
    return 0


def weight_list(text: str) -> list[float]:
    """`0.3,0.7` -> [0.3, 0.7] (checked convex when the policies are composed)."""
    try:
        return [float(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers like 0.3,0.7, got {text!r}") from None


def check_composition(args: argparse.Namespace) -> bool:
    """Whether the checkpoints are composed, with the flags that must come with it."""
    n = len(args.checkpoints)
    if args.compose_weights is not None and args.compose_search is not None:
        raise ValueError("give --compose-weights or --compose-search, not both")
    if n == 1:
        if args.compose_weights is not None or args.compose_search is not None:
            raise ValueError("--compose-weights and --compose-search compose several checkpoints; give two or more")
        return False
    if args.compose_weights is None and args.compose_search is None:
        raise ValueError(f"{n} checkpoints are composed into one policy: give --compose-weights W1,...,W{n} or "
                         f"--compose-search")
    if args.compose_weights is not None and len(args.compose_weights) != n:
        raise ValueError(f"--compose-weights has {len(args.compose_weights)} weights for {n} checkpoints")
    return True


def compose(parents: list[Any], task: Any, args: argparse.Namespace, execution: Any) -> tuple[Any, dict[str, Any]]:
    """The parents composed with the given weights, or with the weights the search found on its own seeds."""
    from robolearn.eval.compose_search import search_weights
    from robolearn.policies.compose import ComposedPolicy

    settings: dict[str, Any] = {"checkpoints": [str(c) for c in args.checkpoints]}
    if args.compose_weights is not None:
        weights = args.compose_weights
    else:
        weights, rows = search_weights(parents, task, resolution=args.compose_search, episodes=args.search_episodes,
                                       seed=args.search_seed, reported_seeds=range(args.seed, args.seed + args.episodes),
                                       n_envs=args.n_envs, n_workers=args.n_workers, execution=execution)
        settings["search"] = {"seeds": f"{args.search_seed}..{args.search_seed + args.search_episodes - 1}",
                              "rows": [{"weights": list(r.weights), "success_rate": r.success_rate, "score": r.score}
                                       for r in rows]}
    policy = ComposedPolicy(parents, weights)
    settings["weights"] = [float(w) for w in weights]
    return policy, settings


def rollout_store(path: Path, task: Any, checkpoint: Path) -> Any:
    """The store evaluation episodes are recorded into: a new one, or one that already holds this task's rollouts."""
    from robolearn.data.store import EpisodeStore

    if path.exists() and any(path.iterdir()):
        store = EpisodeStore.open(path, mode="a")
        if store.task != task.name:
            store.close()
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
    from robolearn.eval.steering import SteeredPolicy
    from robolearn.models.critic import load_critic

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
