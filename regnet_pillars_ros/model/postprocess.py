"""Test-time post-processing of Anchor3DHead outputs (spec section i), for both box conventions.

Per level: sigmoid scores, top `nms_pre` anchors by best class score, decode. Then per class:
score threshold and rotated BEV NMS on the physical footprint (all classes in one batched call),
and the direction-bin fix.
"v1" weights (mmdet3d >= 1.0) decode directly into (x, y, z, l, w, h, yaw); "v0" weights (the
published v0.1.0 checkpoints) decode into (x, y, z, w, l, h, r_old) with clockwise r_old and are
converted to the v1 convention at the end. Outputs are always v1.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .head import decode_boxes
from .rotated_nms import nms_rotated_bev

HALF_PI = math.pi / 2


@dataclass(frozen=True)
class PostprocessConfig:
    score_thr: float
    nms_thr: float
    nms_pre: int
    max_num: int
    dir_offset: float
    dir_limit_offset: float
    convention: str  # 'v0' | 'v1'


@dataclass
class Candidates:
    """Decoded top-k anchors of all levels: boxes [n, 7|9] in the weights' convention."""

    boxes: torch.Tensor
    scores: torch.Tensor  # [n, K] sigmoid
    dir_labels: torch.Tensor  # [n] 0 | 1


def limit_period(val: torch.Tensor, offset: float, period: float) -> torch.Tensor:
    """Wrap `val` into [-offset * period, (1 - offset) * period)."""
    return val - torch.floor(val / period + offset) * period


def select_candidates(
    levels: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]], anchors: list[torch.Tensor],
    nms_pre: int
) -> Candidates:
    """Top `nms_pre` rows of each level by best class score, decoded and concatenated in level
    order.

    levels: per level the flattened (cls logits [n, K], deltas [n, code], dir logits [n, 2]).
    """
    kept: list[tuple[torch.Tensor, ...]] = []
    for (cls, reg, direction), level_anchors in zip(levels, anchors):
        if 0 < nms_pre < cls.shape[0]:
            # sigmoid is monotonic, so the best class probability of a row is the sigmoid of its
            # best logit (the same floats): only the kept rows need all their probabilities.
            keep = cls.amax(dim=1).sigmoid_().topk(nms_pre)[1]
            cls, reg, direction, level_anchors = (cls[keep], reg[keep], direction[keep],
                                                  level_anchors[keep])
        kept.append((level_anchors, reg, cls.sigmoid(), direction))
    # Decoded once for all levels: on a GPU every elementwise op is a kernel launch.
    level_anchors, reg, scores, direction = (torch.cat(part) for part in zip(*kept))
    return Candidates(decode_boxes(level_anchors, reg), scores, torch.max(direction, dim=-1)[1])


def physical_bev(boxes: torch.Tensor, convention: str) -> torch.Tensor:
    """[n, 5] (x, y, extent along heading, extent across, CCW heading) of decoded boxes.

    Goes through mmdet3d's (x1, y1, x2, y2, r) detour so the floats are the ones its NMS sees.
    """
    if convention == "v0":
        bev = torch.stack([boxes[:, 0], boxes[:, 1], boxes[:, 4], boxes[:, 3],
                           -boxes[:, 6] - HALF_PI], dim=1)
    else:
        bev = boxes[:, [0, 1, 3, 4, 6]]
    half = bev[:, 2:4] / 2
    corners = torch.cat([bev[:, :2] - half, bev[:, :2] + half], dim=1)
    return torch.stack(
        [(corners[:, 0] + corners[:, 2]) / 2, (corners[:, 1] + corners[:, 3]) / 2,
         corners[:, 2] - corners[:, 0], corners[:, 3] - corners[:, 1], bev[:, 4]],
        dim=1,
    )


def multiclass_nms(
    cand: Candidates, cfg: PostprocessConfig
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-class rotated NMS -> (boxes, scores, labels, dir_labels), at most `max_num` rows.

    All classes in one batched NMS call (classes never suppress each other); rows come out class by
    class, each class in descending score order, as from one NMS call per class.
    """
    labels, rows = torch.nonzero(cand.scores.T > cfg.score_thr, as_tuple=True)  # class-major
    scores = cand.scores[rows, labels]
    keep = nms_rotated_bev(physical_bev(cand.boxes, cfg.convention)[rows], scores, cfg.nms_thr,
                           groups=labels)
    keep = keep[torch.sort(labels[keep], stable=True).indices]
    rows, scores, labels = rows[keep], scores[keep], labels[keep]
    if rows.shape[0] > cfg.max_num:
        top = torch.sort(scores, descending=True)[1][: cfg.max_num]
        rows, scores, labels = rows[top], scores[top], labels[top]
    return cand.boxes[rows], scores, labels, cand.dir_labels[rows]


def fix_direction(boxes: torch.Tensor, dir_labels: torch.Tensor,
                  cfg: PostprocessConfig) -> torch.Tensor:
    """Resolve the heading's pi ambiguity with the direction classifier (yaw in place of
    column 6)."""
    yaw = limit_period(boxes[:, 6] - cfg.dir_offset, cfg.dir_limit_offset, math.pi)
    boxes = boxes.clone()
    boxes[:, 6] = yaw + cfg.dir_offset + math.pi * dir_labels.to(boxes.dtype)
    return boxes


def to_v1(boxes: torch.Tensor) -> torch.Tensor:
    """v0 (x, y, z, w, l, h, r_old, ...) -> v1 (x, y, z, l, w, h, -r_old - pi/2, ...)."""
    out = boxes.clone()
    out[:, 3], out[:, 4] = boxes[:, 4], boxes[:, 3]
    out[:, 6] = -boxes[:, 6] - HALF_PI
    return out


def postprocess(cand: Candidates,
                cfg: PostprocessConfig) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Candidates -> final (boxes [M, 7|9] in the v1 convention, scores [M], labels [M])."""
    boxes, scores, labels, dir_labels = multiclass_nms(cand, cfg)
    boxes = fix_direction(boxes, dir_labels, cfg)
    if cfg.convention == "v0":
        boxes = to_v1(boxes)
    return boxes, scores, labels
