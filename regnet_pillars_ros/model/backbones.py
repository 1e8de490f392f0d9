"""2D backbones over the pillar canvas: SECOND and RegNetX built from its design-space
parameters."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from .presets import BackboneSpec, RegNetBackbone, SecondBackbone

BN_EPS = 1e-3
BN_MOMENTUM = 0.01


def bn2d(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPS, momentum=BN_MOMENTUM)


class SECOND(nn.Module):
    """Stages of strided 3x3 conv + BN + ReLU blocks; returns every stage's output."""

    def __init__(self, in_channels: int, out_channels: list[int], layer_nums: list[int],
                 layer_strides: list[int]):
        super().__init__()
        blocks = []
        c_in = in_channels
        for c_out, repeats, stride in zip(out_channels, layer_nums, layer_strides):
            layers: list[nn.Module] = [
                nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False), bn2d(c_out),
                nn.ReLU(inplace=True)]
            for _ in range(repeats):
                layers += [nn.Conv2d(c_out, c_out, 3, padding=1, bias=False), bn2d(c_out),
                           nn.ReLU(inplace=True)]
            blocks.append(nn.Sequential(*layers))
            c_in = c_out
        self.blocks = nn.ModuleList(blocks)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outs = []
        for block in self.blocks:
            x = block(x)
            outs.append(x)
        return outs


@dataclass(frozen=True)
class RegNetStages:
    """Per-stage widths, depths and group widths of a RegNet (bottleneck ratio 1 here)."""

    widths: tuple[int, ...]
    depths: tuple[int, ...]
    group_widths: tuple[int, ...]

    @property
    def groups(self) -> tuple[int, ...]:
        return tuple(w // g for w, g in zip(self.widths, self.group_widths))


def regnet_stages(w0: float, wa: float, wm: float, depth: int, group_w: int, bot_mul: float = 1.0,
                  q: int = 8) -> RegNetStages:
    """Quantized-linear widths of "Designing Network Design Spaces" (Radosavovic et al. 2020).

    Block j has width u_j = w0 + wa*j, snapped to w0 * wm^round(log_wm(u_j / w0)) and to a
    multiple of q; runs of equal widths form the stages. Widths are then made compatible with
    the group width. float64 and round-half-to-even throughout, as the reference generator does.
    """
    if not (w0 > 0 and wa >= 0 and wm > 1 and depth > 0 and w0 % q == 0):
        raise ValueError(f"invalid RegNet parameters w0={w0} wa={wa} wm={wm} depth={depth} q={q}")
    u = np.arange(depth) * wa + w0
    k = np.round(np.log(u / w0) / np.log(wm))
    block_widths = (np.round(w0 * np.power(wm, k) / q) * q).astype(int)
    widths, depths = [], []
    for w in block_widths.tolist():
        if widths and widths[-1] == w:
            depths[-1] += 1
        else:
            widths.append(w)
            depths.append(1)
    final_widths, group_widths = [], []
    for w in widths:
        bottleneck = int(w * bot_mul)
        g = min(group_w, bottleneck)
        bottleneck = int(round(bottleneck / g) * g)
        final_widths.append(int(bottleneck / bot_mul))
        group_widths.append(g)
    return RegNetStages(tuple(final_widths), tuple(depths), tuple(group_widths))


class RegNetBlock(nn.Module):
    """X block: 1x1 conv, grouped 3x3 conv (carries the stride), 1x1 conv, residual (mmdet keys)."""

    def __init__(self, c_in: int, width: int, stride: int, groups: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, width, 1, bias=False)
        self.bn1 = bn2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride=stride, padding=1, groups=groups, bias=False)
        self.bn2 = bn2d(width)
        self.conv3 = nn.Conv2d(width, width, 1, bias=False)
        self.bn3 = bn2d(width)
        self.downsample = None
        if stride != 1 or c_in != width:
            self.downsample = nn.Sequential(nn.Conv2d(c_in, width, 1, stride=stride, bias=False),
                                            bn2d(width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        # In place on fresh outputs (as torchvision's blocks do): fewer large buffers per block.
        out = self.bn1(self.conv1(x)).relu_()
        out = self.bn2(self.conv2(out)).relu_()
        out = self.bn3(self.conv3(out))
        return out.add_(identity).relu_()


class NoStemRegNet(nn.Module):
    """mmdet3d's RegNet without a stem: the 64-channel canvas enters layer1 directly."""

    def __init__(self, stages: RegNetStages, in_channels: int, strides: list[int],
                 out_indices: list[int]):
        super().__init__()
        self.out_indices = tuple(out_indices)
        c_in = in_channels
        self.layer_names = []
        for i, (width, depth, stride, groups) in enumerate(zip(stages.widths, stages.depths,
                                                               strides, stages.groups)):
            blocks = [RegNetBlock(c_in if b == 0 else width, width, stride if b == 0 else 1,
                                  groups) for b in range(depth)]
            name = f"layer{i + 1}"
            self.add_module(name, nn.Sequential(*blocks))
            self.layer_names.append(name)
            c_in = width

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outs = []
        for i, name in enumerate(self.layer_names):
            x = getattr(self, name)(x)
            if i in self.out_indices:
                outs.append(x)
        return outs


def build_backbone(spec: BackboneSpec) -> nn.Module:
    """Backbone of a preset's typed `backbone` spec."""
    if isinstance(spec, SecondBackbone):
        return SECOND(spec.in_channels, list(spec.out_channels), list(spec.layer_nums),
                      list(spec.layer_strides))
    if isinstance(spec, RegNetBackbone):
        a = spec.arch
        stages = regnet_stages(a.w0, a.wa, a.wm, a.depth, a.group_w, a.bot_mul)
        return NoStemRegNet(stages, spec.stem_channels, list(spec.strides), list(spec.out_indices))
    raise TypeError(f"not a backbone spec: {spec!r}")
