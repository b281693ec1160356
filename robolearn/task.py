"""A task brings data, an environment and a spec; a policy (the method) is trained and evaluated on it.

Tasks are plain dataclasses (hydra configs under configs/task/ fill them in). The env is named through
robolearn.registry.ENVS, so a config or checkpoint can never import or call arbitrary code.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from robolearn.data.obs_source import parse_obs_sources
from robolearn.env import Env, EnvSpec
from robolearn.registry import ENVS

ROBOT_ENV = "rig"  # the env of tasks run on a robot (real or the simulated arm) from a rig file


@dataclass
class TaskConfig:
    name: str = "pusht"
    env: str = "pusht"  # a name in robolearn.registry.ENVS
    env_kwargs: dict[str, Any] = field(default_factory=lambda: {"obs_type": "state"})
    obs_keys: list[str] = field(default_factory=lambda: ["state"])  # what the policy sees
    # obs key -> store key it is read from, optionally sliced on the last axis ("state[0:2]"); unlisted keys are
    # read from the store key of the same name. Lets tasks share one dataset under the env's own key names.
    obs_sources: dict[str, str] = field(default_factory=dict)
    action_key: str = "action"
    dataset: str = "pusht_cchi_v7_replay.zarr"  # file/folder name searched for in the dataset locations
    dataset_format: str = "diffusion_policy"  # "robolearn" for an EpisodeStore, or an importable format
    dataset_url: str = "https://diffusion-policy.cs.columbia.edu/data/training/pusht.zip"
    dataset_sha256: str = ""  # the download's pinned SHA-256 (checked before it is unpacked)
    score_key: str = "max_coverage"  # per-episode info value averaged as the task's score ("" for none)
    # Sim tasks with a scripted expert: when the dataset is found nowhere, collect this many demonstrations with it
    # (0: never collect automatically; `robolearn collect` does it by hand).
    expert: str = ""
    expert_episodes: int = 0

    def __post_init__(self) -> None:
        # Syntax and key checks need no data, so a bad config fails when it is loaded, not hours into a run.
        self.env = ENVS.canonical(self.env)  # import paths saved by older versions are aliases
        parse_obs_sources(self.obs_keys, self.obs_sources)
        if self.expert_episodes < 0 or (self.expert_episodes and not self.expert):
            raise ValueError(f"task {self.name!r}: expert_episodes={self.expert_episodes} needs an expert name and must be >= 0")

    @property
    def on_robot(self) -> bool:
        """A robot runs in real time, one at a time: evaluating it paces the loop with the wall clock."""
        return self.env == ROBOT_ENV

    def make_env(self) -> Env:
        return ENVS.get(self.env)(**self.env_kwargs)

    def spec(self) -> EnvSpec:
        env = self.make_env()
        try:
            return env.spec
        finally:
            env.close()


def task_from_dict(values: Any, where: str) -> TaskConfig:
    """A TaskConfig from a file's mapping (a checkpoint, a run config), every field checked by name and type."""
    from robolearn.typed_config import dataclass_from_dict

    return dataclass_from_dict(TaskConfig, values, where)
