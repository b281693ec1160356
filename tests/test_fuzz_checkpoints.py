"""Fuzzing checkpoints: truncated, garbled, retyped or missing files load correctly or fail with an error the CLI
prints as one line; they never crash with another exception, never change the files, never yield NaN actions."""
import hashlib
import json
import math
import os
import shutil
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import robolearn
from robolearn.cli import expected_errors
from robolearn.models.critic import Critic, CriticConfig, load_critic, save_critic
from robolearn.policies.checkpoint import load_task, save_policy
from robolearn.task import TaskConfig
from tests.fuzzing import json_paths
from tests.helpers import tiny_diffusion

FUZZ = settings(max_examples=int(os.environ.get("ROBOLEARN_FUZZ_EXAMPLES", 40)), deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture])  # the same cases on every CI run
JSON_VALUES = st.recursive(st.none() | st.booleans() | st.integers(-10**6, 10**6) | st.floats(allow_nan=False)
                           | st.text(max_size=12), lambda inner: st.lists(inner, max_size=3)
                           | st.dictionaries(st.text(max_size=6), inner, max_size=3), max_leaves=6)


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("ckpt") / "policy"
    save_policy(tiny_diffusion(), folder, task=TaskConfig())
    return folder


def fresh_copy(pristine: Path, tmp_path: Path, name: str) -> Path:
    target = tmp_path / name
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(pristine, target)
    return target


def digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def load_or_fail_cleanly(folder: Path) -> None:
    before = digest(folder)
    try:
        policy = robolearn.load_policy(folder, device="cpu")
        load_task(folder)
    except expected_errors() as err:
        assert str(err).strip(), f"{type(err).__name__} without a message"
    else:
        obs = {k: torch.full((1, policy.config.n_obs_steps, *s), 100.0) for k, s in policy.config.obs_shapes.items()}
        chunk = policy.sample(obs, n=1, generator=torch.Generator().manual_seed(0))
        assert chunk.shape == (1, 1, policy.config.horizon, policy.config.action_dim)
        assert torch.isfinite(chunk).all()
    assert digest(folder) == before, "loading changed the checkpoint"


@FUZZ
@given(which=st.sampled_from(["policy.json", "model.safetensors"]), fraction=st.floats(0.0, 1.0))
def test_truncated_files(pristine, tmp_path, which, fraction):
    folder = fresh_copy(pristine, tmp_path, "truncated")
    data = (folder / which).read_bytes()
    (folder / which).write_bytes(data[:int(len(data) * fraction)])
    load_or_fail_cleanly(folder)


@FUZZ
@given(which=st.sampled_from(["policy.json", "model.safetensors"]),
       flips=st.lists(st.tuples(st.floats(0.0, 1.0, exclude_max=True), st.integers(1, 255)), min_size=1, max_size=8))
def test_garbled_bytes(pristine, tmp_path, which, flips):
    folder = fresh_copy(pristine, tmp_path, "garbled")
    data = bytearray((folder / which).read_bytes())
    for where, xor in flips:
        data[int(where * len(data))] ^= xor
    (folder / which).write_bytes(bytes(data))
    load_or_fail_cleanly(folder)


@FUZZ
@given(data=st.data(), replacement=JSON_VALUES)
def test_retyped_record_values(pristine, tmp_path, data, replacement):
    folder = fresh_copy(pristine, tmp_path, "retyped")
    record = json.loads((folder / "policy.json").read_text())
    path = data.draw(st.sampled_from(list(json_paths(record))[1:]))
    target = record
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = replacement
    (folder / "policy.json").write_text(json.dumps(record))
    load_or_fail_cleanly(folder)


@pytest.mark.parametrize("value", [math.nan, math.inf, -1, 10**12, "16", None, True, [16], {"a": 1}])
def test_each_config_number_with_a_hostile_value(pristine, tmp_path, value):
    folder = fresh_copy(pristine, tmp_path, "hostile")
    record = json.loads((folder / "policy.json").read_text())
    for key in ("horizon", "n_obs_steps", "n_action_steps", "action_dim", "num_inference_steps"):
        record["config"][key] = value
        (folder / "policy.json").write_text(json.dumps(record))
        load_or_fail_cleanly(folder)
        record = json.loads((pristine / "policy.json").read_text())


def test_missing_files_and_wrong_folders_are_named(pristine, tmp_path):
    for name in ("policy.json", "model.safetensors"):
        folder = fresh_copy(pristine, tmp_path, f"without_{name}")
        (folder / name).unlink()
        with pytest.raises(FileNotFoundError, match=name):
            robolearn.load_policy(folder, device="cpu")
    critic_folder = tmp_path / "critic"
    save_critic(Critic(CriticConfig(obs_keys=["state"], obs_shapes={"state": [5]}, action_dim=2, hidden=[8])), critic_folder)
    with pytest.raises(FileNotFoundError, match="no policy checkpoint"):
        robolearn.load_policy(critic_folder, device="cpu")  # a critic is not a policy
    with pytest.raises(FileNotFoundError, match="no critic checkpoint"):
        load_critic(pristine, device="cpu")


def test_nan_weights_never_reach_a_robot(tmp_path):
    policy = tiny_diffusion()
    with torch.no_grad():
        next(policy.unet.parameters())[0] = math.nan  # a diverged run, saved with a matching checksum
    save_policy(policy, tmp_path / "nan")
    with pytest.raises(ValueError, match="NaN or infinite values in \\['unet"):
        robolearn.load_policy(tmp_path / "nan", device="cpu")


def test_weights_that_still_parse_but_changed_are_caught_by_the_checksum(pristine, tmp_path):
    from safetensors.torch import load_file, save_file

    folder = fresh_copy(pristine, tmp_path, "changed")
    state = load_file(str(folder / "model.safetensors"))
    name = next(k for k, v in state.items() if v.is_floating_point() and v.numel() > 1)
    state[name][0] = 1e30
    save_file(state, str(folder / "model.safetensors"))
    with pytest.raises(ValueError, match="damaged: their SHA-256 differs from the one recorded in policy.json"):
        robolearn.load_policy(folder, device="cpu")
