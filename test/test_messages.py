"""Detections -> Detection3DArray, LabelInfo, velocity cloud and RViz markers."""
import math

import numpy as np
import pytest

pytest.importorskip("vision_msgs.msg", reason="vision_msgs not generated (scripts/setup_env.sh)")

from std_msgs.msg import Header  # noqa: E402
from visualization_msgs.msg import Marker  # noqa: E402

from regnet_pillars_ros.messages.cloud import read_points  # noqa: E402
from regnet_pillars_ros.messages.detections import (  # noqa: E402
    detection_array,
    detection_boxes,
    label_info,
    velocity_cloud,
)
from regnet_pillars_ros.messages.markers import MarkerOptions, detection_markers  # noqa: E402
from regnet_pillars_ros.model.detections import Detections  # noqa: E402

HEADER = Header(frame_id="lidar_top")
HEADER.stamp.sec, HEADER.stamp.nanosec = 1700000000, 123456789
NAMES = ("car", "pedestrian", "bicycle")


def dets(velocity: bool = True) -> Detections:
    boxes = np.array([[10.0, -2.0, -1.5, 4.5, 1.9, 1.6, math.pi / 3, 5.0, 1.0],
                      [3.0, 4.0, -1.0, 0.7, 0.6, 1.8, -2.0, 0.5, 0.0]], np.float32)
    return Detections(boxes=boxes if velocity else boxes[:, :7],
                      scores=np.array([0.91, 0.42], np.float32),
                      labels=np.array([0, 1]), class_names=NAMES)


def test_detection_array_has_the_input_header_gravity_centre_lwh_and_yaw_quaternion():
    msg = detection_array(dets(), HEADER)
    assert msg.header == HEADER
    first = msg.detections[0]
    assert first.header == HEADER and first.id == ""
    bbox = first.bbox
    assert (bbox.center.position.x, bbox.center.position.y) == pytest.approx((10.0, -2.0))
    assert bbox.center.position.z == pytest.approx(-1.5 + 1.6 / 2)
    assert (bbox.size.x, bbox.size.y, bbox.size.z) == pytest.approx((4.5, 1.9, 1.6))
    q = bbox.center.orientation
    assert (q.x, q.y, q.z, q.w) == pytest.approx((0, 0, math.sin(math.pi / 6),
                                                  math.cos(math.pi / 6)))
    (result,) = first.results
    assert result.hypothesis.class_id == "car"
    assert result.hypothesis.score == pytest.approx(0.91)
    assert result.pose.pose == bbox.center
    assert msg.detections[1].results[0].hypothesis.class_id == "pedestrian"


def test_detection_boxes_read_back_what_detection_array_wrote():
    # float32 boxes; the centre's z goes through z_bottom + h/2 and back (a few float32 ulps).
    np.testing.assert_allclose(detection_boxes(detection_array(dets(), HEADER)),
                               dets().boxes[:, :7], atol=1e-6)
    assert detection_boxes(detection_array(Detections.empty(NAMES, 7), HEADER)).shape == (0, 7)


def test_class_ids_as_indices_decode_through_label_info():
    msg = detection_array(dets(), HEADER, class_id_format="index")
    info = label_info(NAMES, HEADER, 0.3)
    names = {c.class_id: c.class_name for c in info.class_map}
    assert [names[int(d.results[0].hypothesis.class_id)] for d in msg.detections] == \
        ["car", "pedestrian"]
    assert info.threshold == pytest.approx(0.3)


def test_velocity_cloud_matches_detection_order():
    cloud = velocity_cloud(dets(), HEADER)
    assert cloud.header == HEADER
    v = read_points(cloud, ("x", "y", "z", "vx", "vy"))
    np.testing.assert_allclose(v[:, 3:], [[5.0, 1.0], [0.5, 0.0]])
    np.testing.assert_allclose(v[:, 2], [-0.7, -0.1], atol=1e-6)


def test_markers_start_with_deleteall_and_use_namespaces_per_kind_and_class():
    opts = MarkerOptions(colors={"car": (1.0, 0.0, 0.0)})
    markers = detection_markers(dets(), HEADER, opts).markers
    assert markers[0].action == Marker.DELETEALL
    by_ns = {}
    for m in markers[1:]:
        assert m.header == HEADER and m.action == Marker.ADD
        by_ns.setdefault(m.ns, []).append(m)
    assert set(by_ns) == {"boxes/car", "boxes/pedestrian", "labels", "heading", "velocity"}
    car_box = by_ns["boxes/car"][0]
    assert car_box.type == Marker.LINE_LIST and len(car_box.points) == 24
    assert (car_box.color.r, car_box.color.g, car_box.color.b) == (1.0, 0.0, 0.0)
    assert [m.text for m in by_ns["labels"]] == ["car 0.91", "pedestrian 0.42"]
    assert [m.type for m in by_ns["velocity"]] == [Marker.ARROW] * 2
    end = by_ns["velocity"][0].points[1]
    assert (end.x, end.y) == pytest.approx((15.0, -1.0))
    ids = [(m.ns, m.id) for m in markers[1:]]
    assert len(ids) == len(set(ids))


def test_marker_options_hide_labels_and_no_velocity_without_a_velocity_head():
    opts = MarkerOptions(show_labels=False, show_heading=False)
    namespaces = {m.ns for m in detection_markers(dets(velocity=False), HEADER, opts).markers[1:]}
    assert namespaces == {"boxes/car", "boxes/pedestrian"}
    empty = Detections.empty(NAMES, 9)
    assert [m.action for m in detection_markers(empty, HEADER, MarkerOptions()).markers] == \
        [Marker.DELETEALL]
