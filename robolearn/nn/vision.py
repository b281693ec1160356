"""Camera images -> compact feature vectors that condition a policy head (the Diffusion Policy recipe).

Pipeline per image: crop (random while training, centred at eval) -> ResNet-18 trunk trained from scratch ->
spatial-softmax keypoints -> linear projection. Three choices follow Diffusion Policy / robomimic:

* GroupNorm (channels // 16 groups) instead of BatchNorm: BatchNorm's running statistics drift apart from
  EMA-averaged weights and are unreliable at the small batches robot learning uses; GroupNorm normalizes
  each sample on its own, so training, evaluation and the EMA copy all compute the same function.
* Spatial softmax instead of global average pooling: averaging discards *where* things are, which is exactly
  what a manipulation policy needs; each keypoint is the expected (x, y) location of a learned detector.
* Random crops as the only augmentation, done on the device on the already-normalized float tensor, so the
  data pipeline can ship uint8 images and the host does no per-pixel work.

The trunk is a plain ResNet-18 written here (no torchvision, no downloaded weights) so that its downsampling
can adapt to small images: a stride-32 trunk leaves a 1x1 map for a 32x32 camera, over which a spatial softmax
carries no information, so the last stride-2 stages switch to dilated convolutions until the final map is at
least `min_feature_hw` wide (standard 84..96 px crops keep the unmodified ResNet-18).
"""
from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import torch
from torch import nn

GROUP_SIZE = 16  # channels per GroupNorm group, as in Diffusion Policy
STAGE_WIDTHS = (64, 128, 256, 512)  # ResNet-18: four stages of two basic blocks


def group_norm(channels: int) -> nn.GroupNorm:
    """The GroupNorm that replaces each BatchNorm: channels // 16 groups (at least one)."""
    return nn.GroupNorm(max(1, channels // GROUP_SIZE), channels)


def _halve(n: int) -> int:
    """Output length of a stride-2 conv / pool with the ResNet paddings: ceil(n / 2)."""
    return (n - 1) // 2 + 1


def trunk_output_hw(hw: Sequence[int], dilated_stages: int) -> tuple[int, int]:
    """Output map size of a ResNet18Trunk for an (h, w) input: five stride-2 steps (conv1, maxpool, stages
    2-4), one fewer per dilated stage."""
    out = []
    for n in hw:
        for _ in range(5 - dilated_stages):
            n = _halve(n)
        out.append(n)
    return out[0], out[1]


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with a residual connection (projected when the shape changes)."""

    def __init__(self, in_channels: int, channels: int, stride: int = 1, dilation: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride, padding=dilation, dilation=dilation, bias=False)
        self.norm1 = group_norm(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, 1, padding=dilation, dilation=dilation, bias=False)
        self.norm2 = group_norm(channels)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != channels:
            self.shortcut = nn.Sequential(nn.Conv2d(in_channels, channels, 1, stride, bias=False), group_norm(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.norm1(self.conv1(x)))
        out = self.norm2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class ResNet18Trunk(nn.Sequential):
    """ResNet-18 up to its last stage (no pooling, no classifier), GroupNorm throughout.

    `dilated_stages` (0..3) of the last stride-2 stages keep the resolution and dilate instead (DeepLab style),
    so the receptive field still grows while the output map stays larger. Output: (N, 512, h, w).
    """

    def __init__(self, in_channels: int = 3, dilated_stages: int = 0):
        if not 0 <= dilated_stages <= 3:
            raise ValueError(f"dilated_stages must be in 0..3 (stages 2-4 downsample), got {dilated_stages}")
        layers: OrderedDict[str, nn.Module] = OrderedDict({
            "conv1": nn.Conv2d(in_channels, STAGE_WIDTHS[0], 7, 2, padding=3, bias=False),
            "norm1": group_norm(STAGE_WIDTHS[0]),
            "relu": nn.ReLU(inplace=True),
            "maxpool": nn.MaxPool2d(3, 2, padding=1),
        })
        in_ch, dilation = STAGE_WIDTHS[0], 1
        for i, width in enumerate(STAGE_WIDTHS):
            stride = 1 if i == 0 else 2
            if i >= 4 - dilated_stages:
                stride, dilation = 1, dilation * 2
            layers[f"layer{i + 1}"] = nn.Sequential(BasicBlock(in_ch, width, stride, dilation),
                                                    BasicBlock(width, width, 1, dilation))
            in_ch = width
        super().__init__(layers)
        self.dilated_stages = dilated_stages
        self.out_channels = in_ch
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def output_hw(self, hw: Sequence[int]) -> tuple[int, int]:
        """Spatial size of the output map for an (h, w) input."""
        return trunk_output_hw(hw, self.dilated_stages)


class SpatialSoftmax(nn.Module):
    """Feature map (N, C, H, W) -> keypoints (N, 2K): where each of K learned detectors fires.

    A 1x1 conv scores every location for each keypoint, a softmax over H*W turns the scores into a
    distribution, and its expected x and y (pixel centres spaced evenly on [-1, 1], left/top = -1) are the
    features, ordered (x_1, y_1, x_2, y_2, ...). The output is bounded and differentiable in the location.
    """

    def __init__(self, in_channels: int, n_keypoints: int = 32):
        super().__init__()
        self.n_keypoints = n_keypoints
        self.detector = nn.Conv2d(in_channels, n_keypoints, kernel_size=1)

    @staticmethod
    def _axis(n: int, device: torch.device) -> torch.Tensor:
        if n == 1:  # a single cell is the centre, not the left edge that linspace(-1, 1, 1) would give
            return torch.zeros(1, device=device)
        return torch.linspace(-1.0, 1.0, n, device=device)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        logits = self.detector(features)
        n, k, h, w = logits.shape
        attention = logits.flatten(2).float().softmax(dim=-1)  # (N, K, H*W); float32 even under autocast
        ys, xs = torch.meshgrid(self._axis(h, logits.device), self._axis(w, logits.device), indexing="ij")
        grid = torch.stack([xs.reshape(-1), ys.reshape(-1)], dim=-1)  # (H*W, 2) as (x, y)
        return (attention @ grid).reshape(n, 2 * k)


class RandomCrop(nn.Module):
    """Crop channel-last images (N, H, W, C) to crop_hw: random per-sample offsets in training, centre at eval.

    Vectorized as one gather, so it runs on whatever device the images are on. `frames_per_sample`
    consecutive images share one offset: the frames of one observation history are cropped alike, so the
    motion between them is not mixed with a different jitter on each frame.
    """

    def __init__(self, crop_hw: Sequence[int]):
        super().__init__()
        self.crop_hw = (int(crop_hw[0]), int(crop_hw[1]))

    def forward(self, images: torch.Tensor, generator: torch.Generator | None = None,
                frames_per_sample: int = 1) -> torch.Tensor:
        n, h, w = images.shape[:3]
        ch, cw = self.crop_hw
        if ch > h or cw > w:
            raise ValueError(f"crop {self.crop_hw} is larger than the images ({h}, {w})")
        if (ch, cw) == (h, w):
            return images
        if not self.training:
            top, left = (h - ch) // 2, (w - cw) // 2
            return images[:, top:top + ch, left:left + cw]
        if frames_per_sample < 1 or n % frames_per_sample:
            raise ValueError(f"{n} images do not split into groups of frames_per_sample={frames_per_sample}")
        device = images.device
        draw_on = generator.device if generator is not None else device  # a generator draws on its own device
        top = torch.randint(0, h - ch + 1, (n // frames_per_sample,), generator=generator, device=draw_on)
        left = torch.randint(0, w - cw + 1, (n // frames_per_sample,), generator=generator, device=draw_on)
        top = top.to(device).repeat_interleave(frames_per_sample)
        left = left.to(device).repeat_interleave(frames_per_sample)
        rows = (top[:, None] + torch.arange(ch, device=device))[:, :, None]  # (N, ch, 1)
        cols = (left[:, None] + torch.arange(cw, device=device))[:, None, :]  # (N, 1, cw)
        return images[torch.arange(n, device=device)[:, None, None], rows, cols]  # (N, ch, cw, C)


class VisionEncoder(nn.Module):
    """Normalized images (N, H, W, C), float in [-1, 1], channel-last as stored -> features (N, feature_dim).

    `crop_hw` defaults to no crop. Train/eval mode picks random or centre crops, like Dropout does.
    `min_feature_hw`: smallest side of the trunk's output map that the keypoints get; crops too small for it
    dilate the last 1-3 ResNet stages instead of striding (see the module docstring).
    """

    def __init__(self, image_shape: Sequence[int], crop_hw: Sequence[int] | None = None, feature_dim: int = 64,
                 n_keypoints: int = 32, min_feature_hw: int = 3):
        super().__init__()
        if len(image_shape) != 3:
            raise ValueError(f"image_shape must be (H, W, C), got {tuple(image_shape)}")
        h, w, c = (int(s) for s in image_shape)
        crop = (h, w) if crop_hw is None else (int(crop_hw[0]), int(crop_hw[1]))
        if not (1 <= crop[0] <= h and 1 <= crop[1] <= w):
            raise ValueError(f"crop_hw {crop} must fit inside the image ({h}, {w})")
        if feature_dim < 1 or n_keypoints < 1:
            raise ValueError(f"feature_dim ({feature_dim}) and n_keypoints ({n_keypoints}) must be >= 1")
        self.image_shape = (h, w, c)
        self.feature_dim = feature_dim
        dilated = 0  # dilate only as much as small crops need; a standard trunk is cheaper
        while dilated < 3 and min(trunk_output_hw(crop, dilated)) < min_feature_hw:
            dilated += 1
        self.crop = RandomCrop(crop)
        self.trunk = ResNet18Trunk(c, dilated)
        self.feature_hw = self.trunk.output_hw(crop)
        self.keypoints = SpatialSoftmax(self.trunk.out_channels, n_keypoints)
        self.proj = nn.Linear(2 * n_keypoints, feature_dim)

    def forward(self, images: torch.Tensor, generator: torch.Generator | None = None,
                frames_per_sample: int = 1) -> torch.Tensor:
        if not images.is_floating_point():
            raise TypeError(f"VisionEncoder takes normalized float images in [-1, 1], got {images.dtype}; "
                            f"normalize uint8 images first (Policy.encode_obs does)")
        if tuple(images.shape[1:]) != self.image_shape:
            raise ValueError(f"images must be (N, {', '.join(map(str, self.image_shape))}), "
                             f"got {tuple(images.shape)}")
        x = self.crop(images, generator, frames_per_sample)
        # NHWC -> contiguous NCHW. Measured on CPU (one thread): keeping the memory channels-last is ~20% faster
        # for a large no-grad batch but 1.3-2.5x slower for training steps and for batch-2 inference.
        x = x.permute(0, 3, 1, 2).contiguous()
        return self.proj(self.keypoints(self.trunk(x)))
