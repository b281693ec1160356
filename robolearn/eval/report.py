"""A run's report: one Markdown page beside the checkpoint with what was trained, how it did, and its loss curve.

`report.md` links the evaluation video and `loss.png`, so a run folder opened on GitHub or in an editor shows the
result without TensorBoard; the numbers are the ones in `log.jsonl` and `eval/<tag>.json`.
"""
from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from robolearn.eval.rollout import EvalReport

LOSS_PLOT = "loss.png"


def read_log(path: Path) -> list[dict[str, Any]]:
    """The records of a run's log.jsonl (empty if there is none yet)."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def plot_loss(records: Sequence[Mapping[str, Any]], out: Path) -> Path | None:
    """Training loss against step (log scale) as a PNG; None when there is nothing to plot."""
    points = [(r["step"], r["loss"]) for r in records if "loss" in r]
    if not points:
        return None
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3), dpi=100)
    ax.plot(*zip(*points), lw=1.2)
    ax.set(xlabel="step", ylabel="training loss", yscale="log")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
    return out


def _interval(value: float | None, low: float | None, high: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f} [{low:.3f}, {high:.3f}]"


def write_run_report(out_dir: Path, title: str, facts: Mapping[str, Any], report: EvalReport | None) -> Path:
    """Write `out_dir/report.md` (and `loss.png`) from the run's log and its final evaluation."""
    records = read_log(out_dir / "log.jsonl")
    plot = plot_loss(records, out_dir / LOSS_PLOT)
    lines = [f"# {title}", "", "| | |", "|---|---|", *(f"| {k} | {v} |" for k, v in facts.items()), ""]
    if report is None:
        lines += ["Not evaluated (`train.final_eval_episodes=0`).", ""]
    else:
        lines += [f"## Evaluation: {report.n_episodes} episodes, seeds {report.start_seed}.."
                  f"{report.start_seed + report.n_episodes - 1} ({report.task})", "",
                  "| metric | value [95 % CI] |", "|---|---|",
                  f"| success rate | {_interval(report.success_rate, report.success_low, report.success_high)} |"]
        if report.score_mean is not None:
            score = _interval(report.score_mean, report.score_low, report.score_high)
            lines.append(f"| mean {report.score_key} | {score} |")
        reward = _interval(report.max_reward_mean, report.max_reward_low, report.max_reward_high)
        lines += [f"| mean max reward | {reward} |",
                  f"| mean episode steps | {report.mean_steps:.1f} |",
                  f"| inference per chunk | {report.inference_ms_per_chunk:.1f} ms ({report.execution}) |",
                  f"| evaluation wall-clock | {report.wall_s:.1f} s |", ""]
        if report.video:
            video = Path(report.video)
            link = video.relative_to(out_dir) if video.is_relative_to(out_dir) else video
            lines += [f"Video of the first episodes: [{video.name}]({link})", ""]
    if plot is not None:
        lines += ["## Training loss", "", f"![training loss]({LOSS_PLOT})", ""]
    path = out_dir / "report.md"
    path.write_text("\n".join(lines))
    return path
