"""`robolearn train` and `robolearn demo`: a policy from configs/train.yaml (or demo.yaml) with hydra overrides,
trained by robolearn.train.Trainer; a task's missing demonstrations are collected by its scripted expert."""
from __future__ import annotations

import argparse
from collections.abc import Sequence

from robolearn.commands.arguments import check_device
from robolearn.config_files import compose


def register(sub: argparse._SubParsersAction) -> None:
    for name, config, help_ in (("demo", "demo", "main job: Lift demos, a few minutes of training, evaluation"),
                                ("train", "train", "train a policy (hydra overrides: task=... policy=... train.steps=...)")):
        p = sub.add_parser(name, help=help_, description=f"{help_}. Config: configs/{config}.yaml.")
        p.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                       help="hydra overrides, e.g. train.steps=1000 out_dir=runs/x")
        p.add_argument("--resume", action="store_true", help="continue from the run folder's last checkpoint")
        p.set_defaults(func=lambda a, c=config: run_training(c, a.overrides, a.resume))


def load_run(config_name: str, overrides: Sequence[str]):
    """The composed run config (TrainConfig checks its counts) and its device, before anything is built or collected."""
    from robolearn.train import RunConfig

    run = RunConfig.from_dict(compose(config_name, overrides))
    check_device(run.train.device, "train.device=")
    return run


def run_training(config_name: str, overrides: Sequence[str], resume: bool) -> int:
    from robolearn.eval.rollout import format_report
    from robolearn.sim.collect import collect_for_task
    from robolearn.train import Trainer
    from robolearn.train.distributed import shutdown

    run = load_run(config_name, overrides)
    try:
        trainer = Trainer(run, make_missing=collect_for_task)
        say = print if trainer.world.is_main else (lambda *_: None)  # under torchrun rank 0 speaks for all
        if resume and trainer.resume():
            say(f"resumed {run.out_dir} at step {trainer.step}")
        n_params = sum(p.numel() for p in trainer.policy.parameters())
        ranks = f", {trainer.world.size} ranks" if trainer.world.distributed else ""
        say(f"training {type(trainer.policy).__name__} ({n_params / 1e6:.1f} M params) on {run.task.name}: "
            f"{trainer.store.n_episodes} episodes, {len(trainer.windows)} windows, device {trainer.device}{ranks}, "
            f"precision {trainer.loop.precision}")
        report = trainer.fit()
        say(f"\nrun folder: {run.out_dir}\n  checkpoint          {trainer.checkpoint_dir}\n"
            f"  training            {trainer.step} steps in {trainer.train_seconds / 60:.1f} min\n"
            f"  report              {trainer.out / 'report.md'}")
        if report is not None:
            say(format_report(report))
    finally:
        shutdown()  # leave torchrun's process group cleanly (nothing outside torchrun)
    return 0
