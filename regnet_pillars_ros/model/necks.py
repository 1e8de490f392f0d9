"""Necks: SECONDFPN (upsample every level, concatenate) and mmdet's FPN (3 levels, no extras)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .backbones import bn2d
from .presets import FPNNeck, NeckSpec, SecondFPNNeck


class SECONDFPN(nn.Module):
    """Each level -> ConvTranspose2d(k = s, stride = s) + BN + ReLU, concatenated on channels."""

    def __init__(self, in_channels: list[int], out_channels: list[int],
                 upsample_strides: list[int]):
        super().__init__()
        self.deblocks = nn.ModuleList(
            nn.Sequential(nn.ConvTranspose2d(c_in, c_out, s, stride=s, bias=False), bn2d(c_out),
                          nn.ReLU(inplace=True))
            for c_in, c_out, s in zip(in_channels, out_channels, upsample_strides)
        )

    def forward(self, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        return [torch.cat([deblock(f) for deblock, f in zip(self.deblocks, feats)], dim=1)]


class ConvBNReLU(nn.Module):
    """mmcv ConvModule with BN: conv (no bias) -> BN -> ReLU; keys `conv.*`, `bn.*`."""

    def __init__(self, c_in: int, c_out: int, kernel: int):
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, kernel, padding=kernel // 2, bias=False)
        self.bn = bn2d(c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(x)).relu_()


class FPN(nn.Module):
    """Lateral 1x1 (BN, ReLU), top-down nearest upsampling and addition, 3x3 output convs."""

    def __init__(self, in_channels: list[int], out_channels: int):
        super().__init__()
        self.lateral_convs = nn.ModuleList(ConvBNReLU(c, out_channels, 1) for c in in_channels)
        self.fpn_convs = nn.ModuleList(ConvBNReLU(out_channels, out_channels, 3)
                                       for _ in in_channels)

    def forward(self, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        laterals = [conv(f) for conv, f in zip(self.lateral_convs, feats)]
        for i in range(len(laterals) - 1, 0, -1):
            laterals[i - 1] = laterals[i - 1] + F.interpolate(
                laterals[i], size=laterals[i - 1].shape[-2:], mode="nearest")
        return [conv(lat) for conv, lat in zip(self.fpn_convs, laterals)]


def build_neck(spec: NeckSpec) -> nn.Module:
    """Neck of a preset's typed `neck` spec."""
    if isinstance(spec, SecondFPNNeck):
        return SECONDFPN(list(spec.in_channels), list(spec.out_channels),
                         list(spec.upsample_strides))
    if isinstance(spec, FPNNeck):
        return FPN(list(spec.in_channels), spec.out_channels)
    raise TypeError(f"not a neck spec: {spec!r}")
