"""`robolearn eval A B --compose-weights / --compose-search`: composition reachable from the command line."""
import json

import numpy as np
import pytest
import torch

from robolearn.cli import main
from robolearn.config_files import task_by_name
from robolearn.policies.checkpoint import save_policy
from robolearn.policies.diffusion import DiffusionConfig, DiffusionPolicy
from robolearn.policies.flow import FlowConfig, FlowMatchingPolicy

SMALL = dict(obs_shapes={"state": [2]}, action_dim=2, horizon=8, n_obs_steps=2, n_action_steps=4, down_dims=[16, 32],
             diffusion_step_embed_dim=16, num_inference_steps=4)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("compose")
    torch.manual_seed(0)
    for name, policy in (("diffusion", DiffusionPolicy(DiffusionConfig(**SMALL))),
                         ("flow", FlowMatchingPolicy(FlowConfig(**SMALL)))):
        policy.normalizer.fit({"state": {"min": -np.ones(2), "max": np.ones(2)},
                               "action": {"min": -np.ones(2), "max": np.ones(2)}})
        save_policy(policy, root / name, task=task_by_name("particle"))
    return root


def exit_code(argv) -> int:
    try:
        return main(argv)
    except SystemExit as done:  # argparse's own usage errors
        return done.code


def run_json(capsys, *argv):
    assert main(["eval", *map(str, argv), "--episodes", "2", "--n-envs", "2", "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_fixed_weights_compose_two_heads(checkpoints, capsys):
    result = run_json(capsys, checkpoints / "diffusion", checkpoints / "flow", "--compose-weights", "0.25,0.75")
    assert result["composition"]["weights"] == [0.25, 0.75]
    assert result["n_episodes"] == 2 and 0.0 <= result["success_rate"] <= 1.0


def test_search_scores_every_grid_point_on_its_own_seeds(checkpoints, capsys):
    result = run_json(capsys, checkpoints / "diffusion", checkpoints / "flow", "--compose-search", "2",
                      "--search-episodes", "2")
    search = result["composition"]["search"]
    assert search["seeds"] == "200000..200001"
    assert sorted(tuple(r["weights"]) for r in search["rows"]) == [(0.0, 1.0), (0.5, 0.5), (1.0, 0.0)]
    assert result["composition"]["weights"] == search["rows"][0]["weights"]  # the best row is used


@pytest.mark.parametrize("extra, message", [
    (["--compose-weights", "0.5,0.5"], "compose several checkpoints; give two or more"),
])
def test_one_checkpoint_refuses_composition_flags(checkpoints, capsys, extra, message):
    assert exit_code(["eval", str(checkpoints / "flow"), *extra]) == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("extra, message", [
    ([], "2 checkpoints are composed into one policy: give --compose-weights W1,...,W2 or --compose-search"),
    (["--compose-weights", "0.5,0.3,0.2"], "--compose-weights has 3 weights for 2 checkpoints"),
    (["--compose-weights", "0.7,0.7"], "2 non-negative numbers summing to 1"),
    (["--compose-weights", "a,b"], "expected comma-separated numbers"),
    (["--compose-search", "2", "--search-seed", "100001"], "overlap the reported seeds"),
    (["--compose-weights", "0.5,0.5", "--compose-search"], "not both"),
])
def test_bad_compositions_are_one_line(checkpoints, capsys, extra, message):
    assert exit_code(["eval", str(checkpoints / "diffusion"), str(checkpoints / "flow"), *extra, "--episodes", "2"]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
