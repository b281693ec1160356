"""Image observations: the GroupNorm ResNet-18 + spatial-softmax encoder, its on-device random crop, the
ObsEncoder that folds camera histories into the condition vector, and an image DiffusionPolicy end to end
(uint8 batch -> loss that falls, sampling, checkpoint round trip)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from robolearn.nn.obs_encoder import ObsEncoder
from robolearn.nn.vision import RandomCrop, SpatialSoftmax, VisionEncoder
from robolearn.policies.checkpoint import load_policy, save_policy
from robolearn.policies.diffusion import DiffusionConfig, DiffusionPolicy
from robolearn.policies.flow import FlowConfig, FlowMatchingPolicy
from robolearn.policies.ibc import IBCConfig, IBCPolicy
from robolearn.policies.regression import RegressionConfig, RegressionPolicy

IMG, SQUARE, HORIZON, N_OBS = 32, 4, 8, 2
TINY_IMAGE = dict(obs_shapes={"image": [IMG, IMG, 3], "agent_pos": [2]}, image_keys=["image"], action_dim=2,
                  horizon=HORIZON, n_obs_steps=N_OBS, n_action_steps=4)
TINY_UNET = dict(down_dims=[16, 32], diffusion_step_embed_dim=16)


def images(n: int, h: int, w: int, seed: int = 0) -> torch.Tensor:
    """Normalized float images (n, h, w, 3) in [-1, 1], as Policy.encode_obs hands them over."""
    return torch.rand(n, h, w, 3, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def square_batch(b: int, seed: int) -> dict:
    """A bright square at a random place in a dark uint8 image; the action chunk is its (x, y) position."""
    g = torch.Generator().manual_seed(seed)
    pos = torch.randint(0, IMG - SQUARE + 1, (b, 2), generator=g)  # (row, col) of the top-left corner
    image = torch.zeros(b, N_OBS, IMG, IMG, 3, dtype=torch.uint8)
    for i, (r, c) in enumerate(pos.tolist()):
        image[i, :, r:r + SQUARE, c:c + SQUARE] = 255
    action = pos.flip(-1).float()[:, None, :].expand(b, HORIZON, 2).contiguous()
    return {"obs": {"image": image, "agent_pos": torch.rand(b, N_OBS, 2, generator=g) * IMG}, "action": action}


def image_diffusion_policy() -> DiffusionPolicy:
    torch.manual_seed(0)
    policy = DiffusionPolicy(DiffusionConfig(**TINY_IMAGE, **TINY_UNET))
    policy.normalizer.fit({"agent_pos": {"min": np.zeros(2), "max": np.full(2, float(IMG))},
                           "action": {"min": np.zeros(2), "max": np.full(2, float(IMG - SQUARE))}})
    return policy


# ----- the encoder -----

@pytest.mark.parametrize("h, w, crop_ratio", [(96, 96, 0.9), (84, 84, 0.8), (32, 32, 1.0), (48, 64, 0.75)])
def test_vision_encoder_output_shape(h, w, crop_ratio):
    crop = (round(crop_ratio * h), round(crop_ratio * w))
    enc = VisionEncoder((h, w, 3), crop, feature_dim=48, n_keypoints=16)
    assert min(enc.feature_hw) >= 3  # small crops dilate the last stages instead of shrinking to 1x1
    for train in (True, False):
        assert enc.train(train)(images(3, h, w)).shape == (3, 48)


def test_vision_encoder_refuses_uint8_and_wrong_shapes():
    enc = VisionEncoder((16, 16, 3), (14, 14))
    with pytest.raises(TypeError, match="normalized float images"):
        enc(torch.zeros(2, 16, 16, 3, dtype=torch.uint8))
    with pytest.raises(ValueError, match=r"images must be \(N, 16, 16, 3\)"):
        enc(images(2, 16, 12))
    with pytest.raises(ValueError, match="must fit inside"):
        VisionEncoder((16, 16, 3), (20, 16))


def test_no_batchnorm_and_sixteen_channels_per_group():
    policy = image_diffusion_policy()
    modules = list(policy.modules())
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in modules)
    vision_norms = [m for m in policy.obs_encoder.modules() if isinstance(m, nn.GroupNorm)]
    assert len(vision_norms) == 20  # stem + 8 blocks x 2 + 3 projection shortcuts
    assert all(m.num_channels // m.num_groups == 16 for m in vision_norms)


# ----- random crop -----

def coordinate_images(n: int, h: int, w: int) -> torch.Tensor:
    """Channel 0 holds the row, channel 1 the column, channel 2 the image index: crops reveal their offsets."""
    rows, cols = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    grid = torch.stack([rows, cols], dim=-1).float().expand(n, h, w, 2)
    return torch.cat([grid, torch.arange(n).float()[:, None, None, None].expand(n, h, w, 1)], dim=-1)


def crop_offsets(out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(top, left) of each crop, after checking every crop is one contiguous window of its own image."""
    n, ch, cw, _ = out.shape
    top, left = out[:, 0, 0, 0], out[:, 0, 0, 1]
    assert torch.equal(out[..., 0], top[:, None, None] + torch.arange(ch).float()[None, :, None].expand(n, ch, cw))
    assert torch.equal(out[..., 1], left[:, None, None] + torch.arange(cw).float()[None, None, :].expand(n, ch, cw))
    assert torch.equal(out[..., 2], torch.arange(n).float()[:, None, None].expand(n, ch, cw))
    return top.long(), left.long()


def test_random_crop_per_sample_offsets_and_centre_at_eval():
    x = coordinate_images(32, 20, 24)
    crop = RandomCrop((16, 18))
    a = crop(x, torch.Generator().manual_seed(0))
    b = crop(x, torch.Generator().manual_seed(1))
    assert a.shape == (32, 16, 18, 3)
    (ta, la), (tb, lb) = crop_offsets(a), crop_offsets(b)
    assert ta.min() >= 0 and ta.max() <= 4 and la.min() >= 0 and la.max() <= 6
    assert len(set(zip(ta.tolist(), la.tolist()))) > 5  # per-sample offsets, not one for the batch
    assert not (torch.equal(ta, tb) and torch.equal(la, lb))
    assert torch.equal(a, crop(x, torch.Generator().manual_seed(0)))  # a seed reproduces its crops
    tg, lg = crop_offsets(crop(x, torch.Generator().manual_seed(2), frames_per_sample=4))
    assert torch.equal(tg.view(8, 4), tg.view(8, 4)[:, :1].expand(8, 4))  # a history shares one crop
    assert torch.equal(lg.view(8, 4), lg.view(8, 4)[:, :1].expand(8, 4))
    crop.eval()
    centre = crop(x, torch.Generator().manual_seed(0))
    assert torch.equal(centre, x[:, 2:18, 3:21]) and torch.equal(centre, crop(x))
    assert RandomCrop((20, 24))(x) is x  # a full-size crop is the identity


def test_encoder_random_in_training_deterministic_at_eval():
    torch.manual_seed(0)
    enc = VisionEncoder((IMG, IMG, 3), (26, 26))
    x = images(4, IMG, IMG)
    with torch.no_grad():
        y0 = enc(x, torch.Generator().manual_seed(0))
        y1 = enc(x, torch.Generator().manual_seed(1))
        assert not torch.allclose(y0, y1)
        assert torch.equal(y0, enc(x, torch.Generator().manual_seed(0)))
        enc.eval()
        e0 = enc(x, torch.Generator().manual_seed(0))
        assert torch.equal(e0, enc(x, torch.Generator().manual_seed(1))) and torch.equal(e0, enc(x))


# ----- spatial softmax -----

def test_spatial_softmax_locates_a_hot_pixel():
    ss = SpatialSoftmax(in_channels=3, n_keypoints=3)
    with torch.no_grad():
        ss.detector.weight.copy_(40.0 * torch.eye(3)[:, :, None, None])
        ss.detector.bias.zero_()
    h, w = 7, 9
    features = torch.zeros(2, 3, h, w)
    features[0, 0, 2, 6] = 1.0  # keypoint 0 of sample 0: row 2, column 6
    features[1, 1, 6, 0] = 1.0  # keypoint 1 of sample 1: bottom-left corner
    out = ss(features).view(2, 3, 2)  # (x, y) per keypoint
    expect = torch.zeros(2, 3, 2)  # channels with no hot pixel are uniform: the centre (0, 0)
    expect[0, 0] = torch.tensor([-1 + 2 * 6 / (w - 1), -1 + 2 * 2 / (h - 1)])
    expect[1, 1] = torch.tensor([-1.0, 1.0])
    torch.testing.assert_close(out, expect, atol=1e-4, rtol=0)


def test_spatial_softmax_coordinates_lie_in_the_unit_square():
    torch.manual_seed(0)
    ss = SpatialSoftmax(in_channels=8, n_keypoints=32)
    out = ss(100.0 * torch.randn(4, 8, 5, 6))  # large scores push keypoints onto the border cells
    assert out.shape == (4, 64)
    assert out.abs().max() <= 1.0 + 1e-6 and out.abs().max() > 0.9


# ----- ObsEncoder -----

def test_obs_encoder_one_and_two_cameras():
    shapes = {"front": [96, 96, 3], "wrist": [84, 84, 3], "agent_pos": [2]}
    one = ObsEncoder({"front": shapes["front"], "agent_pos": [2]}, ["front"], N_OBS)
    assert list(one.vision) == ["front"] and one.vision["front"].crop.crop_hw == (86, 86)  # round(0.9 * 96)
    assert one.out_dim == N_OBS * (2 + 64)
    two = ObsEncoder(shapes, ["front", "wrist"], N_OBS, crop_ratio=0.8, feature_dim=32, n_keypoints=8)
    assert two.vision["front"].crop.crop_hw == (77, 77) and two.vision["wrist"].crop.crop_hw == (67, 67)
    assert two.out_dim == N_OBS * (2 + 32 + 32)
    assert not set(map(id, two.vision["front"].parameters())) & set(map(id, two.vision["wrist"].parameters()))
    obs = {"front": images(2 * N_OBS, 96, 96).view(2, N_OBS, 96, 96, 3),
           "wrist": images(2 * N_OBS, 84, 84, seed=1).view(2, N_OBS, 84, 84, 3), "agent_pos": torch.randn(2, N_OBS, 2)}
    out = two.eval()(obs)
    assert out.shape == (2, two.out_dim)
    # keys in sorted order: agent_pos history, then each camera's per-frame features, oldest frame first
    assert torch.equal(out[:, :2 * N_OBS], obs["agent_pos"].reshape(2, -1))
    with torch.no_grad():
        front = two.vision["front"](obs["front"].reshape(-1, 96, 96, 3)).view(2, -1)
    torch.testing.assert_close(out[:, 2 * N_OBS:2 * N_OBS + 32 * N_OBS], front)


def test_obs_encoder_shared_camera_weights_and_errors():
    shapes = {"left": [24, 24, 3], "right": [24, 24, 3], "state": [3]}
    shared = ObsEncoder(shapes, ["left", "right"], N_OBS, share_image_encoder=True)
    assert list(shared.vision) == ["shared"] and shared.out_dim == N_OBS * (3 + 64 + 64)
    lowdim = ObsEncoder({"state": [3], "a": [2, 2]}, [], N_OBS)
    obs = {"state": torch.randn(2, N_OBS, 3), "a": torch.randn(2, N_OBS, 2, 2)}
    assert lowdim.out_dim == N_OBS * 7 and len(list(lowdim.parameters())) == 0
    assert torch.equal(lowdim(obs), torch.cat([obs["a"].reshape(2, -1), obs["state"].reshape(2, -1)], -1))
    with pytest.raises(ValueError, match="one image shape"):
        ObsEncoder({**shapes, "right": [20, 24, 3]}, ["left", "right"], N_OBS, share_image_encoder=True)
    with pytest.raises(ValueError, match="not observed keys"):
        ObsEncoder(shapes, ["top"], N_OBS)
    with pytest.raises(ValueError, match=r"\(H, W, C\)"):
        ObsEncoder(shapes, ["state"], N_OBS)
    with pytest.raises(ValueError, match="crop_ratio"):
        ObsEncoder(shapes, ["left"], N_OBS, crop_ratio=1.5)


# ----- policies with a camera -----

@pytest.mark.parametrize("cls, config", [
    (FlowMatchingPolicy, FlowConfig(**TINY_IMAGE, **TINY_UNET)),
    (RegressionPolicy, RegressionConfig(**TINY_IMAGE, hidden=[32])),
    (IBCPolicy, IBCConfig(**TINY_IMAGE, hidden=[32], n_negatives=7)),
])
def test_every_head_takes_images(cls, config):
    torch.manual_seed(0)
    policy = cls(config)
    assert policy.obs_encoder.out_dim == N_OBS * (2 + 64)
    loss = policy.loss(square_batch(2, seed=0))
    assert torch.isfinite(loss)
    loss.backward()
    assert policy.obs_encoder.vision["image"].trunk.conv1.weight.grad.abs().sum() > 0


def test_image_diffusion_policy_loss_sample_and_checkpoint(tmp_path):
    policy = image_diffusion_policy()
    batch = square_batch(4, seed=0)
    assert batch["obs"]["image"].dtype == torch.uint8
    assert torch.isfinite(policy.loss(batch))
    policy.eval()
    chunks = policy.sample(batch["obs"], n=3, generator=torch.Generator().manual_seed(0))
    assert chunks.shape == (4, 3, HORIZON, 2) and torch.isfinite(chunks).all()
    loaded = load_policy(save_policy(policy, tmp_path / "ckpt"), device="cpu")
    assert not loaded.training
    again = loaded.sample(batch["obs"], n=3, generator=torch.Generator().manual_seed(0))
    assert torch.equal(chunks, again)


def test_image_diffusion_policy_loss_falls():
    """40 steps teach the UNet the chunk distribution; the camera pathway is in the graph and gets gradient.
    (Whether the encoder can learn where things are is the next test: at this budget the diffusion loss
    falls just as much with shuffled images.)"""
    policy = image_diffusion_policy()
    train = square_batch(8, seed=0)

    def fixed_loss() -> float:
        """The loss on the training batch with fixed noise, steps and (centre) crops: comparable across time."""
        policy.eval()
        torch.manual_seed(123)
        with torch.no_grad():
            value = float(policy.loss(train))
        policy.train()
        return value

    before = fixed_loss()
    optimizer = torch.optim.AdamW(policy.parameters(), lr=3e-3)
    torch.manual_seed(1)
    conv1 = policy.obs_encoder.vision["image"].trunk.conv1
    for _ in range(40):
        loss = policy.loss(train)
        optimizer.zero_grad()
        loss.backward()
        assert torch.isfinite(loss) and conv1.weight.grad.abs().sum() > 0
        optimizer.step()
    after = fixed_loss()
    assert after < 0.75 * before, (before, after)


def test_vision_encoder_learns_to_locate_a_bright_square():
    """Encoder + linear head regress the square's (x, y) from fresh random images in 40 steps and generalize
    to unseen positions: the GroupNorm trunk and spatial softmax learn localization from scratch."""
    torch.manual_seed(0)
    encoder = VisionEncoder((IMG, IMG, 3), (29, 29))
    head = nn.Linear(encoder.feature_dim, 2)
    optimizer = torch.optim.AdamW([*encoder.parameters(), *head.parameters()], lr=1e-3)

    def squares(b: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        data = square_batch(b, seed)
        x = data["obs"]["image"][:, -1].float() * (2 / 255) - 1  # normalized as Policy.encode_obs does
        return x, data["action"][:, 0] / (IMG - SQUARE) * 2 - 1  # (x, y) in [-1, 1]

    for step in range(40):
        x, y = squares(8, seed=1000 + step)
        loss = F.mse_loss(head(encoder(x)), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    x, y = squares(32, seed=1)
    encoder.eval()
    with torch.no_grad():
        err = F.mse_loss(head(encoder(x)), y)
    assert err < 0.4 * y.var(0).mean(), (float(err), float(y.var(0).mean()))  # vs predicting the mean
