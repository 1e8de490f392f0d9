"""Anchor target assignment of mmdet3d's `Anchor3DHead` (training side), vectorized.

Facts from the mmdet3d 1.x configs and head used here (read, not copied):
- All nine presets train with ONE shared `Max3DIoUAssigner` (`pointpillars_hv_fpn_nus.py`,
  inherited unchanged by the SECFPN, RegNet and Lyft configs; anchors are `reshape_out=True`, so
  no per-size assigner list applies): pos_iou_thr 0.6, neg_iou_thr 0.3, min_pos_iou 0.3,
  ignore_iof_thr -1 (no ignore boxes), `pos_weight=-1`, PseudoSampler (no sampling).
- IoU is `BboxOverlapsNearest3D`: each box's BEV rectangle is replaced by its nearest axis-aligned
  one (yaw wrapped into [-pi/2, pi/2); when |yaw| > pi/4 the x and y extents swap) and plain 2D
  IoU is taken; z plays no part.
- MaxIoUAssigner: an anchor whose best IoU is >= pos_iou_thr is positive for that box; in
  [0, neg_iou_thr) negative; in between ignored (no loss at all). Then every box whose best IoU
  is >= min_pos_iou also claims all anchors that reach exactly that best IoU (`gt_max_assign_all`;
  later boxes win ties). With no boxes every anchor is negative.
- Targets: labels = class of the assigned box, background = num_classes; label weight 1 for
  positives and negatives, 0 for ignored; regression targets `encode_boxes(anchor, box)` (velocity
  deltas included on nuScenes) with weight 1 on positives; direction target
  `floor(limit_period(yaw_gt - dir_offset, dir_limit_offset, 2 pi) / pi)` clamped to {0, 1}.
- The normaliser of all three losses is the number of positives, at least 1 per sample.
Training runs in the box convention of the weights: 'v1' from scratch, 'v0' when fine-tuning an
official v0.1.0 checkpoint (anchor sizes (w, l, h), dir_offset +pi/4, ground truth converted).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..model.head import encode_boxes, level_anchors
from ..model.postprocess import limit_period
from ..model.presets import Preset

_CHUNK = 1 << 16  # anchors compared against all boxes at once


@dataclass(frozen=True)
class AssignerConfig:
    pos_iou_thr: float = 0.6
    neg_iou_thr: float = 0.3
    min_pos_iou: float = 0.3


@dataclass
class Targets:
    """Per-anchor training targets of one sample (N anchors, all levels in level order)."""

    labels: torch.Tensor  # [N] long, num_classes = background
    label_weights: torch.Tensor  # [N] float, 0 = ignored
    bbox_targets: torch.Tensor  # [N, code] float, zero off the positives
    dir_targets: torch.Tensor  # [N] long
    positive: torch.Tensor  # [N] bool

    @property
    def num_pos(self) -> int:
        return int(self.positive.sum())


def nearest_bev(boxes: torch.Tensor) -> torch.Tensor:
    """Boxes [N, >= 7] -> nearest axis-aligned BEV rectangles [N, 4] = x1, y1, x2, y2."""
    yaw = limit_period(boxes[:, 6], 0.5, math.pi).abs()
    swap = (yaw > math.pi / 4).unsqueeze(1)
    dims = torch.where(swap, boxes[:, [4, 3]], boxes[:, [3, 4]])
    return torch.cat([boxes[:, :2] - dims / 2, boxes[:, :2] + dims / 2], dim=1)


def aligned_iou(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """IoU [Na, Nb] of axis-aligned rectangles [Na, 4] and [Nb, 4] (x1, y1, x2, y2)."""
    lt = torch.maximum(a[:, None, :2], b[None, :, :2])
    rb = torch.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(dim=2)
    area_a = (a[:, 2:] - a[:, :2]).prod(dim=1)
    area_b = (b[:, 2:] - b[:, :2]).prod(dim=1)
    return inter / (area_a[:, None] + area_b[None, :] - inter).clamp(min=eps)


def assign(anchors: torch.Tensor, gt_boxes: torch.Tensor, cfg: AssignerConfig) -> torch.Tensor:
    """MaxIoUAssigner on nearest-BEV IoU: [N] long, -1 ignored, 0 negative, i + 1 = box i."""
    n, m = anchors.shape[0], gt_boxes.shape[0]
    if m == 0:
        return anchors.new_zeros(n, dtype=torch.long)
    a_bev, g_bev = nearest_bev(anchors), nearest_bev(gt_boxes)
    best = anchors.new_empty(n)
    best_gt = torch.empty(n, dtype=torch.long, device=anchors.device)
    gt_best = anchors.new_zeros(m)
    for lo in range(0, n, _CHUNK):  # chunks keep the [N, M] IoU matrix out of memory
        iou = aligned_iou(a_bev[lo:lo + _CHUNK], g_bev)
        best[lo:lo + _CHUNK], best_gt[lo:lo + _CHUNK] = iou.max(dim=1)
        gt_best = torch.maximum(gt_best, iou.max(dim=0).values)
    assigned = torch.full((n,), -1, dtype=torch.long, device=anchors.device)
    assigned[(best >= 0) & (best < cfg.neg_iou_thr)] = 0
    pos = best >= cfg.pos_iou_thr
    assigned[pos] = best_gt[pos] + 1
    # Low-quality matches: the last box (highest index) reaching its own best IoU wins, as the
    # reference loop over boxes overwrites earlier ones.
    claims = gt_best >= cfg.min_pos_iou
    if bool(claims.any()):
        index = torch.arange(1, m + 1, device=anchors.device)
        for lo in range(0, n, _CHUNK):
            iou = aligned_iou(a_bev[lo:lo + _CHUNK], g_bev)
            hit = (iou == gt_best[None]) & claims[None]
            winner = (hit * index).max(dim=1).values
            chunk = assigned[lo:lo + _CHUNK]
            assigned[lo:lo + _CHUNK] = torch.where(winner > 0, winner, chunk)
    return assigned


def to_convention(boxes: torch.Tensor, convention: str) -> torch.Tensor:
    """1.x boxes [M, >= 7] in `convention`: v0 is (x, y, z, w, l, h, -yaw - pi/2, ...), same
    footprint."""
    if convention == "v1":
        return boxes
    out = boxes.clone()
    out[:, 3], out[:, 4] = boxes[:, 4], boxes[:, 3]
    out[:, 6] = -boxes[:, 6] - math.pi / 2
    return out


def direction_targets(yaw: torch.Tensor, dir_offset: float, dir_limit_offset: float = 0.0
                      ) -> torch.Tensor:
    """Direction bin (0 or 1) of ground-truth yaws, as `get_direction_target` with two bins."""
    shifted = limit_period(yaw - dir_offset, dir_limit_offset, 2 * math.pi)
    return torch.floor(shifted / math.pi).long().clamp(0, 1)


def anchor_targets(
    anchors: torch.Tensor,
    gt_boxes: torch.Tensor,
    gt_labels: torch.Tensor,
    num_classes: int,
    dir_offset: float,
    cfg: AssignerConfig = AssignerConfig(),
) -> Targets:
    """Targets of one sample: anchors [N, code], boxes [M, code] (1.x convention), labels [M]."""
    assigned = assign(anchors, gt_boxes, cfg)
    positive = assigned > 0
    labels = torch.full_like(assigned, num_classes)
    bbox_targets = torch.zeros_like(anchors)
    dir_targets = torch.zeros_like(assigned)
    if bool(positive.any()):
        gt_index = assigned[positive] - 1
        matched = gt_boxes[gt_index]
        labels[positive] = gt_labels[gt_index]
        bbox_targets[positive] = encode_boxes(anchors[positive], matched)
        dir_targets[positive] = direction_targets(matched[:, 6], dir_offset)
    return Targets(labels, (assigned >= 0).to(anchors.dtype), bbox_targets, dir_targets, positive)


class AnchorCache:
    """All levels' anchors of a preset in one box convention for given feature map sizes, built
    once."""

    def __init__(self, preset: Preset, convention: str = "v1"):
        self.preset, self.convention = preset, convention
        self._cache: dict[tuple, torch.Tensor] = {}

    def __call__(self, level_hw: list[tuple[int, int]], device: torch.device | str = "cpu"
                 ) -> torch.Tensor:
        """[sum_l H_l * W_l * A, code] in the order of the flattened head maps."""
        key = (tuple(level_hw), str(device))
        if key not in self._cache:
            self._cache[key] = torch.cat(
                [level_anchors(self.preset.anchors, i, hw, self.convention, device)
                 for i, hw in enumerate(level_hw)]
            )
        return self._cache[key]
