"""Box corners: one function for the simulator's ray casting, the markers, the demo and reports."""
import math

import numpy as np
import pytest

from regnet_pillars_ros.model.boxes import bev_corners, box_corners

# x, y, z_bottom, l, w, h, yaw: heading along +y.
BOX = np.array([[1.0, 2.0, -1.0, 4.0, 2.0, 1.5, math.pi / 2]])


def test_corners_follow_the_heading_counter_clockwise_from_front_left():
    corners = bev_corners(BOX)[0]
    # Heading along +y: the 4 m length lies along y, the 2 m width along x; front-left is
    # ahead (+y) and to the left (-x).
    np.testing.assert_allclose(corners, [[0.0, 4.0], [0.0, 0.0], [2.0, 0.0], [2.0, 4.0]],
                               atol=1e-12)
    x, y = corners[:, 0], corners[:, 1]
    assert 0.5 * (x * np.roll(y, -1) - np.roll(x, -1) * y).sum() == pytest.approx(8.0)  # > 0: CCW


def test_box_corners_stack_the_top_above_the_bottom():
    corners = box_corners(BOX)[0]
    np.testing.assert_allclose(corners[:4, :2], bev_corners(BOX)[0])
    np.testing.assert_allclose(corners[4:, :2], corners[:4, :2])
    np.testing.assert_allclose(corners[:4, 2], -1.0)
    np.testing.assert_allclose(corners[4:, 2], 0.5)


def test_extra_columns_and_no_boxes():
    with_velocity = np.concatenate([BOX, [[3.0, -1.0]]], axis=1)
    np.testing.assert_array_equal(box_corners(with_velocity), box_corners(BOX))
    assert box_corners(np.zeros((0, 7))).shape == (0, 8, 3)
