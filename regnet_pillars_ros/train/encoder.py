"""Batched pillar encoding for training, with mmdet3d's BatchNorm statistics in the pillar encoder.

The inference encoder (`model.pillars.HardVFE`) evaluates each pillar's padded slots once, as a
separate row. In training mode BatchNorm would then take the statistics of the real points and of
the padding rows separately (and update its running statistics twice). mmdet3d's HardVFE
normalises the dense [pillars, max_num_points] layout, so its batch statistics count every free
slot of a pillar once. `encode_batch` reproduces that: each padding row is weighted by its
pillar's number of free slots. In eval mode it is exactly `PointPillarsNet.encode`.
"""
from __future__ import annotations

import torch
from torch import nn

from ..model.network import PointPillarsNet
from ..model.pillars import HardVFE, VFELayer, scatter_to_canvas
from ..model.voxelize import Pillars


def _weighted_batch_norm(norm: nn.BatchNorm1d, x: torch.Tensor, pad: torch.Tensor,
                         pad_count: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Training-mode BatchNorm over the rows of x [P, C] plus each row of pad [M, C] repeated
    pad_count [M] times; updates the running statistics once, as nn.BatchNorm1d would."""
    w = pad_count.to(x.dtype).unsqueeze(1)
    count = x.shape[0] + w.sum()
    mean = (x.sum(0) + (w * pad).sum(0)) / count
    var = (((x - mean) ** 2).sum(0) + (w * (pad - mean) ** 2).sum(0)) / count
    with torch.no_grad():
        m = norm.momentum
        norm.running_mean.mul_(1 - m).add_(m * mean)
        norm.running_var.mul_(1 - m).add_(m * var * count / (count - 1).clamp(min=1))
        norm.num_batches_tracked.add_(1)
    scale = norm.weight / torch.sqrt(var + norm.eps)
    return (x - mean) * scale + norm.bias, (pad - mean) * scale + norm.bias


def vfe_train(vfe: HardVFE, points: torch.Tensor, point_pillar: torch.Tensor,
              coors: torch.Tensor, num_points: torch.Tensor) -> torch.Tensor:
    """HardVFE forward with dense-layout BatchNorm statistics -> pillar features [M, C_out]."""
    pad_count = vfe.max_num_points - num_points

    def activate(layer: VFELayer, x: torch.Tensor, pad: torch.Tensor
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        x, pad = _weighted_batch_norm(layer.norm, x, pad, pad_count)
        return torch.relu(x), torch.relu(pad)

    return vfe(points, point_pillar, coors, num_points, activate=activate)


def encode_batch(net: PointPillarsNet, batch: list[Pillars]) -> torch.Tensor:
    """Pillars of B samples -> canvases [B, 64, ny, nx]; the encoder sees all pillars at once
    (one set of BatchNorm statistics per batch, as mmdet3d voxelizes the batch together)."""
    offsets = torch.cumsum(torch.tensor([0] + [p.num_pillars for p in batch[:-1]]), 0).tolist()
    points = torch.cat([p.points[:, :4] for p in batch])
    point_pillar = torch.cat([p.point_pillar + o for p, o in zip(batch, offsets)])
    coors = torch.cat([p.coors for p in batch])
    num_points = torch.cat([p.num_points for p in batch])
    vfe = net.pts_voxel_encoder
    if vfe.training:
        features = vfe_train(vfe, points, point_pillar, coors, num_points)
    else:
        features = vfe(points, point_pillar, coors, num_points)
    return torch.cat([
        scatter_to_canvas(features[o:o + p.num_pillars], p.coors, net.grid_yx)
        for p, o in zip(batch, offsets)
    ])
