"""Anchor3DHead: shared 1x1 convolutions, aligned range anchors and the delta box coder."""
from __future__ import annotations

import torch
from torch import nn

from .presets import AnchorConfig


class Anchor3DHead(nn.Module):
    """Class, box-delta and direction convolutions, applied to every neck level."""

    def __init__(self, in_channels: int, num_anchors: int, num_classes: int, code_size: int):
        super().__init__()
        self.num_anchors, self.num_classes, self.code_size = num_anchors, num_classes, code_size
        self.conv_cls = nn.Conv2d(in_channels, num_anchors * num_classes, 1)
        self.conv_reg = nn.Conv2d(in_channels, num_anchors * code_size, 1)
        self.conv_dir_cls = nn.Conv2d(in_channels, num_anchors * 2, 1)

    def forward(self,
                feats: list[torch.Tensor]) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """Per level: raw maps cls [1, A*K, H, W], reg [1, A*code, H, W], dir [1, A*2, H, W]."""
        return [(self.conv_cls(f), self.conv_reg(f), self.conv_dir_cls(f)) for f in feats]


def flatten_maps(cls: torch.Tensor, reg: torch.Tensor, direction: torch.Tensor, num_classes: int,
                 code_size: int) -> tuple[torch.Tensor, ...]:
    """One image's raw maps of one level -> rows matching its anchors: [H*W*A, K],
    [H*W*A, code], [H*W*A, 2]."""
    return (
        cls[0].permute(1, 2, 0).reshape(-1, num_classes),
        reg[0].permute(1, 2, 0).reshape(-1, code_size),
        direction[0].permute(1, 2, 0).reshape(-1, 2),
    )


def _centres(lo: torch.Tensor, hi: torch.Tensor, n: int) -> torch.Tensor:
    """n cell centres between lo and hi (align_corner=False), in mmdet3d's float32 op order."""
    edges = torch.linspace(float(lo), float(hi), n + 1, device=lo.device)
    return (edges + (edges[1] - edges[0]) / 2)[:n]


def level_anchors(cfg: AnchorConfig, level: int, feature_hw: tuple[int, int], convention: str,
                  device: torch.device | str = "cpu") -> torch.Tensor:
    """Anchors of one level, [H*W*A, 7 + custom] = x, y, z_bottom, size0, size1, size2, rot
    (, custom).

    Memory order [H][W][size][rotation], matching the head's output rows.
    """
    h, w = feature_hw
    sizes = cfg.sizes(convention)
    ranges = cfg.ranges if len(cfg.ranges) == len(sizes) else cfg.ranges * len(sizes)
    rotations = torch.tensor(cfg.rotations, device=device)
    r = rotations.numel()
    per_size = []
    for rng, size in zip(ranges, sizes):
        rng_t = torch.tensor(rng, device=device)
        xs = _centres(rng_t[0], rng_t[3], w)
        ys = _centres(rng_t[1], rng_t[4], h)
        z = _centres(rng_t[2], rng_t[5], 1)
        size_t = torch.tensor(size, device=device) * cfg.scales[level]
        gy, gx, gr = torch.meshgrid(ys, xs, rotations, indexing="ij")
        rows = torch.stack([gx, gy, z.expand_as(gx)], dim=-1)  # [H, W, R, 3]
        rows = torch.cat([rows, size_t.expand(h, w, r, 3), gr.unsqueeze(-1)], dim=-1)
        per_size.append(rows)
    anchors = torch.stack(per_size, dim=2)  # [H, W, S, R, 7]
    if cfg.custom_values:
        custom = anchors.new_tensor(cfg.custom_values).expand(*anchors.shape[:-1],
                                                              len(cfg.custom_values))
        anchors = torch.cat([anchors, custom], dim=-1)
    return anchors.reshape(-1, anchors.shape[-1])


def decode_boxes(anchors: torch.Tensor, deltas: torch.Tensor) -> torch.Tensor:
    """DeltaXYZWLHRBBoxCoder.decode: anchors and deltas [N, 7 + c] -> boxes [N, 7 + c]
    (bottom z)."""
    xa, ya, za, d0a, d1a, ha, ra = anchors[:, :7].unbind(1)
    xt, yt, zt, t0, t1, th, tr = deltas[:, :7].unbind(1)
    za = za + ha / 2
    diagonal = torch.sqrt(d0a**2 + d1a**2)
    x = xt * diagonal + xa
    y = yt * diagonal + ya
    z = zt * ha + za
    d0 = torch.exp(t0) * d0a
    d1 = torch.exp(t1) * d1a
    h = torch.exp(th) * ha
    r = tr + ra
    z = z - h / 2
    extra = deltas[:, 7:] + anchors[:, 7:]
    return torch.cat([torch.stack([x, y, z, d0, d1, h, r], dim=1), extra], dim=1)


def encode_boxes(anchors: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """Inverse of `decode_boxes` (the regression targets of training)."""
    xa, ya, za, d0a, d1a, ha, ra = anchors[:, :7].unbind(1)
    xg, yg, zg, d0g, d1g, hg, rg = boxes[:, :7].unbind(1)
    za = za + ha / 2
    zg = zg + hg / 2
    diagonal = torch.sqrt(d0a**2 + d1a**2)
    deltas = torch.stack(
        [(xg - xa) / diagonal, (yg - ya) / diagonal, (zg - za) / ha,
         torch.log(d0g / d0a), torch.log(d1g / d1a), torch.log(hg / ha), rg - ra],
        dim=1,
    )
    return torch.cat([deltas, boxes[:, 7:] - anchors[:, 7:]], dim=1)
