"""Energy-descent head: config, shapes, training through the unrolled descent, descent and early stop,
checkpoints, the energy as an "unsure" signal (higher on observations unlike the demonstrations), both goals of
the two-goal particle task, and the energy reaching the control loop (recorded per decision, gated)."""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from robolearn.config_files import compose
from robolearn.control.chunking import ChunkExecution, make_runner
from robolearn.control.energy_gate import EnergyGate
from robolearn.control.executor import PolicyRunner
from robolearn.control.loop import ControlLoop
from robolearn.policies.checkpoint import load_policy, save_policy
from robolearn.policies.energy_descent import EnergyDescentConfig, EnergyDescentPolicy
from robolearn.sim.particle import GOALS, ParticleEnv, scripted_demos
from tests.particle import PARTICLE, fitted, rollout, train, trained_on_particles

UNET = {"down_dims": [32], "diffusion_step_embed_dim": 16}
TRANSFORMER = {"backbone": "transformer", "n_layer": 2, "n_emb": 32, "n_head": 2, "attn_dropout": 0.0}
CHUNK = {"obs_shapes": {"state": [3]}, "action_dim": 2, "horizon": 8, "n_obs_steps": 2, "n_action_steps": 4}


def chunk_policy(**overrides) -> EnergyDescentPolicy:
    policy = EnergyDescentPolicy(EnergyDescentConfig(**{**CHUNK, **UNET, "down_dims": [16, 32], **overrides}))
    policy.normalizer.fit({"state": {"min": np.zeros(3), "max": np.ones(3)},
                           "action": {"min": -np.ones(2), "max": np.ones(2)}})
    return policy


@pytest.fixture(scope="module")
def trained(particle_windows) -> EnergyDescentPolicy:
    return trained_on_particles(lambda: EnergyDescentPolicy(EnergyDescentConfig(**PARTICLE, **UNET)),
                                particle_windows, steps=800)


# ----- config -----

def test_yaml_names_every_config_field_and_policy_energy_is_this_head():
    raw = compose("train", ["policy=energy"])
    assert raw["policy_class"] == "energy_descent"
    fields = {k: v for k, v in raw["policy"].items() if k != "name"}
    assert set(fields) == {f.name for f in dataclasses.fields(EnergyDescentConfig)} - {"obs_shapes", "image_keys",
                                                                                       "action_dim"}
    assert compose("train", ["policy=energy_ibc"])["policy_class"] == "energy_ibc"


def test_config_round_trips_and_rejects_bad_values():
    cfg = EnergyDescentConfig(**CHUNK, **TRANSFORMER)
    assert EnergyDescentConfig(**json.loads(json.dumps(dataclasses.asdict(cfg)))) == cfg
    for bad, match in [({"loss_iterates": "first"}, "loss_iterates"), ({"descent_steps": 0}, "descent_steps"),
                       ({"step_size": -1.0}, "step_size"), ({"anchor_fraction": 1.0}, "anchor_fraction"),
                       ({"num_starts": 0}, "num_starts"), ({"backbone": "mlp"}, "backbone"),
                       ({**TRANSFORMER, "n_emb": 30, "n_head": 4}, "n_emb"),
                       ({"noise_start_fraction": 0.9}, "noise_start_fraction"),
                       ({"noise_start_candidates": 0}, "noise_start_candidates")]:
        with pytest.raises(ValueError, match=match):
            EnergyDescentConfig(**CHUNK, **bad)


# ----- shapes, training, descent -----

@pytest.mark.parametrize("backbone", [UNET, TRANSFORMER], ids=["unet", "transformer"])
def test_shapes_determinism_and_scoring(backbone):
    policy = chunk_policy(**backbone).eval()
    obs = {"state": torch.rand(3, 2, 3)}
    gen = lambda: torch.Generator().manual_seed(5)  # noqa: E731
    chunks, energies = policy.sample_with_energy(obs, n=4, generator=gen())
    assert chunks.shape == (3, 4, 8, 2) and energies.shape == (3, 4) and (energies >= 0).all()
    assert torch.equal(chunks, policy.sample(obs, n=4, generator=gen()))
    assert chunks.abs().max() <= 1.0 + 1e-6  # clipped to the normalized box (actions span [-1, 1] here)
    with torch.no_grad():
        rescored = policy.energy(obs, chunks)
    assert torch.allclose(rescored, energies, atol=1e-5)  # the energy of what was returned
    assert policy.act(obs).shape == (3, 4, 2)
    actions, decision = policy.act_with_energy(obs, generator=gen())
    assert actions.shape == (3, 4, 2) and decision.shape == (3,)
    assert policy.nfe() == 2 * 4 + 1 and policy.nfe(steps=2) == 5
    with pytest.raises(ValueError, match="noise"):
        policy.sample(obs, noise=torch.zeros(3, 1, 8, 3))
    with pytest.raises(ValueError, match="chunks"):
        policy.energy(obs, chunks[:, 0])


@pytest.mark.parametrize("loss_iterates", ["last", "all"])
@pytest.mark.parametrize("backbone", [UNET, TRANSFORMER], ids=["unet", "transformer"])
def test_loss_falls_and_the_step_size_learns(particle_windows, backbone, loss_iterates):
    torch.manual_seed(0)
    policy = fitted(EnergyDescentPolicy(EnergyDescentConfig(**PARTICLE, **backbone, loss_iterates=loss_iterates)),
                    particle_windows)
    before = policy.step_size.item()
    losses = train(policy, particle_windows, steps=120)
    assert np.mean(losses[-20:]) < 0.5 * np.mean(losses[:10]), losses
    assert policy.step_size.item() != before  # alpha is a trained parameter


def two_mode_descent_ends(candidates: int) -> torch.Tensor:
    """First action coordinate after one descent step from 256 noise starts, for a policy trained on noise starts
    only, with `candidates` starts per window, where one observation was demonstrated with x = -0.8 and x = 0.8."""
    torch.manual_seed(0)
    policy = chunk_policy(horizon=1, n_obs_steps=1, n_action_steps=1, down_dims=[32], train_descent_steps=1,
                          anchor_fraction=0.0, noise_start_fraction=1.0, noise_start_candidates=candidates)
    opt = torch.optim.Adam(policy.parameters(), lr=3e-3)
    obs = {"state": torch.full((64, 1, 3), 0.5)}
    for _ in range(300):
        action = torch.zeros(64, 1, 2)
        action[:, 0, 0] = 0.8 * (2 * torch.randint(0, 2, (64,)) - 1)
        loss = policy.loss({"obs": obs, "action": action})
        opt.zero_grad()
        loss.backward()
        opt.step()
    policy.eval()
    return policy.sample({"state": torch.full((1, 1, 3), 0.5)}, n=256, steps=1, num_starts=1)[0, :, 0, 0]


def test_noise_starts_trained_on_their_closest_start_keep_both_modes():
    # one start per window: the MSE from a start that says nothing about the mode pulls every descent to the
    # average of the two; several with the closest one trained: the descents end at one mode or the other
    averaged = two_mode_descent_ends(candidates=1)
    assert (averaged.abs() < 0.3).float().mean() >= 0.9, averaged
    x = two_mode_descent_ends(candidates=4)
    assert (x.abs() < 0.3).float().mean() <= 0.3, x
    assert (x < -0.5).float().mean() >= 0.2 and (x > 0.5).float().mean() >= 0.2, x


def test_descent_lowers_the_energy_and_stops_early(trained):
    obs = {"state": torch.rand(32, 1, 2) * 0.5}
    cond = trained.encode_obs(obs)
    starts = trained.initial_noise(32, 1, torch.Generator().manual_seed(0))[:, 0]
    start_energy = trained.normalized_energy(cond, starts).detach()
    full = trained.descend(cond, starts, steps=6, early_stop_tol=0.0)
    assert (full.steps == 6).all()
    assert full.energies.mean() < 0.2 * start_energy.mean()
    stopping = trained.descend(cond, starts, steps=6, early_stop_tol=0.5)  # stop unless a step halves E
    assert (stopping.energies <= start_energy + 1e-6).all()  # a row never ends above where it started
    assert stopping.steps.float().mean() < 6 and (stopping.steps < 6).any()
    zero = trained.descend(cond, starts, steps=0)
    assert torch.equal(zero.chunks, starts.clamp(-1, 1)) and (zero.steps == 0).all()


def test_checkpoint_round_trip_gives_identical_energies_and_samples(trained, tmp_path):
    save_policy(trained, tmp_path / "ckpt")
    loaded = load_policy(tmp_path / "ckpt", device="cpu")
    assert isinstance(loaded, EnergyDescentPolicy) and loaded.config == trained.config
    assert loaded.step_size.item() == trained.step_size.item()
    obs = {"state": torch.rand(4, 1, 2)}
    chunks = torch.rand(4, 5, 1, 2) * 2 - 1
    with torch.no_grad():
        assert torch.equal(loaded.energy(obs, chunks), trained.energy(obs, chunks))
    gen = lambda: torch.Generator().manual_seed(3)  # noqa: E731
    assert torch.equal(loaded.sample(obs, n=2, generator=gen()), trained.sample(obs, n=2, generator=gen()))


# ----- what the energy says -----

def test_energy_is_higher_on_unfamiliar_observations(trained):
    demos = scripted_demos(10, seed=123)  # held out: the training demos used seed 1
    held_out = torch.from_numpy(np.concatenate([d["state"] for d in demos]))[:, None]
    # the arena's states lie in x in [-0.9, 0.9], y in [0, 0.45]; these lie well outside, in every direction
    unfamiliar = torch.tensor([[sx * s, sy * s] for s in (1.5, 3.0, 10.0) for sx, sy in
                               [(1, 1), (1, -1), (-1, -1), (-1, 1), (0, -1), (0, 1)]])[:, None]
    gen = torch.Generator().manual_seed(0)
    _, e_demo = trained.sample_with_energy({"state": held_out}, n=8, generator=gen)
    _, e_ood = trained.sample_with_energy({"state": unfamiliar}, n=8, generator=gen)
    print(f"decision energy: held-out demonstrations {e_demo.mean():.4f} (median {e_demo.median():.4f}), "
          f"unfamiliar {e_ood.mean():.4f} (median {e_ood.median():.4f})")
    assert e_ood.mean() > 3 * e_demo.mean()
    assert e_ood.median() > e_demo.median()


def test_energy_descent_keeps_both_goals(trained):
    r = rollout(trained)
    print(f"energy descent: success {r['success'].mean():.2f}, left/right {(r['goal'] == 0).sum()}/"
          f"{(r['goal'] == 1).sum()}, collisions {r['collision'].sum()}")
    assert r["success"].mean() >= 0.8, r
    assert min((r["goal"] == 0).mean(), (r["goal"] == 1).mean()) >= 0.1, r  # both modes, not one
    # from the start the demonstrations command one goal or the other (x = -0.8 or 0.8), never the midpoint, where
    # MSE goes; four descent steps from the middle of the two basins get most of the way for nearly every draw
    targets = trained.sample({"state": torch.zeros(1, 1, 2)}, n=64, generator=torch.Generator().manual_seed(0))
    x = targets[0, :, 0, 0]
    assert (x.abs() > 0.5).float().mean() >= 0.9 and (x < -0.5).any() and (x > 0.5).any(), x
    assert GOALS[0][0] < 0 < GOALS[1][0]


# ----- the energy in the control loop -----

def test_runner_records_every_decisions_energy(trained):
    envs = [ParticleEnv() for _ in range(4)]
    runner = PolicyRunner(trained, generator=torch.Generator().manual_seed(0))
    ControlLoop(envs, runner).run([0, 1, 2, 3])
    assert len(runner.energies) == runner.n_inferences == len(runner.latencies_s) > 0
    assert all(e.shape == (4,) and np.isfinite(e).all() for e in runner.energies)


def test_energy_gate_replans_then_hands_unsure_decisions_to_the_hook(trained):
    obs = {"state": np.array([[[0.0, 0.1]], [[30.0, -30.0]]], dtype=np.float32)}  # familiar, far off
    seen = {}

    def hold(envs, energies, actions):
        seen.update(envs=envs, energies=energies)
        return np.zeros_like(actions)

    actions, energies = trained.act_with_energy(obs, torch.Generator().manual_seed(0))
    threshold = float(energies.min() + energies.max()) / 2
    gate = EnergyGate(threshold, replans=2, on_uncertain=hold)
    gated, gated_energies = gate.apply(trained, obs, actions, energies, torch.Generator().manual_seed(1))
    assert list(seen["envs"]) == [int(energies.argmax())] and gate.n_uncertain == 1 and gate.n_replans == 2
    assert np.array_equal(gated[seen["envs"]], np.zeros_like(gated[seen["envs"]]))
    kept = 1 - seen["envs"][0]
    assert np.array_equal(gated[kept], actions[kept]) and gated_energies[kept] == energies[kept]
    with pytest.raises(ValueError, match="threshold"):
        EnergyGate(float("nan"))
    with pytest.raises(ValueError, match="receding"):
        ChunkExecution(mode="ensemble", energy_threshold=1.0)
    runner = make_runner(trained, ChunkExecution(energy_threshold=threshold, energy_replans=3))
    assert isinstance(runner, PolicyRunner) and runner.energy_gate.replans == 3


def test_evaluation_reports_the_mean_decision_energy(trained):
    from robolearn.config_files import task_by_name
    from robolearn.eval.rollout import evaluate, format_report

    report = evaluate(trained, task_by_name("particle"), n_episodes=6, n_envs=3, progress=False)
    assert report.decision_energy_mean is not None and 0 <= report.decision_energy_mean < 1.0
    assert "mean decision energy" in format_report(report)
