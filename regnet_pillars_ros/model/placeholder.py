"""Seeded random weights that behave like a trained network's in scale (used when no checkpoint
is given).

Random BatchNorm statistics let activations grow layer after layer until every anchor scores 1.
So the statistics are measured on a synthetic cloud (one pass in training mode), and the class
bias is shifted so that about `TARGET_BOXES` class scores pass the threshold on that cloud. The
boxes remain meaningless; this only keeps the pipeline's load realistic until real weights load.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from .checkpoint import random_state_dict
from .network import PointPillarsNet
from .presets import Preset
from .voxelize import voxelize

SEED = 0
TARGET_BOXES = 20


def synthetic_cloud(preset: Preset, num_points: int = 20_000, seed: int = SEED) -> torch.Tensor:
    """[N, 4] x, y, z, dt: a ground plane with scattered clutter inside the preset's range."""
    rng = np.random.default_rng(seed)
    lo, hi = (np.array(preset.point_cloud_range[:2]) * 0.8,
              np.array(preset.point_cloud_range[3:5]) * 0.8)
    xy = rng.uniform(lo, hi, size=(num_points, 2))
    z = np.where(rng.random(num_points) < 0.7, -1.8 + 0.05 * rng.standard_normal(num_points),
                 rng.uniform(-1.8, 0.5, num_points))
    dt = rng.choice(np.arange(10) * 0.05, size=num_points)
    return torch.from_numpy(np.column_stack([xy, z, dt]).astype(np.float32))


@torch.no_grad()
def placeholder_weights(net: PointPillarsNet, preset: Preset, score_thr: float) -> None:
    """Load seeded random weights into `net`, calibrated as described in the module docstring."""
    net.load_state_dict(random_state_dict(net, SEED))
    p = preset
    pillars = voxelize(synthetic_cloud(p), p.point_cloud_range, p.voxel_size, p.max_num_points,
                       p.max_voxels)
    norms = [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momentums = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average: one pass gives exactly that pass's statistics
    net.train()
    net(*pillars.network_inputs())
    net.eval()
    for m, momentum in zip(norms, momentums):
        m.momentum = momentum
    logits = torch.cat([cls.flatten() for cls in net(*pillars.network_inputs())[0::3]])
    kth = torch.topk(logits, min(TARGET_BOXES, logits.numel())).values[-1]
    threshold_logit = float(np.log(score_thr / (1 - score_thr)))
    net.pts_bbox_head.conv_cls.bias += threshold_logit - float(kth) + 1e-3
