"""Value-guided steering: re-ranking picks what the critic prefers, guidance climbs Q, K=1 is the base policy."""
import numpy as np
import pytest
import torch

from robolearn.control.executor import PolicyRunner
from robolearn.control.loop import ControlLoop
from robolearn.data.store import EpisodeStore
from robolearn.eval.rollout import evaluate
from robolearn.eval.steering import SteeredPolicy, critic_view, guided_sample
from robolearn.models.critic import Critic, CriticConfig, train_critic
from robolearn.policies.base import Policy, PolicyConfig
from robolearn.policies.diffusion import DiffusionConfig, DiffusionPolicy
from robolearn.policies.flow import FlowConfig, FlowMatchingPolicy
from robolearn.policies.regression import RegressionConfig, RegressionPolicy
from robolearn.sim.particle import ParticleEnv, scripted_demos
from robolearn.task import TaskConfig
from tests.helpers import tiny_diffusion

PARTICLE = TaskConfig(name="particle", env="robolearn.sim.particle:ParticleEnv", env_kwargs={}, obs_keys=["state"],
                      dataset="particle.zarr", dataset_format="robolearn", dataset_url="", score_key="distance")
SHAPE = dict(obs_shapes={"state": [2]}, action_dim=2, horizon=8, n_obs_steps=2, n_action_steps=4)


class TwoGoalPolicy(Policy):
    """Every candidate heads for one of the particle task's two goals, chosen by a fair coin."""

    goals = torch.tensor(ParticleEnv().goals, dtype=torch.float32)

    def loss(self, batch):
        return torch.zeros(())

    def sample(self, obs, n=1, generator=None):
        b = self.check_obs(obs)
        pick = torch.randint(0, 2, (b, n), generator=generator)
        return self.goals[pick][:, :, None, :].expand(b, n, self.config.horizon, 2).clone()


class QuadraticScorer:
    """Q = -|executed actions - target|^2: a critic whose optimum is known."""

    n_obs_steps, action_steps = 1, 4

    def __init__(self, target: float):
        self.target = target

    def score(self, obs, chunks):
        return -(chunks - self.target).square().sum(dim=(2, 3))


@pytest.fixture(scope="module")
def critic(tmp_path_factory) -> Critic:
    """IQL on particle demos where only reaching the right-hand goal counts as success."""
    env = ParticleEnv()
    episodes = []
    for demo in scripted_demos(60, seed=0, env=env, noise=0.05):
        goal = int(np.argmin(np.linalg.norm(env.goals - demo["action"][-1], axis=1)))
        episodes.append((demo, {"success": goal == 1}))
    store = EpisodeStore.create(tmp_path_factory.mktemp("particle") / "p.zarr", fps=10)
    store.append_episodes(episodes, commit_every=len(episodes))
    cfg = CriticConfig(obs_keys=["state"], n_obs_steps=2, action_steps=4, gamma=0.95, expectile=0.8, target_update=0.05,
                       hidden=[64, 64], steps=300, batch_size=128, lr=3e-3, device="cpu")
    return train_critic(store, cfg)


def unit_box(policy: Policy) -> Policy:
    """Normalized actions equal raw ones, so guidance steps are easy to reason about."""
    policy.normalizer.fit({"state": {"min": -np.ones(2), "max": np.ones(2)},
                           "action": {"min": -np.ones(2), "max": np.ones(2)}})
    return policy.eval()


def tiny_heads() -> list[Policy]:
    torch.manual_seed(0)
    unet = dict(down_dims=[16, 32], diffusion_step_embed_dim=16)
    return [unit_box(DiffusionPolicy(DiffusionConfig(**SHAPE, **unet))),
            unit_box(FlowMatchingPolicy(FlowConfig(**SHAPE, **unet, step_size_embed_dim=8)))]


def obs_batch(b: int = 3) -> dict[str, torch.Tensor]:
    return {"state": torch.linspace(-0.2, 0.2, b * 4).reshape(b, 2, 2)}


def test_argmax_picks_the_preferred_candidate_every_time(critic):
    base = TwoGoalPolicy(PolicyConfig(**SHAPE))
    steered = SteeredPolicy(base, critic, k=8, mode="argmax")
    obs = obs_batch(4)
    for seed in range(20):
        chunks = steered.sample(obs, n=2, generator=torch.Generator().manual_seed(seed))
        assert chunks.shape == (4, 2, 8, 2)
        assert torch.all(chunks[..., 0] == 1.0), "argmax steering must always take the right-hand (successful) goal"
    unsteered = base.sample(obs, n=64, generator=torch.Generator().manual_seed(0))[:, :, 0, 0]
    assert (unsteered < 0).any() and (unsteered > 0).any()  # the base policy itself goes both ways


def test_steered_policy_runs_in_the_loop_and_evaluate_unchanged(critic):
    steered = SteeredPolicy(TwoGoalPolicy(PolicyConfig(**SHAPE)), critic, k=8)
    envs = [ParticleEnv() for _ in range(4)]
    results = ControlLoop(envs, PolicyRunner(steered, torch.Generator().manual_seed(0))).run(range(4))
    assert [r.final_info["goal"] for r in results] == [1, 1, 1, 1]
    report = evaluate(steered, PARTICLE, n_episodes=4, n_envs=4, progress=False)
    assert report.success_rate == 1.0 and report.n_episodes == 4


def test_softmax_temperature_moves_between_argmax_and_the_base_policy(critic):
    base = TwoGoalPolicy(PolicyConfig(**SHAPE))
    left, right = (goal.expand(8, 2) for goal in TwoGoalPolicy.goals)
    candidates = torch.stack([left, right, left, left])[None].expand(400, -1, -1, -1)  # one good of four
    obs = {"state": torch.zeros(400, 2, 2)}

    def right_share(beta: float) -> float:
        steered = SteeredPolicy(base, critic, k=4, mode="softmax", beta=beta)
        chosen, index, scores = steered.select(obs, candidates, torch.Generator().manual_seed(1))
        assert scores.shape == (400, 4) and torch.equal(chosen[:, 0], candidates[torch.arange(400), index, 0])
        return float((index == 1).float().mean())

    assert right_share(1e-3) == 1.0  # cold: argmax
    assert 0.18 < right_share(1e3) < 0.32  # hot: a uniform pick, one chance in four


def test_k1_and_zero_guidance_reproduce_the_base_sample(critic):
    policy = tiny_diffusion(obs_dim=2).eval()
    obs = {"state": torch.rand(3, 2, 2) * 512}
    base = policy.sample(obs, n=1, generator=torch.Generator().manual_seed(7))
    steered = SteeredPolicy(policy, critic, k=1, mode="softmax").sample(obs, 1, torch.Generator().manual_seed(7))
    torch.testing.assert_close(steered, base, rtol=0, atol=0)
    act = SteeredPolicy(policy, critic, k=1).act(obs, generator=torch.Generator().manual_seed(7))
    np.testing.assert_array_equal(act, base[:, 0, 1:5].numpy())
    for head in tiny_heads():
        want = head.sample(obs_batch(), n=3, generator=torch.Generator().manual_seed(3))
        got = guided_sample(head, QuadraticScorer(0.5), obs_batch(), n=3, scale=0.0,
                            generator=torch.Generator().manual_seed(3))
        torch.testing.assert_close(got, want, rtol=0, atol=0)


@pytest.mark.parametrize("head_index", [0, 1], ids=["diffusion", "flow"])
def test_gradient_guidance_climbs_the_critic(head_index, critic):
    head = tiny_heads()[head_index]
    scorer = QuadraticScorer(target=0.5)
    obs = obs_batch()

    def mean_score(scale: float) -> float:
        chunks = guided_sample(head, scorer, obs, n=16, scale=scale, generator=torch.Generator().manual_seed(0))
        return float(scorer.score(obs, chunks[:, :, 1:5].reshape(-1, 1, 4, 2)).mean())

    scores = [mean_score(s) for s in (0.0, 0.1, 0.3)]
    assert scores[0] < scores[1] < scores[2], f"more guidance must mean higher Q: {scores}"
    assert scores[2] > -0.5 * abs(scores[0]) - 0.05  # pulled most of the way to the optimum (Q = 0)
    learned = []
    for scale in (0.0, 3.0):
        chunks = guided_sample(head, critic, obs, 16, scale, torch.Generator().manual_seed(0))
        with torch.no_grad():
            learned.append(float(critic_view(head, critic, obs, chunks).mean()))
    assert learned[1] > learned[0] + 0.03, f"guidance must also climb a learned critic's Q: {learned}"
    steered = SteeredPolicy(head, scorer, k=1, guidance_scale=0.3)
    torch.testing.assert_close(steered.sample(obs, 16, torch.Generator().manual_seed(0)),
                               guided_sample(head, scorer, obs, 16, 0.3, torch.Generator().manual_seed(0)))


def test_mismatches_are_refused_clearly(critic):
    long_memory = Critic(CriticConfig(obs_shapes={"state": [2]}, action_dim=2, n_obs_steps=3, action_steps=4))
    with pytest.raises(ValueError, match="reads 3 frames of history but the policy keeps only 2"):
        SteeredPolicy(TwoGoalPolicy(PolicyConfig(**SHAPE)), long_memory)
    long_chunks = Critic(CriticConfig(obs_shapes={"state": [2]}, action_dim=2, n_obs_steps=2, action_steps=8))
    with pytest.raises(ValueError, match="chunks hold only 7 from there"):
        SteeredPolicy(TwoGoalPolicy(PolicyConfig(**SHAPE)), long_chunks)
    other_keys = Critic(CriticConfig(obs_shapes={"pos": [2]}, action_dim=2, n_obs_steps=2, action_steps=4))
    with pytest.raises(ValueError, match="the critic reads 'pos', which the policy does not give"):
        SteeredPolicy(TwoGoalPolicy(PolicyConfig(**SHAPE)), other_keys)
    regression = unit_box(RegressionPolicy(RegressionConfig(**SHAPE, hidden=[8])))
    with pytest.raises(TypeError, match="gradient guidance needs a diffusion or flow head"):
        SteeredPolicy(regression, critic, guidance_scale=1.0)
    with pytest.raises(ValueError, match="mode must be one of"):
        SteeredPolicy(regression, critic, mode="best")
    with pytest.raises(TypeError, match="must have score"):
        SteeredPolicy(regression, object())


@pytest.mark.parametrize("head_index", [0, 1], ids=["diffusion", "flow"])
def test_sample_guidance_hook_sees_every_step_and_none_changes_nothing(head_index):
    head = tiny_heads()[head_index]
    obs = obs_batch()
    runs = {"ddim": {}, "ddpm": {"scheduler": "ddpm"}} if head_index == 0 else {"euler": {"steps": 5},
                                                                                "midpoint": {"integrator": "midpoint"}}
    for name, kwargs in runs.items():
        calls: list[tuple[tuple[int, ...], float]] = []

        def record(x, dt, calls=calls):
            calls.append((tuple(x.shape), dt))
            return torch.zeros_like(x)

        plain = head.sample(obs, 4, torch.Generator().manual_seed(5), **kwargs)
        none = head.sample(obs, 4, torch.Generator().manual_seed(5), guidance=None, **kwargs)
        zero = head.sample(obs, 4, torch.Generator().manual_seed(5), guidance=record, **kwargs)
        torch.testing.assert_close(none, plain, rtol=0, atol=0)
        torch.testing.assert_close(zero, plain, rtol=0, atol=0)  # the hook's delta is all it changes
        steps = {"ddim": 10, "ddpm": 100, "euler": 5, "midpoint": 10}[name]
        assert len(calls) == steps, f"{name}: one call per denoising / integration step"
        assert all(shape == (3 * 4, 8, 2) for shape, _ in calls)  # flat normalized chunks (B * n, horizon, A)
        assert sum(dt for _, dt in calls) == pytest.approx(1.0)  # dt: the step's share of the pass


@pytest.mark.parametrize("head_index", [0, 1], ids=["diffusion", "flow"])
def test_a_hand_written_guide_through_the_hook_raises_a_toy_critic(head_index):
    """Guidance toward x = 0.5 (a toy critic -|x - 0.5|^2 in normalized units); unit_box makes raw = normalized."""
    head = tiny_heads()[head_index]
    obs = obs_batch()

    def toward_half(strength: float):
        return lambda x, dt: strength * dt * -2.0 * (x - 0.5)  # dt * strength * grad of -|x - 0.5|^2

    def q(chunks: torch.Tensor) -> float:
        return float(-(chunks - 0.5).square().sum(dim=(2, 3)).mean())

    schedulers = [{}, {"scheduler": "ddpm"}] if head_index == 0 else [{}, {"steps": 40}]
    for kwargs in schedulers:
        plain = q(head.sample(obs, 16, torch.Generator().manual_seed(0), **kwargs))
        guided = [q(head.sample(obs, 16, torch.Generator().manual_seed(0), guidance=toward_half(s), **kwargs))
                  for s in (0.3, 1.0)]
        assert plain < guided[0] < guided[1], f"{kwargs}: stronger guidance must score higher: {plain}, {guided}"
