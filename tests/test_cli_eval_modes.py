"""`robolearn critic train`, `robolearn worldmodel train`, `robolearn eval --steer` and `--imagine`, end to end on
the particle task: tiny models trained through the command line, then evaluated through it."""
import json

import numpy as np
import pytest
import torch

from robolearn.cli import main
from robolearn.config_files import task_by_name
from robolearn.data.store import EpisodeStore
from robolearn.models.critic import load_critic
from robolearn.models.world_model import load_world_model
from robolearn.policies.checkpoint import save_policy
from robolearn.policies.diffusion import DiffusionConfig, DiffusionPolicy
from robolearn.sim.particle import ParticleEnv, scripted_demos
from tests.helpers import tiny_diffusion

CRITIC = ["steps=300", "batch_size=128", "hidden=[64,64]", "lr=3e-3", "gamma=0.95", "expectile=0.8",
          "target_update=0.05", "device=cpu"]
WORLD_MODEL = ["steps=60", "batch_size=64", "hidden=[64,64]", "latent_dim=16", "rollout_steps=3", "device=cpu"]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A particle store where only the right-hand goal counts as success, a tiny policy checkpoint on the particle
    task, and a critic and a world model trained on the store through the command line."""
    root = tmp_path_factory.mktemp("eval_modes")
    env = ParticleEnv()
    episodes = []
    for demo in scripted_demos(40, seed=0, env=env, noise=0.05):
        goal = int(np.argmin(np.linalg.norm(env.goals - demo["action"][-1], axis=1)))
        episodes.append((demo, {"success": goal == 1}))
    store = EpisodeStore.create(root / "particle.zarr", fps=10, task="particle")
    store.append_episodes(episodes, commit_every=len(episodes))
    torch.manual_seed(0)
    policy = DiffusionPolicy(DiffusionConfig(obs_shapes={"state": [2]}, action_dim=2, horizon=8, n_obs_steps=2,
                                             n_action_steps=4, down_dims=[16, 32], diffusion_step_embed_dim=16))
    policy.normalizer.fit({"state": {"min": -np.ones(2), "max": np.ones(2)},
                           "action": {"min": -np.ones(2), "max": np.ones(2)}})
    save_policy(policy, root / "policy", task=task_by_name("particle"))
    return {"root": root, "store": root / "particle.zarr", "policy": root / "policy", "critic": root / "critic",
            "world_model": root / "world_model"}


@pytest.fixture(scope="module")
def critic_output(files):
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(["critic", "train", "--policy", str(files["policy"]), "--dataset", str(files["store"]),
                     "--out", str(files["critic"]), "--no-progress", *CRITIC])
    assert code == 0
    return out.getvalue()


@pytest.fixture(scope="module")
def world_model_output(files):
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out):  # the store given twice: demonstrations and rollouts are concatenated
        code = main(["worldmodel", "train", "--task", "particle", "--dataset", str(files["store"]), "--dataset",
                     str(files["store"]), "--out", str(files["world_model"]), "--no-progress", *WORLD_MODEL])
    assert code == 0
    return out.getvalue()


def run_json(capsys, argv: list[str]) -> dict:
    capsys.readouterr()
    assert main([*argv, "--json"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1
    return json.loads(lines[0])


def fails(capsys, argv: list[str]) -> str:
    capsys.readouterr()
    assert main(argv) == 2
    return capsys.readouterr().err


def test_critic_train_matches_the_policy_and_learns_which_goal_succeeds(files, critic_output):
    assert f"saved critic to {files['critic']}" in critic_output
    assert "n_obs_steps 2, action_steps 4, 300 steps" in critic_output  # taken from the policy checkpoint
    final = critic_output.split("final losses (step 300: ")[1]
    assert all(np.isfinite(float(part.split()[1])) for part in final.rstrip(")\n").split(", "))
    critic = load_critic(files["critic"], device="cpu")
    assert critic.config.method == "iql" and critic.config.obs_keys == ["state"]  # the policy's task's keys
    assert (critic.config.n_obs_steps, critic.config.action_steps) == (2, 4)
    state = torch.tensor([[0.0, -0.5], [0.0, -0.45]])[None].expand(3, -1, -1).clone()
    state[1] += 0.2
    state[2] -= 0.2
    goals = torch.tensor(ParticleEnv().goals, dtype=torch.float32)
    chunks = goals[:, None, :].expand(2, 4, 2)[None].expand(3, -1, -1, -1)  # candidate 0: left goal, 1: right goal
    with torch.no_grad():
        q = critic.score({"state": state}, chunks)
    assert torch.all(q[:, 1] > q[:, 0]), f"heading for the successful goal must score higher: {q}"


def test_eval_steer_reports_its_settings_and_k1_is_plain_eval(files, critic_output, capsys):
    common = [str(files["policy"]), "--episodes", "2", "--n-envs", "2", "--device", "cpu"]
    plain = run_json(capsys, ["eval", *common])
    k1 = run_json(capsys, ["eval", *common, "--steer", f"critic={files['critic']}", "--k", "1"])
    for key in ("task", "n_episodes", "success_rate", "score_mean", "mean_steps", "max_reward_mean"):
        assert k1[key] == plain[key], f"{key}: one candidate per decision is the policy itself"
    assert "steering" not in plain
    steering = k1["steering"]
    assert steering["latency_ms_per_decision"] == k1["inference_ms_per_chunk"] > 0
    assert {k: v for k, v in steering.items() if k != "latency_ms_per_decision"} == {
        "critic": str(files["critic"]), "critic_method": "iql", "k": 1, "mode": "argmax", "guidance_scale": 0.0}
    soft = run_json(capsys, ["eval", *common, "--steer", f"critic={files['critic']}", "--k", "4", "--steer-mode",
                             "softmax", "--beta", "0.5", "--guidance", "0.2"])
    assert soft["n_episodes"] == 2 and soft["task"] == "particle" and 0.0 <= soft["score_mean"]
    assert (soft["steering"]["k"], soft["steering"]["mode"], soft["steering"]["beta"],
            soft["steering"]["guidance_scale"]) == (4, "softmax", 0.5, 0.2)
    capsys.readouterr()
    assert main(["eval", *common, "--steer", f"critic={files['critic']}", "--k", "2"]) == 0
    text = capsys.readouterr().out
    assert "success rate" in text and f"steering: critic={files['critic']}, critic_method=iql, k=2" in text


def test_steer_errors_are_one_clear_line(files, critic_output, capsys):
    base = ["eval", str(files["policy"]), "--episodes", "1", "--device", "cpu"]
    err = fails(capsys, [*base, "--steer", str(files["critic"])])
    assert "robolearn eval: error: --steer expects critic=PATH" in err and str(files["critic"]) in err
    assert "--steer expects critic=PATH" in fails(capsys, [*base, "--steer", "q=x"])
    assert "--k, --beta only apply to steered evaluation" in fails(capsys, [*base, "--k", "4", "--beta", "2"])
    assert "no critic checkpoint at" in fails(capsys, [*base, "--steer", f"critic={files['root'] / 'none'}"])
    # a critic scoring 8 actions from the current step cannot judge chunks holding 7 from there
    long = files["root"] / "critic_long"
    capsys.readouterr()
    assert main(["critic", "train", "--policy", str(files["policy"]), "--dataset", str(files["store"]), "--out",
                 str(long), "--no-progress", "steps=0", "action_steps=8", "device=cpu"]) == 0
    assert "action_steps 8, 0 steps" in capsys.readouterr().out  # an explicit override beats the policy's value
    err = fails(capsys, [*base, "--steer", f"critic={long}"])
    assert f"robolearn eval: error: cannot steer {files['policy']} with critic {long}:" in err
    assert "chunks hold only 7 from there" in err
    err = fails(capsys, [*base, "--steer", f"critic={files['critic']}", "--steer-mode", "softmax", "--beta", "0"])
    assert "softmax steering needs a temperature beta > 0" in err


def test_train_verbs_refuse_bad_configs_clearly(files, capsys):
    store = str(files["store"])
    err = fails(capsys, ["critic", "train", "--dataset", store, "stepz=3"])
    assert "robolearn critic train: error: robolearn critic train expects FIELD=VALUE with a field of CriticConfig" in err
    assert "needs to know what is observed" in fails(capsys, ["critic", "train", "--dataset", store, "steps=1"])
    assert "steps must be an integer, got 'abc'" in fails(capsys, ["critic", "train", "--task", "particle", "steps=abc"])
    assert "lr must be a number, got 'fast'" in fails(capsys, ["critic", "train", "--task", "particle", "lr=fast"])
    assert "no critic config 'td'" in fails(capsys, ["critic", "train", "--task", "particle", "--config", "td"])
    assert "no task config 'nowhere'" in fails(capsys, ["worldmodel", "train", "--task", "nowhere"])
    err = fails(capsys, ["worldmodel", "train", "--task", "particle", "--dataset", store, "latent=3"])
    assert "robolearn worldmodel train: error:" in err and "WorldModelConfig" in err
    with pytest.raises(SystemExit):
        main(["critic"])  # the sub-verb is required


def test_worldmodel_train_then_eval_imagine(files, world_model_output, capsys):
    out = world_model_output
    assert f"saved world model to {files['world_model']}" in out and "final losses (step 60: " in out
    assert "80 episodes" in out  # 2 x 40
    model = load_world_model(files["world_model"], device="cpu")
    store = EpisodeStore.open(files["store"])
    assert model.config.obs_keys == ["state"] and model.config.action_dim == 2
    assert model.config.max_episode_steps == int(store.episode_lengths.max())
    report = run_json(capsys, ["eval", str(files["policy"]), "--imagine", str(files["world_model"]), "--episodes", "3",
                               "--n-envs", "3", "--device", "cpu"])
    assert report["task"] == "particle (imagined)" and report["n_episodes"] == 3 and report["score_mean"] is None
    assert report["imagination"] == {"world_model": str(files["world_model"]), "initial_observations": str(store.path),
                                     "max_episode_steps": model.config.max_episode_steps}
    assert 1 <= report["mean_steps"] <= model.config.max_episode_steps
    again = run_json(capsys, ["eval", str(files["policy"]), "--imagine", str(files["world_model"]), "--episodes", "3",
                              "--n-envs", "3", "--device", "cpu", "--initial-observations", str(files["store"])])
    assert again["mean_steps"] == report["mean_steps"]  # same seeds, same starts, same imagined episodes


def test_imagine_refuses_a_policy_the_world_model_cannot_serve(files, world_model_output, capsys, tmp_path):
    other = tmp_path / "three_dim_policy"
    save_policy(tiny_diffusion(obs_dim=2, action_dim=3), other, task=task_by_name("particle"))
    err = fails(capsys, ["eval", str(other), "--imagine", str(files["world_model"]), "--device", "cpu"])
    assert "robolearn eval: error: world model" in err and "takes 2-dim actions, the policy gives 3" in err
    wide = tmp_path / "wide_policy"
    save_policy(tiny_diffusion(obs_dim=5), wide, task=task_by_name("particle"))
    err = fails(capsys, ["eval", str(wide), "--imagine", str(files["world_model"]), "--device", "cpu"])
    assert "the policy reads 'state' with shape [5], world model" in err and "gives [2]" in err
    err = fails(capsys, ["eval", str(wide), "--initial-observations", str(files["store"])])
    assert "--initial-observations only applies with --imagine" in err


def test_eval_record_keeps_every_episode_as_evaluated_and_refuses_another_tasks_store(files, tmp_path, capsys):
    record = tmp_path / "rollouts.zarr"
    for _ in range(2):  # a second evaluation adds to the same store
        assert main(["eval", str(files["policy"]), "--episodes", "3", "--n-envs", "3", "--json", "--record",
                     str(record)]) == 0
        report = json.loads(capsys.readouterr().out)
    store = EpisodeStore.open(record)
    assert store.n_episodes == 6 and store.task == "particle" and store.attrs["source"] == "policy rollouts"
    halves = [{store.episode_meta(i)["seed"]: store.episode_meta(i)["success"] for i in range(j, j + 3)} for j in (0, 3)]
    assert sorted(halves[0]) == [100000, 100001, 100002]  # committed in the order the episodes ended
    assert halves[0] == halves[1]  # same seeds, same policy, same sampling seed: the same outcomes
    assert sum(halves[0].values()) == round(report["success_rate"] * 3)
    assert {"state", "action", "reward", "timestamp"} <= set(store.keys)
    other = EpisodeStore.create(tmp_path / "other.zarr", fps=10, task="pusht")
    other.append_episode({"state": np.zeros((2, 2), np.float32)})
    other.close()  # one writer per store: release it for the evaluation to try
    assert main(["eval", str(files["policy"]), "--episodes", "1", "--record", str(other.path)]) == 2
    assert "holds episodes of task 'pusht', not 'particle'" in capsys.readouterr().err
