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
import torch.distributed as dist
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
    decision_energy_mean: float | None = None  # heads with an energy: mean energy of their decisions (lower: surer)
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
        self.energy_sum, self.energy_count = 0.0, 0  # decision energies of heads that have one

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

    def act_with_energy(self, obs, generator=None):  # receding horizon, with the decision's energy when it has one
        actions, energies = self._timed(self.policy.act_with_energy, obs, generator=generator)
        if energies is not None:
            self.energy_sum += float(np.sum(energies))
            self.energy_count += len(energies)
        return actions, energies

    def sample(self, obs, n=1, generator=None):  # temporal ensembling and real-time chunking
        return self._timed(self.policy.sample, obs, n=n, generator=generator)


def unit_bounds(values: list[float]) -> tuple[float, float] | None:
    """(0, 1) for scores on the unit scale (coverage, sparse or normalized rewards); None when they leave it."""
    return (0.0, 1.0) if values and min(values) >= 0.0 and max(values) <= 1.0 else None


def evaluate(policy: Policy, task: TaskConfig, n_episodes: int = 50, start_seed: int = DEFAULT_START_SEED,
             n_envs: int = 50, video_path: str | Path | None = None, video_episodes: int = 4,
             sample_seed: int = 0, progress: bool = True, n_workers: int = 0,
             execution: ChunkExecution | None = None, record: EpisodeStore | None = None,
             distributed: bool = False) -> EvalReport:
    """Run `n_episodes` episodes from seeds start_seed.. and summarize them.

    n_workers=0 steps the envs in this process; n_workers > 0 spreads them over that many worker processes
    (at most n_envs), worth it when a step costs more than a round trip (robosuite, rendered images).
    `execution` picks how chunks are executed (receding horizon by default, temporal ensembling, or real-time
    chunking; give rtc a `delay_steps` to simulate inference latency deterministically). A task on a robot
    (TaskConfig.on_robot) runs one env on a real-time clock at the rig's rate: episodes take their real duration.
    `record`, a writable store, receives every episode (observations, actions, rewards, timestamps, seed and
    success): rollouts to train world models and critics on.

    Episodes run in batches of `n_envs` (episodes 0..n_envs-1, then the next n_envs, ...), each batch's sampling
    noise seeded from `sample_seed` and its first episode. `distributed=True`, called by every rank of a
    torch.distributed process group with the same arguments, gives each rank a contiguous block of these batches
    and gathers the episodes: every rank returns the report a single process returns with the same arguments
    (the wall-clock is the slowest rank's; the video, if any, shows the video episodes this rank ran).
    """
    if n_episodes < 1:
        raise ValueError(f"n_episodes must be >= 1, got {n_episodes}")
    if n_workers < 0:
        raise ValueError(f"n_workers must be >= 0 (0: step envs in this process), got {n_workers}")
    if distributed and (record is not None or task.on_robot):
        raise ValueError("a distributed evaluation cannot record episodes or run on a robot: evaluate in one process")
    policy.eval()
    timed = _TimedPolicy(policy)
    n_envs = 1 if task.on_robot else max(1, min(n_envs, n_episodes))
    if task.on_robot and n_workers > 0:
        raise ValueError(f"task {task.name!r} runs on a robot: evaluate it in this process (n_workers=0)")
    rank, size = (dist.get_rank(), dist.get_world_size()) if distributed else (0, 1)
    n_batches = -(-n_episodes // n_envs)
    mine = [i for j in range(n_batches) if j * size // n_batches == rank
            for i in range(j * n_envs, min((j + 1) * n_envs, n_episodes))]
    results: dict[int, EpisodeResult] = {}
    reruns: list[int] = []
    restarts, spec_hz = 0, 10.0
    t0 = time.perf_counter()
    if mine:
        results, reruns, restarts, spec_hz = _run_episodes(
            timed, task, mine, n_envs, n_workers, start_seed, sample_seed, execution, record,
            video_episodes if video_path is not None else 0, progress)
    wall = time.perf_counter() - t0
    rows = torch.tensor([_row(i, results[i], task) for i in mine], dtype=torch.float64).reshape(len(mine), len(_ROW))
    stats = torch.tensor([[timed.total_s, timed.calls, restarts, len(reruns), wall, timed.energy_sum,
                           timed.energy_count]], dtype=torch.float64)
    errors = {i: r.final_info["worker_error"] for i, r in results.items() if "worker_error" in r.final_info}
    if distributed:
        rows, stats = torch.cat(_gather(rows)), torch.cat(_gather(stats))
        errors = {int(i): errors.get(int(i), "a worker failed twice (see this rank's log)")
                  for i, failed in zip(rows[:, 0], rows[:, -1]) if failed}
    rows = rows[rows[:, 0].argsort()]
    video = None
    if video_path is not None and video_episodes > 0:
        shown = [results[i].frames for i in sorted(results) if i < video_episodes]
        if shown:
            video = str(write_video(video_path, tile_frames(shown), fps=spec_hz))
    return _summarize(task, start_seed, rows, stats, errors, video, (execution or ChunkExecution()).mode)


# one row per episode, gathered as float64 (exact for these integers and for the floats' values)
_ROW = ("episode", "seed", "success", "steps", "max_reward", "score", "worker_error")


def _row(i: int, r: EpisodeResult, task: TaskConfig) -> list[float]:
    failed = "worker_error" in r.final_info
    # An episode whose worker failed twice has no score of its own: it counts as a failure with score 0.
    score = 0.0 if failed or not task.score_key else float(r.final_info[task.score_key])
    return [i, r.seed, r.success, r.steps, r.max_reward, score, failed]


def _gather(t: torch.Tensor) -> list[torch.Tensor]:
    """Every rank's rows (their counts may differ): padded to the longest for all_gather, then cut."""
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")
    counts = [torch.zeros(1, dtype=torch.int64, device=device) for _ in range(dist.get_world_size())]
    dist.all_gather(counts, torch.tensor([t.shape[0]], dtype=torch.int64, device=device))
    padded = torch.zeros((max(int(c) for c in counts), t.shape[1]), dtype=torch.float64, device=device)
    padded[:t.shape[0]] = t
    out = [torch.empty_like(padded) for _ in counts]
    dist.all_gather(out, padded)
    return [o[:int(c)].cpu() for o, c in zip(out, counts)]


def _run_episodes(timed: _TimedPolicy, task: TaskConfig, episodes: list[int], n_envs: int, n_workers: int,
                  start_seed: int, sample_seed: int, execution: ChunkExecution | None, record: EpisodeStore | None,
                  video_episodes: int, progress: bool) -> tuple[dict[int, EpisodeResult], list[int], int, float]:
    """Episodes (indices) in batches of n_envs; an episode cut short by a failed worker is run once more."""
    n_envs = min(n_envs, len(episodes))
    if n_workers > 0:
        envs: SerialVectorEnv | SubprocVectorEnv = SubprocVectorEnv.from_task(task, n_envs, min(n_workers, n_envs))
    else:
        envs = SerialVectorEnv([task.make_env() for _ in range(n_envs)])
    spec = envs.spec
    recorder = EpisodeRecorder(record, obs_keys=list(spec.obs), meta={"task": task.name}) if record is not None else None

    def run(batch_of: list[int], bar: tqdm) -> list[EpisodeResult]:
        out: list[EpisodeResult] = []
        for first in range(0, len(batch_of), n_envs):
            batch = batch_of[first:first + n_envs]
            clock = RealTimeClock(spec.control_hz) if task.on_robot else None
            generator = torch.Generator(device=timed.policy.device).manual_seed(_batch_seed(sample_seed, batch[0]))
            loop = ControlLoop.for_policy(envs, timed, execution, generator=generator, clock=clock,  # type: ignore[arg-type]
                                          recorder=recorder)
            try:
                out += loop.run([start_seed + i for i in batch], record=[i < video_episodes for i in batch])
            finally:
                loop.runner.close()  # an rtc runner's inference thread
            bar.update(len(batch))
        return out

    try:
        with tqdm(total=len(episodes), desc=f"eval {task.name}", unit="ep", disable=not progress) as bar:
            results = dict(zip(episodes, run(episodes, bar)))
            reruns = [i for i, r in results.items() if "worker_error" in r.final_info]
            if reruns:
                bar.total += len(reruns)
                results.update(zip(reruns, run(reruns, bar)))
    finally:
        envs.close()
    return results, reruns, getattr(envs, "restarts", 0), spec.control_hz


def _batch_seed(sample_seed: int, first: int) -> int:
    """The sampling seed of the batch starting at episode `first` (the first batch: `sample_seed` itself)."""
    return sample_seed if first == 0 else int(np.random.SeedSequence([sample_seed, first]).generate_state(1)[0])


def _summarize(task: TaskConfig, start_seed: int, rows: torch.Tensor, stats: torch.Tensor, errors: dict[int, str],
               video: str | None, execution: str) -> EvalReport:
    """The report from every episode's row (in episode order) and every rank's timing row."""
    col = {name: rows[:, j].numpy() for j, name in enumerate(_ROW)}
    successes = col["success"].astype(bool)
    k = int(successes.sum())
    n = len(successes)
    low, high = wilson_interval(k, n)
    scores = [float(x) for x in col["score"]] if task.score_key else []
    # bounded scores (coverage, max reward): an interval that cannot leave the values' range
    s_mean, s_low, s_high = bootstrap_mean_interval(scores, bounds=unit_bounds(scores)) if scores else (None,) * 3
    max_rewards = [float(x) for x in col["max_reward"]]
    r_mean, r_low, r_high = bootstrap_mean_interval(max_rewards, bounds=unit_bounds(max_rewards))
    total_s, calls, restarts, reruns, _, energy_sum, energy_count = stats.sum(0).tolist()
    episodes = []
    for j in range(n):
        i = int(col["episode"][j])
        episodes.append({"seed": int(col["seed"][j]), "success": bool(successes[j]), "steps": int(col["steps"][j]),
                         "max_reward": max_rewards[j], **({task.score_key: scores[j]} if task.score_key else {}),
                         **({"worker_error": errors[i]} if i in errors else {})})
    return EvalReport(
        task=task.name, n_episodes=n, start_seed=start_seed,
        success_rate=k / n, success_low=low, success_high=high,
        score_key=task.score_key, score_mean=s_mean, score_low=s_low, score_high=s_high,
        max_reward_mean=r_mean, max_reward_low=r_low, max_reward_high=r_high,
        mean_steps=float(np.mean(col["steps"])), wall_s=float(stats[:, 4].max()),
        inference_ms_per_chunk=1000 * total_s / max(1.0, calls), video=video, execution=execution,
        worker_restarts=int(restarts), rerun_episodes=int(reruns),
        decision_energy_mean=energy_sum / energy_count if energy_count else None, episodes=episodes)


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
             *([("mean decision energy", f"{report.decision_energy_mean:.4f}")]
               if report.decision_energy_mean is not None else []),
             ("eval wall-clock", f"{report.wall_s:.1f} s")]
    if report.worker_restarts or report.rerun_episodes:
        rows.append(("worker failures", f"{report.worker_restarts} restart(s), {report.rerun_episodes} episode(s) re-run"))
    if report.video:
        rows.append(("video", report.video))
    width = max(len(r[0]) for r in rows)
    return "\n".join(f"  {name:<{width}}  {value}" for name, value in rows)
