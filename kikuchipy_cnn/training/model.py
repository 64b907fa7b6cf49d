"""The classification network: a small residual CNN with a CAM-exact head.

Trunk (convolutions, BatchNorm, ReLU, residual stages with stride-2
downsampling to 8 × 8 feature maps) → global average pooling → ONE linear
layer over the joint classes. Because the head is linear and follows the
pooling, applying it at every position of the last feature maps (a 1 × 1
convolution with the head's weights) gives class activation maps whose mean
over (h, w) equals the logits exactly.

Default (``ModelConfig()``): stem 3 × 3 stride 2 (24 ch, 32 × 32) → block
stride 2 (32 ch, 16 × 16) → 2 blocks (96 ch, 8 × 8, the first stride 2);
300,095 parameters, 22.4 M multiply-adds per pattern. Nearly all parameters
sit at 8 × 8, where each costs 64 multiply-adds, so throughput is bounded by
the parameter count: more parameters, fewer patterns/s.

Input: ``(n, 1, 64, 64)`` float32, already preprocessed by
:func:`kikuchipy_cnn.preprocessing.preprocess`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
from torch import nn
from torch.nn import functional as F

from kikuchipy_cnn.symmetry import JOINT_CLASSES

__all__ = ["ModelConfig", "KikuchiNet", "ExportWrapper", "build_model", "count_parameters"]


@dataclass
class ModelConfig:
    """Architecture of :class:`KikuchiNet`.

    Parameters
    ----------
    in_size
        Side length of the (square) input.
    stem_channels
        Channels of the stride-2 stem convolution.
    stage_channels
        Channels of each residual stage.
    stage_blocks
        Number of basic residual blocks per stage.
    stage_strides
        Stride of the first block of each stage.
    n_classes
        Number of outputs (the joint classes).
    dropout
        Dropout on the pooled features during training (does not affect the
        CAM identity at inference).
    """

    in_size: int = 64
    stem_channels: int = 24
    stage_channels: tuple = (32, 96)
    stage_blocks: tuple = (1, 2)
    stage_strides: tuple = (2, 2)
    n_classes: int = len(JOINT_CLASSES)
    dropout: float = 0.1

    @classmethod
    def from_dict(cls, d: dict | None) -> "ModelConfig":
        d = dict(d or {})
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"Unknown model settings {sorted(unknown)}")
        for k in ("stage_channels", "stage_blocks", "stage_strides"):
            if k in d:
                d[k] = tuple(int(v) for v in d[k])
        return cls(**d)

    def to_dict(self) -> dict:
        d = asdict(self)
        for k in ("stage_channels", "stage_blocks", "stage_strides"):
            d[k] = list(d[k])
        return d

    @property
    def feature_size(self) -> int:
        s = self.in_size // 2
        for st in self.stage_strides:
            s //= st
        return s


def _conv_bn(c_in: int, c_out: int, k: int = 3, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, k, stride=stride, padding=k // 2, bias=False),
        nn.BatchNorm2d(c_out),
    )


class BasicBlock(nn.Module):
    """Two 3 × 3 convolutions with BatchNorm; identity or 1 × 1 projection
    shortcut; ReLU after the sum."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1):
        super().__init__()
        self.conv1 = _conv_bn(c_in, c_out, 3, stride)
        self.conv2 = _conv_bn(c_out, c_out, 3, 1)
        if stride != 1 or c_in != c_out:
            self.shortcut = _conv_bn(c_in, c_out, 1, stride)
        else:
            self.shortcut = nn.Identity()
        # Zero-init the last BN so each block starts as identity
        nn.init.zeros_(self.conv2[1].weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.conv1(x), inplace=True)
        out = self.conv2(out)
        return F.relu(out + self.shortcut(x), inplace=True)


class KikuchiNet(nn.Module):
    """Residual CNN → global average pooling → one linear layer."""

    def __init__(self, config: ModelConfig | None = None):
        super().__init__()
        self.config = config = config or ModelConfig()
        if not (
            len(config.stage_channels) == len(config.stage_blocks) == len(config.stage_strides)
        ):
            raise ValueError("stage_channels, stage_blocks and stage_strides differ in length")
        self.stem = nn.Sequential(
            nn.Conv2d(1, config.stem_channels, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(config.stem_channels),
            nn.ReLU(inplace=True),
        )
        layers = []
        c = config.stem_channels
        for ch, nb, st in zip(config.stage_channels, config.stage_blocks, config.stage_strides):
            for i in range(nb):
                layers.append(BasicBlock(c, ch, st if i == 0 else 1))
                c = ch
        self.stages = nn.Sequential(*layers)
        self.n_features = c
        self.dropout = nn.Dropout(config.dropout) if config.dropout > 0 else nn.Identity()
        self.head = nn.Linear(c, config.n_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Last feature maps ``(n, C, h, w)`` (after the final ReLU)."""
        return self.stages(self.stem(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(n, n_classes)``."""
        f = self.features(x)
        return self.head(self.dropout(f.mean(dim=(2, 3))))

    def cam(self, features: torch.Tensor) -> torch.Tensor:
        """Head applied at every position: ``(n, n_classes, h, w)``; its mean
        over (h, w) equals the logits (in eval mode)."""
        w = self.head.weight[:, :, None, None]
        return F.conv2d(features, w, self.head.bias)


class ExportWrapper(nn.Module):
    """Graph that is exported to ONNX: ``patterns`` →
    (``probabilities``, ``features``, ``cam``).

    ``cam`` holds uncalibrated per-position logits (mean over (h, w) = logits);
    ``probabilities = softmax(logits / temperature)``.
    """

    def __init__(self, model: KikuchiNet, temperature: float = 1.0):
        super().__init__()
        self.trunk = nn.Sequential(model.stem, model.stages)
        c, k = model.head.in_features, model.head.out_features
        self.cam_conv = nn.Conv2d(c, k, 1, bias=True)
        with torch.no_grad():
            self.cam_conv.weight.copy_(model.head.weight[:, :, None, None])
            self.cam_conv.bias.copy_(model.head.bias)
        self.register_buffer("inv_temperature", torch.tensor(1.0 / float(temperature)))

    def forward(self, patterns: torch.Tensor):
        features = self.trunk(patterns)
        cam = self.cam_conv(features)
        logits = cam.mean(dim=(2, 3))
        probabilities = torch.softmax(logits * self.inv_temperature, dim=1)
        return probabilities, features, cam


def build_model(config: ModelConfig | dict | None = None) -> KikuchiNet:
    if not isinstance(config, ModelConfig):
        config = ModelConfig.from_dict(config)
    return KikuchiNet(config)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
