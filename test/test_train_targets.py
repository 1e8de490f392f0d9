"""Anchor target assignment on hand-made anchors and boxes."""
import math

import pytest
import torch

from regnet_pillars_ros.model.head import level_anchors
from regnet_pillars_ros.model.presets import get_preset
from regnet_pillars_ros.train.targets import (
    AnchorCache,
    AssignerConfig,
    aligned_iou,
    anchor_targets,
    assign,
    direction_targets,
    nearest_bev,
    to_convention,
)

DIR_OFFSET = -0.7854  # the 1.x configs'


def box(x, y, l=4.0, w=2.0, yaw=0.0, vx=0.0, vy=0.0):
    return [x, y, -1.8, l, w, 1.7, yaw, vx, vy]


def test_nearest_bev_swaps_extents_past_45_degrees():
    boxes = torch.tensor([box(0, 0), box(0, 0, yaw=math.pi / 2), box(0, 0, yaw=math.pi),
                          box(0, 0, yaw=0.7)])
    bev = nearest_bev(boxes)
    assert bev.tolist()[0] == pytest.approx([-2, -1, 2, 1])
    assert bev.tolist()[1] == pytest.approx([-1, -2, 1, 2])
    assert bev.tolist()[2] == pytest.approx([-2, -1, 2, 1])  # heading reversed: same rectangle
    assert bev.tolist()[3] == pytest.approx([-2, -1, 2, 1])  # 0.7 rad < pi/4: no swap


def test_aligned_iou_by_hand():
    iou = aligned_iou(torch.tensor([[0.0, 0, 2, 2]]),
                      torch.tensor([[1.0, 1, 3, 3], [5.0, 5, 6, 6], [0.0, 0, 2, 2]]))
    assert iou[0].tolist() == pytest.approx([1 / 7, 0.0, 1.0])


def test_assign_thresholds_and_low_quality_matches():
    gts = torch.tensor([box(0, 0), box(20, 0, l=1.0, w=1.0)])
    anchors = torch.tensor([
        box(0, 0),  # IoU 1 with box 0: positive
        box(50, 50),  # far: negative
        box(1.6, 0),  # IoU 2.4/5.6 = 0.43 with box 0: ignored
        box(20.6, 0, l=1.0, w=1.0),  # IoU 0.4/1.6 = 0.25 with box 1, its best: no claim (< 0.3)
    ])
    assert assign(anchors, gts, AssignerConfig()).tolist() == [1, 0, -1, 0]
    # A lower positive threshold makes the middle anchor positive.
    assert assign(anchors, gts, AssignerConfig(pos_iou_thr=0.4)).tolist() == [1, 0, 1, 0]
    # Box 1's best anchor (0.25) claims it once min_pos_iou allows, though below pos_iou_thr.
    assert (assign(anchors, gts, AssignerConfig(min_pos_iou=0.2, neg_iou_thr=0.2)).tolist()
            == [1, 0, -1, 2])


def test_assign_ties_all_claim_and_no_boxes_is_all_negative():
    gts = torch.tensor([box(0, 0, l=1.0, w=1.0)])
    anchors = torch.tensor([box(-0.5, 0, l=1.0, w=1.0), box(0.5, 0, l=1.0, w=1.0), box(9, 9)])
    assert assign(anchors, gts, AssignerConfig()).tolist() == [1, 1, 0]  # both reach the best, 1/3
    assert assign(anchors, gts[:0], AssignerConfig()).tolist() == [0, 0, 0]


@pytest.mark.parametrize("yaw,expected", [(0.0, 0), (math.pi / 2, 0), (math.pi, 1),
                                          (-math.pi / 2, 1), (-0.7, 0), (-0.9, 1)])
def test_direction_targets(yaw, expected):
    assert direction_targets(torch.tensor([yaw]), DIR_OFFSET).item() == expected


def test_anchor_targets_of_a_matching_anchor():
    gts = torch.tensor([box(0, 0, yaw=math.pi, vx=3.0, vy=-1.0)])
    anchors = torch.tensor([box(0, 0, yaw=math.pi), box(30, 30)])
    t = anchor_targets(anchors, gts, torch.tensor([7]), num_classes=10, dir_offset=DIR_OFFSET)
    assert t.labels.tolist() == [7, 10] and t.label_weights.tolist() == [1, 1]
    assert t.positive.tolist() == [True, False] and t.num_pos == 1
    assert t.bbox_targets[0].tolist() == pytest.approx([0, 0, 0, 0, 0, 0, 0, 3.0, -1.0], abs=1e-6)
    assert t.bbox_targets[1].abs().sum() == 0
    assert t.dir_targets.tolist() == [1, 0]


def test_anchor_cache_concatenates_levels_in_map_order():
    preset = get_preset("nus-fpn")
    shapes = [(8, 8), (4, 4), (2, 2)]
    anchors = AnchorCache(preset)(shapes)
    assert anchors.shape == (8 * (64 + 16 + 4), 9)
    expected = torch.cat([level_anchors(preset.anchors, i, hw, "v1")
                          for i, hw in enumerate(shapes)])
    assert torch.equal(anchors, expected)
    assert anchors[64 * 8:, 3].max() == pytest.approx(4 * 2.5981, rel=1e-5)  # level 2: scale 4


@pytest.mark.parametrize("yaw", [0.0, 0.5, -1.2, math.pi / 2, 3.0])
def test_v0_boxes_keep_the_footprint(yaw):
    v1 = torch.tensor([box(1.0, 2.0, l=4.6, w=1.9, yaw=yaw, vx=1.0, vy=2.0)])
    v0 = to_convention(v1, "v0")
    assert (v0[0, [3, 4]].tolist() == pytest.approx([1.9, 4.6])
            and v0[0, 6].item() == pytest.approx(-yaw - math.pi / 2))
    assert torch.allclose(nearest_bev(v0), nearest_bev(v1), atol=1e-5)
    assert torch.equal(to_convention(v1, "v1"), v1)
