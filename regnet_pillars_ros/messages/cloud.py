"""sensor_msgs/PointCloud2 <-> numpy by field name, datatype and offset.

Reading duck-types the message (``fields``, ``point_step``, ``row_step``, ``width``, ``height``,
``is_bigendian``, ``data``), so it works on rclpy messages, rosbags messages and plain records.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

# sensor_msgs/PointField datatype constants -> numpy kind and size.
_DATATYPES = {1: "i1", 2: "u1", 3: "i2", 4: "u2", 5: "i4", 6: "u4", 7: "f4", 8: "f8"}
_CODES = {np.dtype(v).str[1:]: k for k, v in _DATATYPES.items()}


class CloudError(ValueError):
    """A PointCloud2 whose layout cannot be read."""


@dataclass(frozen=True)
class Field:
    """The attributes of sensor_msgs/PointField."""

    name: str
    offset: int
    datatype: int
    count: int = 1


def _field_dtype(field: Any, big_endian: bool) -> np.dtype:
    if field.datatype not in _DATATYPES:
        raise CloudError(f"field '{field.name}' has unknown datatype {field.datatype}")
    return np.dtype(_DATATYPES[field.datatype]).newbyteorder(">" if big_endian else "<")


def _point_dtype(msg: Any, names: Sequence[str]) -> np.dtype:
    """Structured dtype of one point holding only ``names``, itemsize = point_step."""
    by_name = {f.name: f for f in msg.fields}
    for name in names:
        if name not in by_name:
            known = ", ".join(f.name for f in msg.fields) or "none"
            raise CloudError(f"cloud has no '{name}' field (fields: {known})")
    formats, offsets = [], []
    for name in names:
        field = by_name[name]
        dtype = _field_dtype(field, msg.is_bigendian)
        if field.offset < 0 or field.offset + dtype.itemsize * max(field.count, 1) > msg.point_step:
            raise CloudError(f"field '{name}' ({dtype.itemsize} bytes at offset {field.offset}) "
                             f"does not fit in point_step {msg.point_step}")
        formats.append(dtype)
        offsets.append(field.offset)
    return np.dtype({"names": list(names), "formats": formats, "offsets": offsets,
                     "itemsize": msg.point_step})


def _check_size(msg: Any, nbytes: int) -> None:
    if msg.width * msg.height == 0 and nbytes:
        raise CloudError(f"cloud of {msg.width}x{msg.height} points carries {nbytes} bytes")
    if msg.width and msg.height and msg.point_step <= 0:
        raise CloudError(f"point_step {msg.point_step} for a cloud of {msg.width}x{msg.height}")
    if msg.row_step < msg.width * msg.point_step:
        raise CloudError(f"row_step {msg.row_step} < width {msg.width} x point_step "
                         f"{msg.point_step}")
    if nbytes != msg.height * msg.row_step:
        raise CloudError(f"cloud data has {nbytes} bytes, height {msg.height} x row_step "
                         f"{msg.row_step} = {msg.height * msg.row_step}")


def read_points(msg: Any, names: Sequence[str] = ("x", "y", "z")) -> np.ndarray:
    """float32 [height * width, len(names)], row-major over an organised cloud.

    A view into ``msg.data`` (no copy) when the fields are consecutive native float32 values
    and rows carry no padding; otherwise one vectorized copy. Raises CloudError.
    """
    point = _point_dtype(msg, names)
    buf = memoryview(msg.data).cast("B")
    _check_size(msg, buf.nbytes)
    n = msg.width * msg.height
    if n == 0:
        return np.zeros((0, len(names)), np.float32)
    first = point.fields[names[0]]
    if (all(point.fields[name][0] == np.dtype("=f4") for name in names)
            and [point.fields[name][1] for name in names]
            == [first[1] + 4 * i for i in range(len(names))]
            and (msg.height == 1 or msg.row_step == msg.width * msg.point_step)):
        return np.ndarray((n, len(names)), np.float32, buffer=buf, offset=first[1],
                          strides=(msg.point_step, 4))
    grid = np.ndarray((msg.height, msg.width), point, buffer=buf,
                      strides=(msg.row_step, msg.point_step))
    out = np.empty((n, len(names)), np.float32)
    for i, name in enumerate(names):
        out[:, i] = grid[name].reshape(-1)
    return out


def pack_points(points: np.ndarray) -> tuple[list[Field], bytes, int]:
    """A structured array (any offsets, byte order, itemsize) -> (fields, data, point_step).

    The structured dtype is the layout: use it to build clouds with padding, float64 or
    big-endian fields. All fields must share one byte order.
    """
    if points.dtype.names is None:
        raise ValueError("pack_points needs a structured array (named fields)")
    fields, orders = [], set()
    for name in points.dtype.names:
        dtype, offset = points.dtype.fields[name][:2]
        if dtype.str[1:] not in _CODES:
            raise ValueError(f"field '{name}' has dtype {dtype}, which PointField cannot express")
        if dtype.itemsize > 1:
            orders.add(dtype.str[0])
        fields.append(Field(name, offset, _CODES[dtype.str[1:]]))
    if len(orders) > 1:
        raise ValueError("all fields of a cloud share one byte order")
    return fields, np.ascontiguousarray(points).tobytes(), points.dtype.itemsize


def xyz_dtype(extra: Sequence[str] = ()) -> np.dtype:
    """float32 x, y, z (+ extra float32 fields), packed: the common LiDAR layout."""
    return np.dtype([(name, "<f4") for name in ("x", "y", "z", *extra)])


def to_msg(header: Any, points: np.ndarray, height: int = 1):
    """sensor_msgs/PointCloud2 from a structured array (see ``pack_points``) or a float32
    [N, 3] array of x, y, z."""
    from sensor_msgs.msg import PointCloud2, PointField

    if points.dtype.names is None:
        points = np.ascontiguousarray(points, np.float32).view(xyz_dtype()).reshape(-1)
    fields, data, point_step = pack_points(points)
    width = points.shape[0] // height if height else 0
    big = any(points.dtype.fields[f.name][0].str[0] == ">" for f in fields)
    return PointCloud2(
        header=header, height=height, width=width,
        fields=[PointField(name=f.name, offset=f.offset, datatype=f.datatype, count=f.count)
                for f in fields],
        is_bigendian=big, point_step=point_step, row_step=point_step * width,
        data=data, is_dense=False)
