"""What tests/test_distributed*.py start under torchrun (`python -m torch.distributed.run ... -m tests.distributed_worker`):
one rank of a tiny training run or of a sharded evaluation, on gloo CPU ranks.

  train STORE OUT [--steps N] [--batch B] [--resume] [--kill-rank R --kill-step S] [--eval-episodes E]
                  [--sharded-eval E]
      trains the tiny regression policy of `tiny_run` with the real Trainer; every rank then writes its own
      training state to OUT/ranks/rank<R>.safetensors (to compare ranks; only rank 0 writes the run folder).
      --sharded-eval E: then evaluates `tiny_stochastic_policy()` on E episodes of `SHORT_PUSHT` (2 envs per
      batch) with distributed=True; rank 0 writes OUT/eval.json (one launch for both: each launch costs seconds).
"""
from __future__ import annotations

import argparse
import json
import os
import signal
from pathlib import Path

import torch

from robolearn.task import TaskConfig
from robolearn.train import RunConfig, TrainConfig

SHORT_PUSHT = TaskConfig(env_kwargs={"obs_type": "state", "max_episode_steps": 30})
TINY_REGRESSION = dict(horizon=8, n_obs_steps=2, n_action_steps=4, hidden=[32, 32])


def tiny_run(out: Path, steps: int = 6, batch_size: int = 16, final_eval_episodes: int = 0, **train) -> RunConfig:
    """A regression policy (its loss draws no noise, so 1 and 2 ranks compute the same gradients)."""
    settings = dict(steps=steps, batch_size=batch_size, lr=3e-3, warmup_steps=2, log_every=2, checkpoint_every=1000,
                    final_eval_episodes=final_eval_episodes, eval_envs=2, video_episodes=0, seed=0, device="cpu",
                    prefetch=2)
    return RunConfig(task=SHORT_PUSHT, policy_class="regression", policy=dict(TINY_REGRESSION), out_dir=str(out),
                     train=TrainConfig(**{**settings, **train}))


def tiny_stochastic_policy():
    from tests.helpers import tiny_diffusion

    torch.manual_seed(0)  # the same untrained weights in every process
    return tiny_diffusion()


def train(args: argparse.Namespace) -> None:
    from robolearn.data.store import EpisodeStore
    from robolearn.train import Trainer

    run = tiny_run(args.out, steps=args.steps, batch_size=args.batch, final_eval_episodes=args.eval_episodes,
                   device=args.device)
    trainer = Trainer(run, store=EpisodeStore.open(args.store), progress=False)
    if args.resume:
        assert trainer.resume(), "nothing to resume"
    if args.kill_rank == trainer.world.rank:
        step = trainer.loop.train_step

        def dying_step(*a, **k):
            if trainer.loop.step == args.kill_step:
                os.kill(os.getpid(), signal.SIGKILL)  # a rank dying mid-run, without a word
            return step(*a, **k)
        trainer.loop.train_step = dying_step  # type: ignore[method-assign]
    trainer.fit()
    ranks = Path(args.out) / "ranks"
    ranks.mkdir(parents=True, exist_ok=True)
    trainer.loop.save_state(ranks / f"rank{trainer.world.rank}.safetensors")
    if args.sharded_eval:
        evaluate_sharded(args.out, args.sharded_eval, trainer.world.is_main)
    from robolearn.train.distributed import shutdown

    shutdown()


def evaluate_sharded(out: Path, episodes: int, is_main: bool) -> None:
    from robolearn.eval.rollout import evaluate

    report = evaluate(tiny_stochastic_policy(), SHORT_PUSHT, n_episodes=episodes, n_envs=2, progress=False,
                      distributed=True)
    if is_main:
        (Path(out) / "eval.json").write_text(json.dumps(report.to_dict(with_episodes=True)))


def main() -> None:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="mode", required=True)
    t = sub.add_parser("train")
    t.add_argument("store", type=Path)
    t.add_argument("out", type=Path)
    t.add_argument("--steps", type=int, default=6)
    t.add_argument("--batch", type=int, default=16)
    t.add_argument("--eval-episodes", type=int, default=0)
    t.add_argument("--resume", action="store_true")
    t.add_argument("--kill-rank", type=int, default=-1)
    t.add_argument("--kill-step", type=int, default=-1)
    t.add_argument("--sharded-eval", type=int, default=0)
    t.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(1)
    train(args)


if __name__ == "__main__":
    main()
