"""Files name things; nothing a file says is imported or called as code (the hostile review's first finding)."""
import json

import pytest

import robolearn
from robolearn.policies.checkpoint import load_task, save_policy
from robolearn.registry import ENVS, POLICIES, Registry, UnknownNameError
from robolearn.task import TaskConfig, task_from_dict
from robolearn.train import RunConfig
from robolearn.typed_config import ConfigError
from tests.helpers import tiny_diffusion


@pytest.fixture()
def checkpoint(tmp_path):
    save_policy(tiny_diffusion(), tmp_path / "ckpt", task=TaskConfig())
    return tmp_path / "ckpt"


def rewrite(checkpoint, **changes):
    path = checkpoint / "policy.json"
    record = json.loads(path.read_text())
    for key, value in changes.items():
        if key == "task_env":
            record["task"]["env"] = value
        elif key == "task_env_kwargs":
            record["task"]["env_kwargs"] = value
        else:
            record[key] = value
    path.write_text(json.dumps(record))


def test_a_checkpoint_naming_a_robolearn_function_is_refused_before_anything_runs(checkpoint, tmp_path, monkeypatch):
    victim = tmp_path / "victim"
    victim.mkdir()
    called = []
    import robolearn.data.formats.diffusion_policy as dp

    monkeypatch.setattr(dp, "export_diffusion_policy", lambda *a, **k: called.append(a))
    for name in ("robolearn.data.formats.diffusion_policy:export_diffusion_policy", "shutil:rmtree",
                 "robolearn.sim.collect:shutil", "builtins:eval", "diffusion:x", ""):
        rewrite(checkpoint, **{"class": name})
        known = "diffusion, energy_descent, energy_ibc, flow, regression"
        with pytest.raises(UnknownNameError, match=f"unknown policy .*; known: {known}"):
            robolearn.load_policy(checkpoint, device="cpu")
    rewrite(checkpoint, **{"class": ["diffusion"]})
    with pytest.raises(UnknownNameError, match="named by a string, got list"):
        robolearn.load_policy(checkpoint, device="cpu")
    assert called == [] and victim.exists()


def test_a_checkpoint_task_naming_a_function_as_its_env_is_refused(checkpoint, tmp_path):
    victim = tmp_path / "victim"
    victim.mkdir()
    rewrite(checkpoint, task_env="shutil:rmtree", task_env_kwargs={"path": str(victim)})
    with pytest.raises(ConfigError, match="unknown env 'shutil:rmtree'; known: imagined, particle, pusht, rig, robosuite"):
        load_task(checkpoint)
    assert victim.exists()


def test_wrongly_typed_checkpoint_fields_are_named(checkpoint):
    rewrite(checkpoint, config={**json.loads((checkpoint / "policy.json").read_text())["config"], "horizon": "16"})
    with pytest.raises(ConfigError, match="policy checkpoint config: horizon must be an integer, got '16'"):
        robolearn.load_policy(checkpoint, device="cpu")
    with pytest.raises(ConfigError, match="checkpoint .*: env_kwargs must be a mapping"):
        task_from_dict({"env_kwargs": "rm -rf /"}, "checkpoint x")
    with pytest.raises(ConfigError, match="unknown TaskConfig fields \\['__class__'\\]"):
        task_from_dict({"__class__": "os"}, "checkpoint x")


def test_old_import_paths_are_aliases_and_new_files_save_names(checkpoint):
    assert POLICIES.canonical("robolearn.policies.flow:FlowMatchingPolicy") == "flow"
    assert ENVS.canonical("robolearn.sim.robosuite_env:RobosuiteEnv") == "robosuite"
    assert TaskConfig(env="robolearn.hal.rig:rig_env").on_robot
    saved = json.loads((checkpoint / "policy.json").read_text())
    assert saved["class"] == "diffusion" and saved["task"]["env"] == "pusht"


def test_run_configs_are_checked_field_by_field():
    with pytest.raises(ConfigError, match="run config: train: steps must be an integer, got 'many'"):
        RunConfig.from_dict({"train": {"steps": "many"}})
    with pytest.raises(ConfigError, match="run config: unknown RunConfig fields \\['policy_clas'\\]"):
        RunConfig.from_dict({"policy_clas": "diffusion"})
    with pytest.raises(ConfigError, match="unknown env 'os:system'"):
        RunConfig.from_dict({"task": {"env": "os:system"}})


def test_python_code_registers_its_own_entries():
    registry = Registry("gadget")
    registry.register("box", dict, aliases=["old.module:Box"])
    assert registry.get("old.module:Box") is dict and registry.names() == ["box"]
    assert registry.name_of(dict) == "box"
    with pytest.raises(ValueError, match="short words"):
        registry.register("a:b", dict)
    with pytest.raises(TypeError, match="not a registered gadget"):
        registry.name_of(list)
    typed = Registry("policy", base="robolearn.policies.base:Policy")
    typed.register("not_a_policy", dict)
    with pytest.raises(TypeError, match="'not_a_policy' is <class 'dict'>, not a subclass of Policy"):
        typed.get("not_a_policy")
