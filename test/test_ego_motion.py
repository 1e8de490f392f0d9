"""EgoMotion: /tf and odometry messages (read by field name) into one buffer, and the node's
lookup: exact, else wait for /tf to reach the stamp, else the nearest within the tolerance."""
import math
import threading
from types import SimpleNamespace as Msg

import numpy as np
import pytest

from regnet_pillars_ros.pipeline.ego_motion import EgoMotion
from regnet_pillars_ros.pipeline.stamps import stamp_ns
from regnet_pillars_ros.pipeline.transforms import TransformError

SEC = 1_000_000_000
T0 = 100 * SEC


def stamp(ns: int) -> Msg:
    return Msg(sec=ns // SEC, nanosec=ns % SEC)


def pose_fields(x: float, yaw: float, norm: float = 1.0) -> tuple[Msg, Msg]:
    return (Msg(x=x, y=0.0, z=0.0),
            Msg(x=0.0, y=0.0, z=norm * math.sin(yaw / 2), w=norm * math.cos(yaw / 2)))


def tf(parent: str, child: str, ns: int, x: float = 0.0, yaw: float = 0.0,
       norm: float = 1.0) -> Msg:
    translation, rotation = pose_fields(x, yaw, norm)
    return Msg(header=Msg(frame_id=parent, stamp=stamp(ns)), child_frame_id=child,
               transform=Msg(translation=translation, rotation=rotation))


def odometry(ns: int, x: float, yaw: float = 0.0) -> Msg:
    position, orientation = pose_fields(x, yaw)
    return Msg(header=Msg(frame_id="odom", stamp=stamp(ns)), child_frame_id="base_link",
               pose=Msg(pose=Msg(position=position, orientation=orientation)))


def ego_motion(wait_s: float) -> EgoMotion:
    ego = EgoMotion("odom", tolerance_s=0.1, wait_s=wait_s)
    assert ego.add_tf(Msg(transforms=[tf("base_link", "lidar", 0, x=1.0)]), static=True) == []
    ego.add_tf(Msg(transforms=[tf("odom", "base_link", T0, x=0.0)]))
    return ego


def test_stamps_are_integer_nanoseconds():
    assert stamp_ns(stamp(T0 + 123)) == T0 + 123


def test_a_cloud_ahead_of_its_pose_waits_for_it_rather_than_take_the_older_one():
    ego = ego_motion(wait_s=60.0)
    ahead = T0 + SEC // 20  # within the tolerance of the pose at T0
    found = {}
    looker = threading.Thread(target=lambda: found.update(pose=ego.pose("lidar", ahead)))
    looker.start()
    looker.join(timeout=0.5)
    assert looker.is_alive(), "the lookup did not wait for /tf to reach the stamp"
    ego.add_tf(Msg(transforms=[tf("odom", "base_link", T0 + SEC // 10, x=2.0)]))
    looker.join(timeout=60)
    assert not looker.is_alive()
    # Interpolated halfway between the poses at T0 and T0 + 0.1 s, then the mount (x + 1).
    np.testing.assert_allclose(found["pose"].translation, [2.0, 0.0, 0.0], atol=1e-12)
    assert ego.reached("lidar", ahead) and not ego.reached("lidar", T0 + SEC)


def test_without_a_wait_the_nearest_pose_within_the_tolerance_is_taken():
    ego = ego_motion(wait_s=60.0)
    np.testing.assert_allclose(ego.pose("lidar", T0 + SEC // 20, wait=False).translation,
                               [1.0, 0.0, 0.0])
    ego.wait_s = 0.0
    np.testing.assert_allclose(ego.pose("lidar", T0 + SEC // 20).translation, [1.0, 0.0, 0.0])
    with pytest.raises(TransformError, match="after the newest"):
        ego.pose("lidar", T0 + SEC // 5)


def test_odometry_feeds_the_same_buffer_and_bad_rotations_are_refused_with_the_reason():
    ego = ego_motion(wait_s=0.0)
    assert ego.add_odometry(odometry(T0 + SEC, x=5.0, yaw=math.pi / 2)) == []
    pose = ego.pose("lidar", T0 + SEC)
    np.testing.assert_allclose(pose.translation, [5.0, 1.0, 0.0], atol=1e-12)
    assert pose.yaw() == pytest.approx(math.pi / 2)
    refused = ego.add_tf(Msg(transforms=[tf("odom", "base_link", T0 + 2 * SEC, norm=0.0),
                                         tf("odom", "base_link", T0 + 3 * SEC, x=9.0)]))
    assert len(refused) == 1 and "odom -> base_link" in refused[0] and "rotation" in refused[0]
    np.testing.assert_allclose(ego.pose("lidar", T0 + 3 * SEC).translation, [10.0, 0.0, 0.0])
