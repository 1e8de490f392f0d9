"""The network of one preset: pillar encoder -> scatter -> backbone -> neck -> head.

Attribute names give the checkpoint keys (`pts_voxel_encoder.*`, `pts_backbone.*`, `pts_neck.*`,
`pts_bbox_head.*`) in mmdet3d's registration order.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from .backbones import build_backbone
from .head import Anchor3DHead
from .necks import build_neck
from .pillars import HardVFE, VFELayer, scatter_to_canvas
from .presets import Preset


class PointPillarsNet(nn.Module):
    """Points-branch of mmdet3d's MVXFasterRCNN for one preset (inference only)."""

    def __init__(self, preset: Preset):
        super().__init__()
        self.grid_yx = (preset.grid_size[1], preset.grid_size[0])
        self.pts_voxel_encoder = HardVFE(preset.vfe_channels, preset.voxel_size,
                                         preset.point_cloud_range, preset.max_num_points)
        self.pts_backbone = build_backbone(preset.backbone)
        self.pts_neck = build_neck(preset.neck)
        self.pts_bbox_head = Anchor3DHead(
            preset.head_channels, preset.anchors.num_per_location, preset.num_classes,
            preset.box_code_size
        )

    def encode(self, points: torch.Tensor, point_pillar: torch.Tensor, coors: torch.Tensor,
               num_points: torch.Tensor, padded: bool = False) -> torch.Tensor:
        """Kept points of M pillars (see `Pillars`), or fixed-size `padded` ones (`voxelize_fixed`)
        -> BEV canvas [1, 64, ny, nx]."""
        features = self.pts_voxel_encoder(points, point_pillar, coors, num_points)
        return scatter_to_canvas(features, coors, self.grid_yx, spare_row=padded)

    def forward_canvas(self, canvas: torch.Tensor) -> list[torch.Tensor]:
        """Canvas -> raw head maps, level after level: cls [1, A*K, H, W], reg, dir."""
        return [m for level in self.pts_bbox_head(self.pts_neck(self.pts_backbone(canvas)))
                for m in level]

    def forward(self, points: torch.Tensor, point_pillar: torch.Tensor, coors: torch.Tensor,
                num_points: torch.Tensor) -> list[torch.Tensor]:
        """Pillars -> raw head maps (the boundary that runtime backends and ONNX export share)."""
        return self.forward_canvas(self.encode(points, point_pillar, coors, num_points))


def fold_batchnorm(module: nn.Module) -> int:
    """Fold every eval-mode BatchNorm2d into the convolution before it, and the pillar encoder's
    BatchNorm1d into its linear layers, in place; returns the count.

    Inference only: y = BN(conv(x)) becomes conv'(x) with scaled weights and a bias, which saves
    one pass over every feature map. The BN becomes an Identity, so module names stay valid.
    """
    folded = 0
    for layer in module.modules():
        if isinstance(layer, VFELayer) and not isinstance(layer.norm, nn.Identity):
            layer.fold()
            folded += 1
    for parent in module.modules():
        children = list(parent.named_children())
        for (conv_name, conv), (bn_name, bn) in zip(children, children[1:]):
            pair = {("conv", "bn"), ("conv1", "bn1"), ("conv2", "bn2"), ("conv3", "bn3")}
            adjacent = conv_name.isdigit() and bn_name.isdigit()  # nn.Sequential(conv, bn, ...)
            if not (isinstance(bn, nn.BatchNorm2d) and ((conv_name, bn_name) in pair or adjacent)):
                continue
            if isinstance(conv, (nn.Conv2d, nn.ConvTranspose2d)):
                fused = fuse_conv_bn_eval(conv.eval(), bn.eval(),
                                          transpose=isinstance(conv, nn.ConvTranspose2d))
                setattr(parent, conv_name, fused)
                setattr(parent, bn_name, nn.Identity())
                folded += 1
    return folded
