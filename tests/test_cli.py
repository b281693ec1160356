import json

import numpy as np
import pytest

from robolearn.cli import compose, main
from robolearn.policies.checkpoint import save_policy
from robolearn.task import TaskConfig
from tests.helpers import synthetic_pusht_store, tiny_diffusion


def test_eval_json_prints_one_object_with_the_metrics(tmp_path, capsys):
    save_policy(tiny_diffusion(), tmp_path / "ckpt", task=TaskConfig())
    assert main(["eval", str(tmp_path / "ckpt"), "--episodes", "2", "--n-envs", "2", "--json"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1
    report = json.loads(out[0])
    assert report["n_episodes"] == 2 and report["task"] == "pusht"
    assert 0.0 <= report["success_rate"] <= 1.0 and 0.0 <= report["score_mean"] <= 1.0
    assert report["inference_ms_per_chunk"] > 0


@pytest.mark.parametrize("fmt, suffix", [("diffusion_policy", "zarr"), ("robomimic", "hdf5")])
def test_convert_exports_and_reimports_exactly(tmp_path, capsys, fmt, suffix):
    store = synthetic_pusht_store(tmp_path / "a.zarr")
    exported = str(tmp_path / f"exported.{suffix}")
    assert main(["convert", str(tmp_path / "a.zarr"), exported, "--to", fmt]) == 0
    assert main(["convert", exported, str(tmp_path / "b.zarr"), "--task", "pusht", "--fps", "10"]) == 0
    from robolearn.data.store import EpisodeStore

    back = EpisodeStore.open(tmp_path / "b.zarr")
    assert np.array_equal(back.episode_ends, store.episode_ends)
    assert all(np.array_equal(back.read(k), store.read(k)) for k in store.keys)
    assert main(["info", str(tmp_path / "b.zarr")]) == 0
    assert "6 episodes, 240 steps" in capsys.readouterr().out


def test_user_errors_are_one_clear_line(tmp_path, capsys):
    assert main(["info", str(tmp_path / "nowhere.zarr")]) == 2
    assert "no episode store" in capsys.readouterr().err
    assert main(["eval", str(tmp_path / "nockpt")]) == 2
    assert "no policy checkpoint" in capsys.readouterr().err


def test_hydra_configs_compose_into_a_run_config():
    from robolearn.train import RunConfig

    raw = compose("train", ["train.steps=7", "policy.horizon=8", "policy.n_action_steps=4"])
    assert raw["policy_class"] == "diffusion"
    assert raw["out_dir"] == "runs/pusht_diffusion"
    run = RunConfig.from_dict(raw)
    assert run.train.steps == 7 and run.policy["horizon"] == 8 and run.task.obs_keys == ["state"]
    demo = compose("demo", [])
    assert demo["policy"]["down_dims"] == [64, 128, 256] and demo["train"]["final_eval_episodes"] == 50
    with pytest.raises(Exception, match="nonexistent"):
        compose("train", ["task=nonexistent"])


def test_eval_overrides_change_inference_settings_and_are_validated():
    from robolearn.cli import with_overrides

    config = tiny_diffusion().config
    changed = with_overrides(config, ["scheduler=ddpm", "num_inference_steps=5"])
    assert changed.scheduler == "ddpm" and changed.num_inference_steps == 5 and config.scheduler == "ddim"
    with pytest.raises(ValueError, match="FIELD=VALUE"):
        with_overrides(config, ["integrator=midpoint"])
    with pytest.raises(ValueError, match="scheduler must be one of"):
        with_overrides(config, ["scheduler=euler"])


@pytest.mark.parametrize("policy", ["diffusion", "flow", "regression", "energy", "energy_ibc"])
def test_every_policy_config_composes_into_its_dataclass(policy):
    from robolearn.registry import POLICIES
    from robolearn.train import RunConfig

    run = RunConfig.from_dict(compose("train", [f"policy={policy}", "task=particle"]))
    config_class = POLICIES.get(run.policy_class).config_class
    config = config_class(obs_shapes={"state": [2]}, action_dim=2, **run.policy)
    assert run.task.name == "particle" and config.horizon == run.policy["horizon"]


def test_collect_has_one_parser_for_the_task_and_the_rig(capsys):
    assert main(["collect", "--task", "no_such_task", "--episodes", "1"]) == 2
    assert "cannot load task 'no_such_task'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main(["collect", "--help"])
    assert exit_info.value.code == 0 and "--expert" in capsys.readouterr().out


def test_eval_execution_modes_reach_the_loop_and_are_validated(tmp_path, capsys):
    save_policy(tiny_diffusion(), tmp_path / "ckpt", task=TaskConfig())
    runs = {}
    for mode in (["--execution", "receding"], ["--execution", "rtc", "--delay-steps", "0", "--blend-steps", "0"]):
        assert main(["eval", str(tmp_path / "ckpt"), "--episodes", "1", "--json", *mode]) == 0
        runs[mode[1]] = json.loads(capsys.readouterr().out)
    # a chunk that is ready at once and switched to without blending is receding horizon, to the action
    assert runs["rtc"]["score_mean"] == runs["receding"]["score_mean"]
    assert runs["rtc"]["mean_steps"] == runs["receding"]["mean_steps"]
    assert (runs["rtc"]["execution"], runs["receding"]["execution"]) == ("rtc", "receding")
    assert main(["eval", str(tmp_path / "ckpt"), "--execution", "fastest"]) == 2
    assert "unknown chunk execution mode 'fastest'" in capsys.readouterr().err
    assert main(["eval", str(tmp_path / "ckpt"), "--delay-steps", "2"]) == 2
    assert "--delay-steps and --blend-steps only apply with --execution rtc" in capsys.readouterr().err


def test_bench_lists_the_benchmarks_and_runs_one_with_its_own_arguments(capsys):
    assert main(["bench"]) == 0
    listing = capsys.readouterr().out
    assert "loop " in listing and "vector_env " in listing and "steering " in listing
    assert main(["bench", "loop", "--help"]) == 0
    assert "--seconds" in capsys.readouterr().out  # the script's own parser answered
    assert main(["bench", "nope"]) == 2
    assert "no benchmark 'nope'; available: " in capsys.readouterr().err


def test_info_counts_the_success_labels(tmp_path, capsys):
    from robolearn.data.store import EpisodeStore

    store = EpisodeStore.create(tmp_path / "s.zarr", fps=10, task="lift")
    for success in (True, False, True, None):
        meta = {} if success is None else {"success": success}
        store.append_episode({"state": np.zeros((3, 2), np.float32)}, **meta)
    assert main(["info", str(tmp_path / "s.zarr")]) == 0
    assert "success: 2 of 3 labelled episodes (1 unlabelled)" in capsys.readouterr().out


def test_eval_json_is_strict_json_with_null_for_undefined_intervals(tmp_path, capsys):
    save_policy(tiny_diffusion(), tmp_path / "ckpt", task=TaskConfig())
    assert main(["eval", str(tmp_path / "ckpt"), "--episodes", "1", "--n-envs", "1", "--json"]) == 0

    def refuse(constant):
        raise AssertionError(f"{constant} is not JSON")

    report = json.loads(capsys.readouterr().out, parse_constant=refuse)
    assert report["n_episodes"] == 1 and report["score_low"] is None and report["score_high"] is None  # one episode
    assert 0.0 <= report["score_mean"] <= 1.0


def test_strict_json_turns_every_non_finite_number_into_null():
    from robolearn.commands.evaluate import strict_json

    value = {"a": float("nan"), "b": [1.5, float("inf"), {"c": np.float32(-np.inf)}], "d": np.float64(2.0),
             "e": (np.int64(3), "x", None, True)}
    assert json.loads(strict_json(value)) == {"a": None, "b": [1.5, None, {"c": None}], "d": 2.0,
                                              "e": [3, "x", None, True]}


def test_info_verify_reads_every_chunk_and_fails_in_one_line_on_a_damaged_store(tmp_path, capsys):
    from robolearn.data.store import EpisodeStore

    store = synthetic_pusht_store(tmp_path / "s.zarr", n_episodes=2, length=5)
    assert main(["info", str(store.path), "--verify"]) == 0
    out = capsys.readouterr().out
    assert "  verified: every chunk of 2 keys read and decoded (2 episodes, 10 steps)" in out
    assert "    state            chunks 1" in out
    assert main(["info", str(store.path)]) == 0  # without --verify only the record is read
    assert "verified" not in capsys.readouterr().out
    chunk = next(p for p in (store.path / "data" / "state").rglob("*") if p.is_file() and p.name != "zarr.json")
    chunk.write_bytes(b"\x00garbled" * 3)
    assert main(["info", str(store.path), "--verify"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith(f"robolearn info: error: store {store.path} failed verification (1 problem): - key 'state'")
    assert "does not decode" in err
    assert EpisodeStore.open(store.path).n_episodes == 2  # the record itself is intact: only --verify reads the chunk
