"""Transform algebra and the time-indexed transform tree."""
import math

import numpy as np
import pytest

from regnet_pillars_ros.pipeline.transforms import (
    ExtrapolationError,
    Transform,
    TransformBuffer,
    TransformError,
    slerp,
    transform_boxes,
)

SEC = 1_000_000_000


def random_transform(rng: np.random.Generator) -> Transform:
    return Transform.from_xyz_quat(rng.normal(size=3) * 10, rng.normal(size=4))


def test_compose_inverse_and_apply_agree_with_matrices():
    rng = np.random.default_rng(0)
    a, b = random_transform(rng), random_transform(rng)
    pts = rng.normal(size=(5, 3))
    np.testing.assert_allclose((a @ b).matrix(), a.matrix() @ b.matrix(), atol=1e-12)
    np.testing.assert_allclose((a @ a.inverse()).matrix(), np.eye(4), atol=1e-12)
    np.testing.assert_allclose(a.apply(pts), pts @ a.matrix()[:3, :3].T + a.matrix()[:3, 3])


def test_yaw_round_trip_and_bad_quaternion():
    assert Transform.from_xyz_yaw((0, 0, 0), 2.5).yaw() == pytest.approx(2.5)
    with pytest.raises(ValueError, match="not a rotation"):
        Transform.from_xyz_quat((0, 0, 0), (0, 0, 0, 0))


def test_slerp_takes_the_short_arc_and_keeps_unit_length():
    q0 = np.array([0, 0, math.sin(0.1), math.cos(0.1)])       # yaw 0.2
    q1 = -np.array([0, 0, math.sin(0.3), math.cos(0.3)])      # yaw 0.6, other hemisphere
    mid = slerp(q0, q1, 0.5)
    assert np.linalg.norm(mid) == pytest.approx(1.0)
    assert Transform(np.zeros(3), mid).yaw() == pytest.approx(0.4)


def test_lookup_interpolates_translation_and_rotation():
    buf = TransformBuffer()
    buf.set_transform("odom", "base", 1 * SEC, Transform.from_xyz_yaw((0, 0, 0), 0.0))
    buf.set_transform("odom", "base", 2 * SEC, Transform.from_xyz_yaw((10, 4, 0), 1.0))
    t = buf.lookup("odom", "base", 1 * SEC + SEC // 4)
    np.testing.assert_allclose(t.translation, (2.5, 1.0, 0.0))
    assert t.yaw() == pytest.approx(0.25)


def test_lookup_walks_the_tree_through_static_and_dynamic_edges():
    buf = TransformBuffer()
    lidar_in_base = Transform.from_xyz_yaw((1.0, 0.0, 1.8), 0.1)
    base_in_odom = Transform.from_xyz_yaw((5.0, -2.0, 0.0), 0.7)
    buf.set_transform("base", "lidar", 0, lidar_in_base, static=True)
    buf.set_transform("base", "radar", 0, Transform.from_xyz_yaw((3, 0, 0.5), 0.0), static=True)
    buf.set_transform("odom", "base", 5 * SEC, base_in_odom)
    buf.set_transform("odom", "base", 6 * SEC, base_in_odom)
    np.testing.assert_allclose(buf.lookup("odom", "lidar", 5 * SEC).matrix(),
                               (base_in_odom @ lidar_in_base).matrix(), atol=1e-12)
    # Siblings meet at their common parent; the inverse direction is the inverse transform.
    radar_to_lidar = buf.lookup("lidar", "radar", 5 * SEC)
    np.testing.assert_allclose(buf.lookup("radar", "lidar", 5 * SEC).matrix(),
                               radar_to_lidar.inverse().matrix(), atol=1e-12)


def test_extrapolation_beyond_tolerance_raises_with_the_gap():
    buf = TransformBuffer(tolerance_s=0.05)
    buf.set_transform("odom", "base", 10 * SEC, Transform.from_xyz_yaw((1, 0, 0), 0))
    buf.set_transform("odom", "base", 11 * SEC, Transform.from_xyz_yaw((2, 0, 0), 0))
    # Within tolerance: the nearest sample is used, unless the lookup asks for an exact one.
    assert buf.lookup("odom", "base", 11 * SEC + SEC // 50).translation[0] == pytest.approx(2)
    with pytest.raises(ExtrapolationError, match=r"0\.020 s after the newest"):
        buf.lookup("odom", "base", 11 * SEC + SEC // 50, exact=True)
    assert (buf.lookup("odom", "base", 10 * SEC + SEC // 2, exact=True).translation[0]
            == pytest.approx(1.5))
    with pytest.raises(ExtrapolationError, match=r"0\.500 s after the newest"):
        buf.lookup("odom", "base", 11 * SEC + SEC // 2)
    with pytest.raises(ExtrapolationError, match="before the oldest"):
        buf.lookup("odom", "base", 9 * SEC)


def test_unknown_and_disconnected_frames_name_what_is_known():
    buf = TransformBuffer()
    buf.set_transform("odom", "base", 0, Transform.identity())
    buf.set_transform("map", "gps", 0, Transform.identity())
    with pytest.raises(TransformError, match=r"'lidar' is unknown \(known frames: base, gps"):
        buf.lookup("odom", "lidar", 0)
    with pytest.raises(TransformError, match="not connected"):
        buf.lookup("odom", "gps", 0)


def test_history_is_bounded_in_time_and_count():
    buf = TransformBuffer(cache_s=1.0, max_len=5)
    for i in range(20):
        buf.set_transform("odom", "base", i * SEC // 10, Transform.from_xyz_yaw((i, 0, 0), 0))
    hist = buf._dynamic["base"]
    assert len(hist.stamps) == 5
    assert hist.stamps[0] == 15 * SEC // 10
    with pytest.raises(ExtrapolationError):
        buf.lookup("odom", "base", 0)


def test_boxes_move_with_centre_yaw_and_velocity():
    t = Transform.from_xyz_yaw((10.0, 0.0, 1.0), math.pi / 2)
    boxes = np.array([[2.0, 0.0, -1.0, 4.0, 2.0, 1.5, 0.1, 3.0, 0.0]], np.float32)
    out = transform_boxes(boxes, t)
    np.testing.assert_allclose(out[0, :3], (10.0, 2.0, 0.0), atol=1e-6)
    np.testing.assert_allclose(out[0, 3:6], boxes[0, 3:6])
    assert out[0, 6] == pytest.approx(0.1 + math.pi / 2)
    np.testing.assert_allclose(out[0, 7:9], (0.0, 3.0), atol=1e-6)
    np.testing.assert_allclose(transform_boxes(boxes[:, :7], t)[:, :7], out[:, :7])
