"""PointCloud2 layouts read by field name, datatype and offset."""
from types import SimpleNamespace

import numpy as np
import pytest

from regnet_pillars_ros.messages.cloud import CloudError, pack_points, read_points, xyz_dtype

XYZ = np.array([[1.5, -2.0, 0.25], [3.0, 4.0, -1.0], [np.nan, 0.0, 1.0]], np.float32)


def cloud(points: np.ndarray, height: int = 1, row_pad: int = 0, **overrides):
    """A duck-typed PointCloud2 with the layout of the structured array ``points``."""
    fields, data, point_step = pack_points(points)
    width = points.shape[0] // height
    row_step = width * point_step + row_pad
    rows = np.frombuffer(data, np.uint8).reshape(height, width * point_step)
    data = np.pad(rows, ((0, 0), (0, row_pad))).tobytes()
    msg = SimpleNamespace(fields=fields, point_step=point_step, row_step=row_step, width=width,
                          height=height, is_bigendian=points.dtype.fields["x"][0].str[0] == ">",
                          data=data)
    for key, value in overrides.items():
        setattr(msg, key, value)
    return msg


def structured(dtype, xyz=XYZ, **extra) -> np.ndarray:
    arr = np.zeros(xyz.shape[0], dtype)
    for i, name in enumerate("xyz"):
        arr[name] = xyz[:, i]
    for name, values in extra.items():
        arr[name] = values
    return arr


def test_packed_float32_is_a_view_into_the_message_data():
    msg = cloud(structured(xyz_dtype(("intensity",)), intensity=[1, 2, 3]))
    pts = read_points(msg)
    np.testing.assert_array_equal(pts, XYZ)
    assert np.shares_memory(pts, np.frombuffer(msg.data, np.uint8))


@pytest.mark.parametrize("dtype", [
    # Ouster-like: padding after xyz, intensity later, point_step 48.
    np.dtype({"names": ["x", "y", "z", "intensity", "t"], "formats": ["<f4"] * 3 + ["<f4", "<u4"],
              "offsets": [0, 4, 8, 16, 20], "itemsize": 48}),
    # float64 xyz, fields out of order.
    np.dtype({"names": ["z", "x", "y"], "formats": ["<f8"] * 3, "offsets": [16, 0, 8],
              "itemsize": 24}),
    # big-endian float32 with an int16 ring in front.
    np.dtype({"names": ["ring", "x", "y", "z"], "formats": [">u2", ">f4", ">f4", ">f4"],
              "offsets": [0, 2, 6, 10], "itemsize": 14}),
], ids=["padded", "float64", "big-endian"])
def test_layouts_read_by_name_datatype_and_offset(dtype):
    pts = read_points(cloud(structured(dtype)))
    assert pts.dtype == np.float32
    np.testing.assert_array_equal(pts, XYZ)


def test_organised_cloud_with_row_padding_is_read_row_major():
    xyz = np.arange(24, dtype=np.float32).reshape(8, 3)
    msg = cloud(structured(xyz_dtype(), xyz=xyz), height=2, row_pad=6)
    np.testing.assert_array_equal(read_points(msg), xyz)


def test_missing_intensity_is_not_needed_and_missing_z_is_named():
    msg = cloud(structured(xyz_dtype()))
    np.testing.assert_array_equal(read_points(msg), XYZ)
    no_z = np.dtype([("x", "<f4"), ("y", "<f4"), ("intensity", "<f4")])
    arr = np.zeros(2, no_z)
    with pytest.raises(CloudError, match=r"cloud has no 'z' field \(fields: x, y, intensity\)"):
        read_points(cloud(arr))


@pytest.mark.parametrize("overrides, message", [
    ({"point_step": 8}, "does not fit in point_step 8"),
    ({"point_step": 16}, r"row_step 36 < width 3 x point_step 16"),
    ({"width": 5}, r"row_step 36 < width 5"),
    ({"data": b"\0" * 20}, r"cloud data has 20 bytes, height 1 x row_step 36 = 36"),
    ({"width": 0}, r"cloud of 0x1 points carries 36 bytes"),
], ids=["step-too-small", "step-too-big", "width", "short-data", "zero-width-with-data"])
def test_inconsistent_layouts_raise_a_clear_error(overrides, message):
    with pytest.raises(CloudError, match=message):
        read_points(cloud(structured(xyz_dtype()), **overrides))


def test_empty_cloud_gives_zero_rows():
    msg = cloud(np.zeros(0, xyz_dtype()))
    assert read_points(msg).shape == (0, 3)


def test_unknown_datatype_is_named():
    msg = cloud(structured(xyz_dtype()))
    msg.fields[2] = type(msg.fields[2])("z", 8, 42)
    with pytest.raises(CloudError, match="'z' has unknown datatype 42"):
        read_points(msg)


def test_to_msg_round_trips_through_a_real_pointcloud2_and_its_serialization():
    pytest.importorskip("sensor_msgs.msg", reason="ROS 2 messages not installed")
    from rclpy.serialization import deserialize_message, serialize_message
    from sensor_msgs.msg import PointCloud2
    from std_msgs.msg import Header

    from regnet_pillars_ros.messages.cloud import to_msg

    big = np.dtype({"names": ["x", "y", "z"], "formats": [">f8"] * 3, "offsets": [0, 8, 16],
                    "itemsize": 32})
    for points in (XYZ, structured(big)):
        msg = to_msg(Header(frame_id="lidar"), points)
        wire = deserialize_message(serialize_message(msg), PointCloud2)
        assert wire.is_bigendian == (points.dtype.names is not None)
        np.testing.assert_array_equal(read_points(wire), XYZ)
