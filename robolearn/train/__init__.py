"""Training: the one optimization loop (loop.py: TrainLoop, shared by policies, critics and world models) and the
policy training run on top of it (policy.py: RunConfig, Trainer)."""
from robolearn.train.loop import Schedule, TrainLoop
from robolearn.train.policy import RunConfig, TrainConfig, Trainer, build_policy

__all__ = ["RunConfig", "Schedule", "TrainConfig", "TrainLoop", "Trainer", "build_policy"]
