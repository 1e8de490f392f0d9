"""Losses against plain formulas, and the training-mode pillar encoder against mmdet3d's dense
layout."""
import math

import pytest
import torch
from float_bounds import assert_close_float64

from regnet_pillars_ros.model.network import PointPillarsNet
from regnet_pillars_ros.model.presets import get_preset
from regnet_pillars_ros.model.voxelize import voxelize
from regnet_pillars_ros.train.encoder import encode_batch
from regnet_pillars_ros.train.losses import (
    LossConfig,
    add_sin_difference,
    detection_loss,
    sigmoid_focal_loss,
    smooth_l1,
)
from regnet_pillars_ros.train.targets import Targets


def test_focal_loss_matches_the_formula():
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(5, 3, generator=gen) * 3
    labels = torch.tensor([0, 2, 3, 1, 3])  # 3 = background
    weights = torch.tensor([1.0, 1.0, 1.0, 0.0, 0.5])
    expected = 0.0
    for i in range(5):
        for k in range(3):
            p = 1 / (1 + math.exp(-logits[i, k].item()))
            if labels[i] == k:
                term = -0.25 * (1 - p) ** 2 * math.log(p)
            else:
                term = -0.75 * p**2 * math.log(1 - p)
            expected += weights[i].item() * term
    assert (sigmoid_focal_loss(logits, labels, weights, 2.0, 0.25).item()
            == pytest.approx(expected, rel=1e-5))


def test_smooth_l1_is_quadratic_below_beta_and_linear_above():
    beta = 1 / 9
    d = torch.tensor([0.05, -0.05, 1.0, -2.0])
    assert (smooth_l1(d, beta).tolist()
            == pytest.approx([0.5 * 0.05**2 / beta] * 2 + [1 - beta / 2, 2 - beta / 2]))


def test_sin_difference_sees_only_the_sine_of_the_yaw_error():
    pred = torch.tensor([[1.0, 2, 3, 4, 5, 6, 0.3, 7, 8], [0, 0, 0, 0, 0, 0, 0.2 + math.pi, 0, 0]])
    target = torch.tensor([[1.0, 2, 3, 4, 5, 6, 1.1, 7, 8], [0, 0, 0, 0, 0, 0, 0.2, 0, 0]])
    p, t = add_sin_difference(pred, target)
    diff = p - t
    assert diff[0, 6].item() == pytest.approx(math.sin(0.3 - 1.1), abs=1e-6)
    # A reversed heading costs nothing here.
    assert diff[1, 6].item() == pytest.approx(0.0, abs=1e-6)
    assert torch.equal(diff[:, [0, 1, 2, 3, 4, 5, 7, 8]], torch.zeros(2, 8))


def test_detection_loss_normalises_by_positives_and_weights_velocity():
    num_classes, code = 2, 9
    # One level, 1 x 2 map, 1 anchor per location: anchor 0 positive (class 1), anchor 1 negative.
    cls = torch.zeros(1, num_classes, 1, 2)
    reg = torch.zeros(1, code, 1, 2)
    reg[0, 7, 0, 0] = 2.0  # velocity error 2 on the positive
    reg[0, 0, 0, 1] = 5.0  # errors on negatives cost nothing
    direction = torch.zeros(1, 2, 1, 2)
    targets = Targets(
        labels=torch.tensor([1, 2]), label_weights=torch.ones(2), bbox_targets=torch.zeros(2, code),
        dir_targets=torch.tensor([1, 0]), positive=torch.tensor([True, False]),
    )
    losses = detection_loss([cls, reg, direction], [targets], num_classes)
    beta = LossConfig().beta
    assert losses["bbox"].item() == pytest.approx(0.2 * (2.0 - beta / 2))
    assert losses["dir"].item() == pytest.approx(0.2 * math.log(2))
    # One positive term, three negatives.
    focal_at_zero = 0.25 * 0.25 * math.log(2) + 3 * 0.75 * 0.25 * math.log(2)
    assert losses["cls"].item() == pytest.approx(focal_at_zero)
    assert (losses["loss"].item()
            == pytest.approx(sum(losses[k].item() for k in ("cls", "bbox", "dir"))))
    # Two samples with no positive between them still divide by 1 each.
    none = Targets(torch.tensor([2, 2]), torch.ones(2), torch.zeros(2, code),
                   torch.zeros(2, dtype=torch.long), torch.tensor([False, False]))
    two = detection_loss([torch.cat([cls] * 2), torch.cat([reg] * 2), torch.cat([direction] * 2)],
                         [none, none], num_classes)
    assert two["cls"].item() == pytest.approx(8 * 0.75 * 0.25 * math.log(2) / 2)
    assert two["bbox"].item() == 0.0


def dense_vfe_reference(vfe, dense: torch.Tensor, coors: torch.Tensor,
                        num_points: torch.Tensor) -> torch.Tensor:
    """mmdet3d HardVFE in training mode on the padded layout [M, N, 4], BN over all M * N slots."""
    m, n, _ = dense.shape
    mask = (torch.arange(n)[None, :] < num_points[:, None]).unsqueeze(2).float()
    xyz = dense[..., :3]
    mean = xyz.sum(1, keepdim=True) / num_points.view(-1, 1, 1).float()
    centre = (coors.flip(1).float()[:, None, :] * torch.tensor(vfe.voxel_size)
              + torch.tensor(vfe.offset))
    x = torch.cat([dense, xyz - mean, xyz - centre], dim=2) * mask
    for i, layer in enumerate(vfe.vfe_layers):
        y = layer.linear(x)
        y = torch.relu(layer.norm(y.permute(0, 2, 1)).permute(0, 2, 1))
        pooled = y.max(dim=1, keepdim=True).values
        x = (torch.cat([y, pooled.expand_as(y)], dim=2) if i < len(vfe.vfe_layers) - 1
             else pooled.squeeze(1))
    return x


def test_training_encoder_matches_the_dense_layout_and_eval_matches_inference():
    preset = get_preset("nus-secfpn")
    torch.manual_seed(0)
    points = torch.cat([torch.rand(300, 2) * 2 - 1, torch.rand(300, 1) - 2,
                        torch.rand(300, 1) * 0.5], dim=1)
    # float64: the two layouts sum the batch statistics in different orders.
    pillars = voxelize(points.double(), preset.point_cloud_range, preset.voxel_size,
                       preset.max_num_points, 30000)
    net = PointPillarsNet(preset).train().double()
    reference = PointPillarsNet(preset).train().double()
    reference.load_state_dict(net.state_dict())
    canvas = encode_batch(net, [pillars, pillars])
    dense = pillars.dense(preset.max_num_points)
    features = dense_vfe_reference(reference.pts_voxel_encoder, torch.cat([dense, dense]),
                                   pillars.coors.repeat(2, 1),
                                   pillars.num_points.repeat(2))  # the batch of two samples, as one
    cells = pillars.coors[:, 1] * preset.grid_size[0] + pillars.coors[:, 2]
    assert_close_float64(canvas[0].flatten(1)[:, cells].t(), features[:pillars.num_pillars],
                         "pillar features")
    assert_close_float64(canvas[1], canvas[0], "second sample")  # the same pillars again
    # Running statistics moved once, as nn.BatchNorm over the batch's slots would.
    for ours, ref in zip(net.pts_voxel_encoder.vfe_layers, reference.pts_voxel_encoder.vfe_layers):
        assert_close_float64(ours.norm.running_mean, ref.norm.running_mean, "running mean")
        assert_close_float64(ours.norm.running_var, ref.norm.running_var, "running variance")
    net.eval()
    assert torch.equal(encode_batch(net, [pillars]), net.encode(*pillars.network_inputs()))
