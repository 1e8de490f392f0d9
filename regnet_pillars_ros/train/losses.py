"""The three losses of mmdet3d's `Anchor3DHead` with the settings of the nine configs.

From `pointpillars_hv_fpn_nus.py` / `pointpillars_hv_fpn_lyft.py` (shared by all nine presets):
- classes: sigmoid focal loss, gamma 2.0, alpha 0.25, weight 1.0, over K sigmoid outputs
  (background = all-zero target), per-anchor weights (ignored anchors weigh 0);
- boxes: smooth-L1 with beta 1/9, weight 1.0, on positive anchors only, times the per-channel
  `code_weight` ([1]*7 + [0.2, 0.2] for the nuScenes velocities, [1]*7 on Lyft); with
  `diff_rad_by_sin` the yaw channel compares sin(pred) cos(target) with cos(pred) sin(target),
  i.e. the loss sees sin(pred - target);
- direction: softmax cross-entropy over 2 bins on positives, weight 0.2.
Each is summed and divided by the number of positive anchors of the batch (each sample counting
at least 1), as mmdet's `weight_reduce_loss` with `avg_factor` does.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .targets import Targets


@dataclass(frozen=True)
class LossConfig:
    gamma: float = 2.0
    alpha: float = 0.25
    beta: float = 1.0 / 9.0
    cls_weight: float = 1.0
    bbox_weight: float = 1.0
    dir_weight: float = 0.2
    velocity_code_weight: float = 0.2

    def code_weights(self, code_size: int) -> list[float]:
        return [1.0] * 7 + [self.velocity_code_weight] * (code_size - 7)


def sigmoid_focal_loss(logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor,
                       gamma: float, alpha: float) -> torch.Tensor:
    """Summed focal loss of logits [N, K] against labels [N] (K = background), rows weighted [N]."""
    k = logits.shape[1]
    target = F.one_hot(labels, k + 1)[:, :k].to(logits.dtype)
    p = torch.sigmoid(logits)
    p_t = p * target + (1 - p) * (1 - target)
    alpha_t = alpha * target + (1 - alpha) * (1 - target)
    ce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    return (alpha_t * (1 - p_t).pow(gamma) * ce * weights[:, None]).sum()


def smooth_l1(diff: torch.Tensor, beta: float) -> torch.Tensor:
    """Elementwise smooth-L1 of a difference: quadratic below beta, linear above."""
    d = diff.abs()
    return torch.where(d < beta, 0.5 * d * d / beta, d - 0.5 * beta)


def add_sin_difference(pred: torch.Tensor, target: torch.Tensor
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """Replace channel 6 by sin(p) cos(t) and cos(p) sin(t): their difference is sin(p - t)."""
    p, t = pred[:, 6:7], target[:, 6:7]
    pred = torch.cat([pred[:, :6], torch.sin(p) * torch.cos(t), pred[:, 7:]], dim=1)
    target = torch.cat([target[:, :6], torch.cos(p) * torch.sin(t), target[:, 7:]], dim=1)
    return pred, target


def flatten_levels(maps: list[torch.Tensor], num_classes: int, code_size: int
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Flat head maps [cls0, reg0, dir0, cls1, ...] of B samples -> [B, N, K], [B, N, code],
    [B, N, 2], rows in anchor order (levels concatenated)."""
    def rows(level_maps: list[torch.Tensor], width: int) -> torch.Tensor:
        return torch.cat([m.permute(0, 2, 3, 1).reshape(m.shape[0], -1, width)
                          for m in level_maps], dim=1)

    return rows(maps[0::3], num_classes), rows(maps[1::3], code_size), rows(maps[2::3], 2)


def detection_loss(maps: list[torch.Tensor], targets: list[Targets], num_classes: int,
                   cfg: LossConfig = LossConfig()) -> dict[str, torch.Tensor]:
    """Losses of a batch: maps as `forward_canvas` returns them, one `Targets` per sample.

    Returns 'cls', 'bbox', 'dir' and their sum 'loss'.
    """
    code_size = targets[0].bbox_targets.shape[1]
    cls, reg, direction = flatten_levels(maps, num_classes, code_size)
    labels = torch.cat([t.labels for t in targets])
    label_weights = torch.cat([t.label_weights for t in targets])
    positive = torch.cat([t.positive for t in targets])
    num_pos = float(sum(max(t.num_pos, 1) for t in targets))

    cls_loss = sigmoid_focal_loss(cls.reshape(-1, num_classes), labels, label_weights, cfg.gamma,
                                  cfg.alpha)
    pred = reg.reshape(-1, code_size)[positive]
    target = torch.cat([t.bbox_targets for t in targets])[positive]
    pred, target = add_sin_difference(pred, target)
    code_weights = pred.new_tensor(cfg.code_weights(code_size))
    bbox_loss = (smooth_l1(pred - target, cfg.beta) * code_weights).sum()
    dir_targets = torch.cat([t.dir_targets for t in targets])[positive]
    dir_loss = F.cross_entropy(direction.reshape(-1, 2)[positive], dir_targets, reduction="sum")

    losses = {
        "cls": cfg.cls_weight * cls_loss / num_pos,
        "bbox": cfg.bbox_weight * bbox_loss / num_pos,
        "dir": cfg.dir_weight * dir_loss / num_pos,
    }
    losses["loss"] = losses["cls"] + losses["bbox"] + losses["dir"]
    return losses
