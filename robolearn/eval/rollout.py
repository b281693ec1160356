"""Evaluate a policy in simulation: N episodes from fixed seeds, success rate and score with 95 % intervals.

Episode i always uses seed `start_seed + i`, so two policies evaluated with the same settings face the same
initial states, whatever the batch size. Envs run in batches of `n_envs` served by one policy call per
replanning step, in this process or (n_workers > 0) in worker processes that step in parallel. An episode
cut short by a crashed or hung worker is run once more from its seed at the end, so a flaky simulator costs
time, not correctness.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from robolearn.control.chunking import ChunkExecution
from robolearn.control.clock import RealTimeClock
from robolearn.control.loop import ControlLoop, EpisodeResult
from robolearn.control.recorder import EpisodeRecorder
from robolearn.data.store import EpisodeStore
from robolearn.env import SerialVectorEnv
from robolearn.eval.statistics import bootstrap_mean_interval, wilson_interval
from robolearn.eval.video import tile_frames, write_video
from robolearn.policies.base import Policy
from robolearn.sim.vector_env import SubprocVectorEnv
from robolearn.task import TaskConfig

DEFAULT_START_SEED = 100_000  # held-out seeds, as in Diffusion Policy's test episodes


@dataclass
class EvalReport:
    task: str
    n_episodes: int
    start_seed: int
    success_rate: float
    success_low: float
    success_high: float
    score_key: str
    score_mean: float | None
    score_low: float | None
    score_high: float | None
    max_reward_mean: float
    max_reward_low: float
    max_reward_high: float
    mean_steps: float
    wall_s: float
    inference_ms_per_chunk: float
    video: str | None = None
    execution: str = "receding"  # how action chunks were executed (ChunkExecution.mode)
    worker_restarts: int = 0  # worker processes replaced (or envs rebuilt) after a crash, hang or exception
    rerun_episodes: int = 0  # episodes cut short by a worker failure and run again from their seed
    episodes: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self, with_episodes: bool = False) -> dict[str, Any]:
        d = asdict(self)
        if not with_episodes:
            d.pop("episodes")
        return d


class _TimedPolicy:
    """Wraps a policy's `act` to measure time per chunk (synchronizing CUDA so the time is real)."""

    def __init__(self, policy: Policy):
        self.policy, self.config, self.total_s, self.calls = policy, policy.config, 0.0, 0

    def _timed(self, call, *args, **kwargs):
        t0 = time.perf_counter()
        out = call(*args, **kwargs)
        if self.policy.device.type == "cuda":
            torch.cuda.synchronize()
        self.total_s += time.perf_counter() - t0
        self.calls += 1
        return out

    def act(self, obs, generator=None):  # receding horizon
        return self._timed(self.policy.act, obs, generator=generator)

    def sample(self, obs, n=1, generator=None):  # temporal ensembling and real-time chunking
        return self._timed(self.policy.sample, obs, n=n, generator=generator)


def evaluate(policy: Policy, task: TaskConfig, n_episodes: int = 50, start_seed: int = DEFAULT_START_SEED,
             n_envs: int = 50, video_path: str | Path | None = None, video_episodes: int = 4,
             sample_seed: int = 0, progress: bool = True, n_workers: int = 0,
             execution: ChunkExecution | None = None, record: EpisodeStore | None = None) -> EvalReport:
    """Run `n_episodes` episodes from seeds start_seed.. and summarize them.

    n_workers=0 steps the envs in this process; n_workers > 0 spreads them over that many worker processes
    (at most n_envs), worth it when a step costs more than a round trip (robosuite, rendered images).
    `execution` picks how chunks are executed (receding horizon by default, temporal ensembling, or real-time
    chunking; give rtc a `delay_steps` to simulate inference latency deterministically). A task on a robot
    (TaskConfig.on_robot) runs one env on a real-time clock at the rig's rate: episodes take their real duration.
    `record`, a writable store, receives every episode (observations, actions, rewards, timestamps, seed and
    success): rollouts to train world models and critics on.
    """
    if n_episodes < 1:
        raise ValueError(f"n_episodes must be >= 1, got {n_episodes}")
    if n_workers < 0:
        raise ValueError(f"n_workers must be >= 0 (0: step envs in this process), got {n_workers}")
    policy.eval()
    timed = _TimedPolicy(policy)
    generator = torch.Generator(device=policy.device).manual_seed(sample_seed)
    n_envs = 1 if task.on_robot else max(1, min(n_envs, n_episodes))
    if task.on_robot and n_workers > 0:
        raise ValueError(f"task {task.name!r} runs on a robot: evaluate it in this process (n_workers=0)")
    if n_workers > 0:
        envs: SerialVectorEnv | SubprocVectorEnv = SubprocVectorEnv.from_task(task, n_envs, min(n_workers, n_envs))
    else:
        envs = SerialVectorEnv([task.make_env() for _ in range(n_envs)])
    spec = envs.spec
    recorder = EpisodeRecorder(record, obs_keys=list(spec.obs), meta={"task": task.name}) if record is not None else None
    results: list[EpisodeResult] = []
    reruns: list[int] = []
    t0 = time.perf_counter()

    def run(episodes: list[int], bar: tqdm) -> list[EpisodeResult]:
        out: list[EpisodeResult] = []
        for first in range(0, len(episodes), n_envs):
            batch = episodes[first:first + n_envs]
            clock = RealTimeClock(spec.control_hz) if task.on_robot else None
            loop = ControlLoop.for_policy(envs, timed, execution, generator=generator, clock=clock,  # type: ignore[arg-type]
                                          recorder=recorder)
            record = [video_path is not None and i < video_episodes for i in batch]
            try:
                out += loop.run([start_seed + i for i in batch], record=record)
            finally:
                loop.runner.close()  # an rtc runner's inference thread
            bar.update(len(batch))
        return out

    try:
        with tqdm(total=n_episodes, desc=f"eval {task.name}", unit="ep", disable=not progress) as bar:
            results = run(list(range(n_episodes)), bar)
            reruns = [i for i, r in enumerate(results) if "worker_error" in r.final_info]
            if reruns:
                bar.total += len(reruns)
                for i, again in zip(reruns, run(reruns, bar)):
                    results[i] = again
    finally:
        envs.close()
    wall = time.perf_counter() - t0

    def score(r: EpisodeResult) -> float:
        # An episode whose worker failed twice has no score of its own: it counts as a failure with score 0.
        return 0.0 if "worker_error" in r.final_info else float(r.final_info[task.score_key])

    successes = [r.success for r in results]
    k = sum(successes)
    low, high = wilson_interval(k, len(results))
    scores = [score(r) for r in results] if task.score_key else []
    # bounded scores (coverage, max reward): an interval that cannot leave the values' range
    s_mean, s_low, s_high = bootstrap_mean_interval(scores) if scores else (None, None, None)
    r_mean, r_low, r_high = bootstrap_mean_interval([r.max_reward for r in results])
    video = None
    if video_path is not None and video_episodes > 0:
        frames = tile_frames([r.frames for r in results[:video_episodes]])
        video = str(write_video(video_path, frames, fps=spec.control_hz))
    return EvalReport(
        task=task.name, n_episodes=len(results), start_seed=start_seed,
        success_rate=k / len(results), success_low=low, success_high=high,
        score_key=task.score_key, score_mean=s_mean, score_low=s_low, score_high=s_high,
        max_reward_mean=r_mean, max_reward_low=r_low, max_reward_high=r_high,
        mean_steps=float(np.mean([r.steps for r in results])), wall_s=wall,
        inference_ms_per_chunk=1000 * timed.total_s / max(1, timed.calls), video=video,
        execution=(execution or ChunkExecution()).mode,
        worker_restarts=getattr(envs, "restarts", 0), rerun_episodes=len(reruns),
        episodes=[{"seed": r.seed, "success": r.success, "steps": r.steps, "max_reward": r.max_reward,
                   **({task.score_key: score(r)} if task.score_key else {}),
                   **({"worker_error": r.final_info["worker_error"]} if "worker_error" in r.final_info else {})}
                  for r in results],
    )


def format_report(report: EvalReport) -> str:
    """A small terminal table of the headline numbers."""
    rows = [("task", report.task), ("episodes", f"{report.n_episodes} (seeds {report.start_seed}.."
                                                f"{report.start_seed + report.n_episodes - 1})"),
            ("success rate", f"{report.success_rate:.3f}  [95% CI {report.success_low:.3f}, {report.success_high:.3f}]")]
    if report.score_mean is not None:
        rows.append((f"mean {report.score_key}",
                     f"{report.score_mean:.3f}  [95% CI {report.score_low:.3f}, {report.score_high:.3f}]"))
    rows.append(("mean max reward", f"{report.max_reward_mean:.3f}  [95% CI {report.max_reward_low:.3f}, "
                                    f"{report.max_reward_high:.3f}]"))
    rows += [("mean episode steps", f"{report.mean_steps:.1f}"),
             ("inference per chunk", f"{report.inference_ms_per_chunk:.1f} ms (batched over envs)"),
             ("chunk execution", report.execution),
             ("eval wall-clock", f"{report.wall_s:.1f} s")]
    if report.worker_restarts or report.rerun_episodes:
        rows.append(("worker failures", f"{report.worker_restarts} restart(s), {report.rerun_episodes} episode(s) re-run"))
    if report.video:
        rows.append(("video", report.video))
    width = max(len(r[0]) for r in rows)
    return "\n".join(f"  {name:<{width}}  {value}" for name, value in rows)
