"""The v0.x (pre-refactor) box convention of the published checkpoints, and its detection."""
from __future__ import annotations

import math
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch

from regnet_pillars_ros.model import get_preset
from regnet_pillars_ros.model.checkpoint import box_convention_of, read_checkpoint, write_checkpoint
from regnet_pillars_ros.model.postprocess import physical_bev, to_v1
from regnet_pillars_ros.runtime.factory import build_detector

FIXTURE = (Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "mmdet3d"
           / "nus-regnetx-400mf-secfpn-s11")


def footprint_v0(box: np.ndarray) -> np.ndarray:
    """Corners of a v0.x box (x, y, z, w, l, h, r_old): w along local x, rotated clockwise by
    r_old."""
    x, y, _, w, l, _, r = box[:7]
    local = np.array([[w / 2, l / 2], [-w / 2, l / 2], [-w / 2, -l / 2], [w / 2, -l / 2]])
    rot = np.array([[math.cos(r), math.sin(r)], [-math.sin(r), math.cos(r)]])  # clockwise
    return local @ rot.T + [x, y]


def footprint_v1(x: float, y: float, length: float, width: float, yaw: float) -> np.ndarray:
    """Corners of a v1 BEV box: length along the heading, yaw counter-clockwise."""
    local = np.array([[length / 2, width / 2], [-length / 2, width / 2],
                      [-length / 2, -width / 2], [length / 2, -width / 2]])
    rot = np.array([[math.cos(yaw), -math.sin(yaw)], [math.sin(yaw), math.cos(yaw)]])
    return local @ rot.T + [x, y]


def same_corners(a: np.ndarray, b: np.ndarray) -> bool:
    return all(np.linalg.norm(b - corner, axis=1).min() < 1e-4 for corner in a)


def test_conversion_keeps_the_physical_footprint():
    rng = np.random.default_rng(0)
    for _ in range(50):
        box = np.concatenate([rng.normal(size=3) * 10, rng.uniform(0.3, 6, size=3),
                              rng.uniform(-7, 7, size=1)])
        v1 = to_v1(torch.tensor(box[None], dtype=torch.float64))[0].numpy()
        assert v1[3] == box[4] and v1[4] == box[3]
        assert same_corners(footprint_v0(box), footprint_v1(v1[0], v1[1], v1[3], v1[4], v1[6]))
        bev = physical_bev(torch.tensor(box[None], dtype=torch.float64), "v0")[0].numpy()
        assert same_corners(footprint_v0(box), footprint_v1(*bev))


def test_a_swapped_extent_is_a_different_footprint():
    box = np.array([0, 0, 0, 1.0, 4.0, 1.5, 0.3])
    wrong = footprint_v1(0, 0, 1.0, 4.0, -0.3 - math.pi / 2)
    assert not same_corners(footprint_v0(box), wrong)


@pytest.mark.parametrize(
    "meta,expected",
    [
        ({}, "v0"),  # official v0.1.0 files carry no mmdet3d_version (2020) ...
        ({"mmdet_version": "0.1.0", "CLASSES": ["car"]}, "v0"),
        ({"mmdet3d_version": "0.13.0"}, "v0"),  # ... or a 0.x one (2021)
        ({"mmdet3d_version": "1.0.0rc0"}, "v1"),
        ({"mmdet3d_version": "1.4.0"}, "v1"),
        ({"mmdet3d_version": "1.4.0", "box_convention": "v0"}, "v0"),  # our explicit record wins
        ({"box_convention": "v1"}, "v1"),
    ],
)
def test_convention_from_meta(meta, expected):
    assert box_convention_of(meta) == expected


def v0_twin(state: "OrderedDict[str, torch.Tensor]", preset_name: str
            ) -> "OrderedDict[str, torch.Tensor]":
    """Weights that, decoded with the v0 recipe, describe the same physical boxes as `state` under
    v1.

    Per anchor: swap the two extent deltas (v0 anchors are (w, l, h)) and map the yaw delta so
    that -r_old - pi/2 equals the v1 yaw. The direction bins of the two conventions sit at
    different angles, so only the heading axis (yaw modulo pi) is comparable afterwards.
    """
    preset = get_preset(preset_name)
    code, rotations = preset.box_code_size, preset.anchors.rotations
    twin = OrderedDict((k, v.clone()) for k, v in state.items())
    weight, bias = twin["pts_bbox_head.conv_reg.weight"], twin["pts_bbox_head.conv_reg.bias"]
    for a in range(preset.anchors.num_per_location):
        c = a * code
        weight[[c + 3, c + 4]] = weight[[c + 4, c + 3]].clone()
        bias[[c + 3, c + 4]] = bias[[c + 4, c + 3]].clone()
        ra = torch.tensor(rotations[a % len(rotations)], dtype=torch.float32)
        weight[c + 6] = -weight[c + 6]
        bias[c + 6] = -bias[c + 6] - 2 * ra - math.pi / 2
    return twin


@pytest.mark.skipif(not FIXTURE.is_dir(), reason=f"fixture not found at {FIXTURE}")
def test_v0_recipe_recovers_the_physical_boxes(tmp_path):
    preset = "nus-regnetx-400mf-secfpn"
    v1_ckpt = read_checkpoint(FIXTURE / "checkpoint.pth")
    twin_path = write_checkpoint(tmp_path / "twin_v0.pth", v0_twin(v1_ckpt.state_dict, preset),
                                 get_preset(preset), "v0")
    points = np.load(FIXTURE / "points.npy")
    v1 = build_detector(preset, FIXTURE / "checkpoint.pth")(points)
    v0_detector = build_detector(preset, twin_path)
    assert v0_detector.box_convention == "v0"
    v0 = v0_detector(points)
    assert len(v0) == len(v1) > 10
    order1, order0 = (np.lexsort((v1.boxes[:, 0], v1.labels)),
                      np.lexsort((v0.boxes[:, 0], v0.labels)))
    b1, b0 = v1.boxes[order1], v0.boxes[order0]
    np.testing.assert_array_equal(v1.labels[order1], v0.labels[order0])
    np.testing.assert_allclose(v0.scores[order0], v1.scores[order1], atol=1e-6)
    np.testing.assert_allclose(b0[:, [0, 1, 2, 3, 4, 5, 7, 8]], b1[:, [0, 1, 2, 3, 4, 5, 7, 8]],
                               atol=1e-4)
    axis_diff = (b0[:, 6] - b1[:, 6]) / math.pi
    np.testing.assert_allclose(axis_diff, np.round(axis_diff), atol=1e-4)
    # The recipe's final yaw lies in (-11pi/4, -3pi/4].
    assert ((b0[:, 6] > -11 * math.pi / 4 - 1e-5).all()
            and (b0[:, 6] <= -3 * math.pi / 4 + 1e-5).all())


@pytest.mark.skipif(not FIXTURE.is_dir(), reason=f"fixture not found at {FIXTURE}")
def test_wrong_convention_changes_the_boxes():
    points = np.load(FIXTURE / "points.npy")
    right = build_detector("nus-regnetx-400mf-secfpn", FIXTURE / "checkpoint.pth")(points)
    wrong_detector = build_detector("nus-regnetx-400mf-secfpn", FIXTURE / "checkpoint.pth",
                                    box_convention="v0")
    assert wrong_detector.box_convention == "v0"
    wrong = wrong_detector(points)
    sizes_right = np.sort(right.boxes[:, 3:5], axis=0)
    sizes_wrong = np.sort(wrong.boxes[:, 3:5], axis=0)
    assert len(right) != len(wrong) or not np.allclose(sizes_right, sizes_wrong, atol=1e-2)
