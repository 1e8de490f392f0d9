"""The network of one preset: pillar encoder -> scatter -> backbone -> neck -> head.

Attribute names give the checkpoint keys (`pts_voxel_encoder.*`, `pts_backbone.*`, `pts_neck.*`,
`pts_bbox_head.*`) in mmdet3d's registration order.
"""
from __future__ import annotations

import torch
from torch import nn

from .backbones import build_backbone
from .head import Anchor3DHead
from .necks import build_neck
from .pillars import HardVFE, scatter_to_canvas
from .presets import Preset


class PointPillarsNet(nn.Module):
    """Points-branch of mmdet3d's MVXFasterRCNN for one preset (inference only)."""

    def __init__(self, preset: Preset):
        super().__init__()
        self.grid_yx = (preset.grid_size[1], preset.grid_size[0])
        self.pts_voxel_encoder = HardVFE(preset.vfe_channels, preset.voxel_size, preset.point_cloud_range, preset.max_num_points)
        self.pts_backbone = build_backbone(preset.backbone)
        self.pts_neck = build_neck(preset.neck)
        self.pts_bbox_head = Anchor3DHead(
            preset.head_channels, preset.anchors.num_per_location, preset.num_classes, preset.box_code_size
        )

    def encode(self, points: torch.Tensor, point_pillar: torch.Tensor, coors: torch.Tensor, num_points: torch.Tensor) -> torch.Tensor:
        """Kept points of M pillars (see `Pillars`) -> BEV canvas [1, 64, ny, nx]."""
        return scatter_to_canvas(self.pts_voxel_encoder(points, point_pillar, coors, num_points), coors, self.grid_yx)

    def forward_canvas(self, canvas: torch.Tensor) -> list[torch.Tensor]:
        """Canvas -> raw head maps, level after level: cls [1, A*K, H, W], reg, dir."""
        return [m for level in self.pts_bbox_head(self.pts_neck(self.pts_backbone(canvas))) for m in level]

    def forward(self, points: torch.Tensor, point_pillar: torch.Tensor, coors: torch.Tensor, num_points: torch.Tensor) -> list[torch.Tensor]:
        """Pillars -> raw head maps (the boundary that runtime backends and ONNX export share)."""
        return self.forward_canvas(self.encode(points, point_pillar, coors, num_points))
