"""CUDA path, run by scripts/gpu_check.sh on an NVIDIA machine: CUDA-graph sampling equals eager sampling for every
head and sampler, the runners keep their buffers on the GPU, training checkpoints and reloads on CUDA, and DDP
runs on one GPU. Skipped, with the reason, where there is no GPU."""
import numpy as np
import pytest
import torch

from robolearn.control.chunking import ChunkExecution, make_runner
from robolearn.policies.flow import FlowConfig, FlowMatchingPolicy
from robolearn.policies.ibc import IBCConfig, IBCPolicy
from tests.helpers import synthetic_pusht_store, tiny_diffusion

pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(),
                                                    reason="needs an NVIDIA GPU; none on this machine "
                                                           "(scripts/gpu_check.sh runs these where there is one)")]
CUDA = torch.device("cuda")
SMALL = dict(down_dims=[32, 64], diffusion_step_embed_dim=32, horizon=16, n_obs_steps=2, n_action_steps=8)


def fitted(policy):
    policy.normalizer.fit({"state": {"min": np.zeros(5), "max": np.full(5, 512.0)},
                           "action": {"min": np.zeros(2), "max": np.full(2, 512.0)}})
    return policy.to(CUDA).eval()


def make(head, **overrides):
    if head == "diffusion":
        return tiny_diffusion(**{**SMALL, **overrides}).to(CUDA).eval()
    if head == "flow":
        return fitted(FlowMatchingPolicy(FlowConfig(obs_shapes={"state": [5]}, action_dim=2, **{**SMALL, **overrides})))
    return fitted(IBCPolicy(IBCConfig(obs_shapes={"state": [5]}, action_dim=2, horizon=16, n_obs_steps=2,
                                            n_action_steps=8, hidden=[64, 64], dfo_samples=256, langevin_samples=32,
                                            langevin_steps=10, **overrides)))


def obs(seed=0):
    return {"state": torch.from_numpy(np.random.default_rng(seed).uniform(0, 512, (1, 2, 5)).astype(np.float32))}


CASES = [("diffusion", {"scheduler": "ddim", "num_inference_steps": 10}), ("diffusion", {"scheduler": "ddpm"}),
         ("flow", {"num_inference_steps": 1}), ("flow", {"num_inference_steps": 2}),
         ("flow", {"num_inference_steps": 4}), ("flow", {"integrator": "midpoint", "num_inference_steps": 4}),
         ("energy", {"sampler": "dfo"}), ("energy", {"sampler": "langevin"})]


@pytest.mark.parametrize("head,overrides", CASES, ids=[f"{h}-{'-'.join(map(str, o.values()))}" for h, o in CASES])
def test_cuda_graph_act_equals_eager_act_draw_for_draw(head, overrides):
    torch.manual_seed(0)
    policy = make(head, **overrides)
    eager_gen, graph_gen = (torch.Generator(device=CUDA).manual_seed(7) for _ in range(2))
    eager = [policy.act(obs(i), generator=eager_gen) for i in range(3)]
    assert policy.compile_for_inference() is True
    graphed = [policy.act(obs(i), generator=graph_gen) for i in range(3)]  # capture on the first, then replays
    assert policy.inference_graphs.n_captures == 1
    for e, g in zip(eager, graphed):
        np.testing.assert_allclose(g, e, rtol=1e-4, atol=1e-3)  # same draws; kernels may differ in the last bits
    assert torch.equal(eager_gen.get_state(), graph_gen.get_state())  # the generator advanced alike


def test_default_generator_is_restored_after_capture_and_replays_like_eager():
    policy = make("flow", num_inference_steps=2)
    torch.cuda.manual_seed(3)
    eager = policy.act(obs())
    policy.compile_for_inference()
    torch.cuda.manual_seed(3)
    graphed = policy.act(obs())
    np.testing.assert_allclose(graphed, eager, rtol=1e-4, atol=1e-3)


def test_moved_weights_are_recaptured():
    policy = make("flow", num_inference_steps=2)
    policy.compile_for_inference()
    policy.act(obs(), generator=torch.Generator(device=CUDA).manual_seed(0))
    policy.load_state_dict({k: v.clone() + 0.01 * v.abs().max() for k, v in policy.state_dict().items()}, assign=True)
    graphed = policy.act(obs(), generator=torch.Generator(device=CUDA).manual_seed(0))
    assert policy.inference_graphs.n_captures == 2
    policy.compile_for_inference(False)
    eager = policy.act(obs(), generator=torch.Generator(device=CUDA).manual_seed(0))
    np.testing.assert_allclose(graphed, eager, rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("mode", ["receding", "ensemble", "rtc"])
def test_runners_keep_history_on_the_gpu_and_use_the_graph(mode):
    policy = make("flow", num_inference_steps=2)
    execution = ChunkExecution(mode=mode, execute_steps=4 if mode == "rtc" else None)
    runner = make_runner(policy, execution, generator=torch.Generator(device=CUDA).manual_seed(0))
    try:
        runner.reset([{"state": np.full(5, 100.0, np.float32)}])
        assert runner._history["state"].device.type == "cuda"
        actions = []
        for i in range(12):
            actions.append(runner.act())
            runner.observe([{"state": np.full(5, 100.0 + i, np.float32)}])
        assert np.isfinite(np.stack(actions)).all() and actions[0].shape == (1, 2)
        assert runner.history["state"][0, -1, 0] == 111.0  # the host view of the device history
        assert policy.inference_graphs is not None and policy.inference_graphs.n_captures >= 1
    finally:
        runner.close()


def test_train_checkpoint_load_and_act_on_cuda(tmp_path):
    from robolearn.policies.checkpoint import load_policy
    from robolearn.task import TaskConfig
    from robolearn.train.policy import RunConfig, TrainConfig, Trainer

    store = synthetic_pusht_store(tmp_path / "demo.episodes.zarr")
    run = RunConfig(task=TaskConfig(), policy_class="diffusion", policy=dict(SMALL),
                    train=TrainConfig(steps=5, batch_size=16, warmup_steps=1, device="cuda", final_eval_episodes=0,
                                      video_episodes=0, log_every=1, checkpoint_every=5),
                    out_dir=str(tmp_path / "run"))
    trainer = Trainer(run, store=store, progress=False)
    trainer.fit()
    assert trainer.step == 5 and next(trainer.policy.parameters()).device.type == "cuda"
    policy = load_policy(tmp_path / "run" / "checkpoints" / "last")
    assert policy.device.type == "cuda"
    cpu = load_policy(tmp_path / "run" / "checkpoints" / "last", device="cpu")
    history = {"state": np.full((1, 2, 5), 200.0, np.float32)}
    policy.compile_for_inference()
    act = policy.act(history, generator=torch.Generator(device=CUDA).manual_seed(0))
    assert act.shape == (1, 8, 2) and np.isfinite(act).all()
    for a, b in zip(policy.state_dict().values(), cpu.state_dict().values()):
        torch.testing.assert_close(a.cpu(), b)


def test_ddp_on_one_gpu_matches_a_plain_step(tmp_path):
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    dist.init_process_group("nccl", init_method=f"file://{tmp_path / 'rdzv'}", rank=0, world_size=1)
    try:
        torch.manual_seed(0)
        plain = tiny_diffusion(**SMALL).to(CUDA)
        twin = tiny_diffusion(**SMALL).to(CUDA)
        twin.load_state_dict(plain.state_dict())
        ddp = DistributedDataParallel(twin, device_ids=[0])
        batch = {"obs": {"state": torch.rand(8, 2, 5, device=CUDA) * 512},
                 "action": torch.rand(8, 16, 2, device=CUDA) * 512}
        for model, module in ((plain, plain), (ddp, twin)):
            opt = torch.optim.SGD(module.parameters(), lr=0.1)
            torch.manual_seed(1)
            loss = module.loss(batch) if model is module else _ddp_loss(model, batch)
            loss.backward()
            opt.step()
        for a, b in zip(plain.parameters(), twin.parameters()):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    finally:
        dist.destroy_process_group()


def _ddp_loss(ddp, batch):
    """DDP hooks the wrapped module's forward: route loss() through it so the gradients are all-reduced."""
    module = ddp.module
    original = module.forward
    module.forward = module.loss
    try:
        return ddp(batch)
    finally:
        module.forward = original
