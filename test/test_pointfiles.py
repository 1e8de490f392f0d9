"""Point files: .npy, .bin (KITTI / nuScenes) and .pcd (ascii, binary, binary_compressed) into
[N, 5]."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from regnet_pillars_ros.pointfiles import PointFileError, lzf_decompress, read_points

REALDATA = Path(__file__).resolve().parents[1].parent / "shared" / "realdata"
KITTI_BIN = REALDATA / "kitti" / "demo" / "000008.bin"
NUS_BINS = sorted((REALDATA / "nuscenes" / "demo").glob("*.pcd.bin")) if REALDATA.is_dir() else []
COMPOSITE = REALDATA / "composite_10sweeps_lyft_val_poses.npy"

needs_realdata = pytest.mark.skipif(not REALDATA.is_dir(),
                                    reason=f"real point files not found at {REALDATA}")


def nuscenes_frame() -> np.ndarray:
    if not NUS_BINS:
        pytest.skip(f"nuScenes demo frame not found under {REALDATA}")
    return np.fromfile(NUS_BINS[0], dtype=np.float32).reshape(-1, 5)


def write_pcd(path: Path, table: np.ndarray, fmt: str,
              counts: dict[str, int] | None = None) -> Path:
    """Write a structured array as a PCD file; `fmt` is ascii, binary or binary_compressed."""
    counts = counts or {}
    names = table.dtype.names
    kinds = {"f": "F", "u": "U", "i": "I"}
    header = "\n".join([
        "# .PCD v0.7 - Point Cloud Data file format",
        "VERSION 0.7",
        "FIELDS " + " ".join(names),
        "SIZE " + " ".join(str(table.dtype[n].base.itemsize) for n in names),
        "TYPE " + " ".join(kinds[table.dtype[n].base.kind] for n in names),
        "COUNT " + " ".join(str(counts.get(n, 1)) for n in names),
        f"WIDTH {len(table)}",
        "HEIGHT 1",
        "VIEWPOINT 0 0 0 1 0 0 0",
        f"POINTS {len(table)}",
        f"DATA {fmt}",
    ]) + "\n"
    if fmt == "ascii":
        flat = np.column_stack([table[n].reshape(len(table), -1).astype(np.float64) for n in names])
        lines = "\n".join(" ".join(f"{v:.9g}" for v in row) for row in flat)
        body = lines.encode() + b"\n"
    elif fmt == "binary":
        body = table.tobytes()
    else:
        raw = b"".join(np.ascontiguousarray(table[n]).tobytes() for n in names)
        packed = lzf_literals(raw)
        body = np.array([len(packed), len(raw)], "<u4").tobytes() + packed
    path.write_bytes(header.encode() + body)
    return path


def lzf_literals(raw: bytes) -> bytes:
    """A valid LZF stream made of literal runs only (32 bytes at most each)."""
    return b"".join(bytes([len(raw[i:i + 32]) - 1]) + raw[i:i + 32] for i in range(0, len(raw), 32))


def real_table(dtype: list[tuple]) -> np.ndarray:
    """Every 20th point of the nuScenes frame with a per-point time lag, in the given record
    layout."""
    frame = nuscenes_frame()[::20]
    table = np.zeros(len(frame), np.dtype(dtype))
    names = table.dtype.names
    for i, axis in enumerate("xyz"):
        if axis in names:
            table[axis] = frame[:, i]
    if "intensity" in names:
        table["intensity"] = frame[:, 3]
    if "ring" in names:
        table["ring"] = frame[:, 4]
    if "t" in names:
        table["t"] = np.linspace(0.0, 0.45, len(frame))
    return table


@needs_realdata
def test_kitti_bin_dims4_is_x_y_z_intensity_with_zero_dt():
    raw = np.fromfile(KITTI_BIN, dtype=np.float32).reshape(-1, 4)
    points = read_points(KITTI_BIN, dims=4)
    assert points.dtype == np.float32 and points.shape == (17238, 5)
    np.testing.assert_array_equal(points[:, :4], raw)
    assert not points[:, 4].any()


def test_nuscenes_bin_dims5_drops_ring_and_sets_dt_zero():
    raw = nuscenes_frame()
    points = read_points(NUS_BINS[0], dims=5)
    assert points.shape == (34688, 5)
    np.testing.assert_array_equal(points[:, :4], raw[:, :4])
    assert raw[:, 4].any() and not points[:, 4].any()


@needs_realdata
@pytest.mark.parametrize("dims, message", [(5, "not a whole number of points"),
                                           (None, "needs the number"),
                                           (3, ">= 4")])
def test_bin_with_wrong_dims_is_refused(dims, message):
    with pytest.raises(PointFileError, match=message):
        read_points(KITTI_BIN, dims=dims)


@pytest.mark.skipif(not COMPOSITE.is_file(), reason=f"{COMPOSITE} not found")
def test_npy_merged_cloud_is_returned_as_is():
    cloud = np.load(COMPOSITE)
    points = read_points(COMPOSITE)
    np.testing.assert_array_equal(points, cloud)
    assert points[:, 4].max() > 1.0  # the multi-sweep time lags survive


def test_npy_with_four_columns_is_x_y_z_dt(tmp_path):
    cloud = np.random.default_rng(0).normal(size=(50, 4))  # float64 is accepted too
    np.save(tmp_path / "c.npy", cloud)
    points = read_points(tmp_path / "c.npy")
    assert points.dtype == np.float32
    np.testing.assert_allclose(points[:, [0, 1, 2, 4]], cloud, rtol=1e-6)
    assert not points[:, 3].any()


@pytest.mark.parametrize(
    "array, message",
    [
        (np.zeros((10, 3), np.float32), r"expected an array \[N, 4\].*got shape \(10, 3\)"),
        (np.zeros(10, np.float32), "got shape"),
        (np.zeros((10, 5), np.int32), "expected float32 or float64"),
        (np.array([[{"a": 1}]], dtype=object), "not a plain numeric"),
    ],
)
def test_bad_npy_is_refused(tmp_path, array, message):
    np.save(tmp_path / "bad.npy", array, allow_pickle=True)
    with pytest.raises(PointFileError, match=message):
        read_points(tmp_path / "bad.npy")


def test_unknown_extension_and_missing_file(tmp_path):
    (tmp_path / "cloud.ply").write_bytes(b"ply\n")
    with pytest.raises(PointFileError,
                       match=r"unknown extension '.ply', expected .npy, .bin or .pcd"):
        read_points(tmp_path / "cloud.ply")
    with pytest.raises(PointFileError, match="no such file"):
        read_points(tmp_path / "absent.npy")


@pytest.mark.parametrize("fmt", ["ascii", "binary", "binary_compressed"])
def test_pcd_float_fields_round_trip(tmp_path, fmt):
    table = real_table([("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("intensity", "<f4"),
                        ("t", "<f4")])
    points = read_points(write_pcd(tmp_path / f"{fmt}.pcd", table, fmt))
    expected = np.stack([table[n] for n in ("x", "y", "z", "intensity", "t")], axis=1)
    np.testing.assert_array_equal(points, expected)  # %.9g keeps float32 exact in ascii too


@pytest.mark.parametrize("fmt", ["ascii", "binary", "binary_compressed"])
def test_pcd_mixed_sizes_types_and_padding(tmp_path, fmt):
    layout = [("x", "<f4"), ("y", "<f4"), ("z", "<f8"), ("_", "<u1", (3,)), ("intensity", "<u1"),
              ("ring", "<u2"), ("t", "<f8")]
    table = real_table(layout)
    table["_"] = 7
    points = read_points(write_pcd(tmp_path / f"{fmt}.pcd", table, fmt, counts={"_": 3}))
    np.testing.assert_array_equal(points[:, :2], np.stack([table["x"], table["y"]], axis=1))
    np.testing.assert_array_equal(points[:, 2], table["z"].astype(np.float32))
    np.testing.assert_array_equal(points[:, 3], table["intensity"])
    np.testing.assert_allclose(points[:, 4], table["t"], rtol=1e-7)


def test_pcd_without_optional_fields_gives_zero_intensity_and_dt(tmp_path):
    table = real_table([("x", "<f4"), ("y", "<f4"), ("z", "<f4")])
    points = read_points(write_pcd(tmp_path / "xyz.pcd", table, "binary"))
    assert points.shape == (len(table), 5) and not points[:, 3:].any()


def test_pcd_missing_xyz_field_is_refused(tmp_path):
    table = real_table([("x", "<f4"), ("y", "<f4"), ("intensity", "<f4")])
    with pytest.raises(PointFileError, match=r"lack \['z'\]; x, y and z are required"):
        read_points(write_pcd(tmp_path / "noz.pcd", table, "ascii"))


def test_truncated_binary_pcd_is_refused(tmp_path):
    table = real_table([("x", "<f4"), ("y", "<f4"), ("z", "<f4")])
    path = write_pcd(tmp_path / "cut.pcd", table, "binary")
    path.write_bytes(path.read_bytes()[:-5])
    with pytest.raises(PointFileError, match="truncated"):
        read_points(path)


def test_pcd_without_data_line_is_refused(tmp_path):
    (tmp_path / "h.pcd").write_bytes(b"VERSION 0.7\nFIELDS x y z\n")
    with pytest.raises(PointFileError, match="no DATA line"):
        read_points(tmp_path / "h.pcd")


def test_lzf_back_references_including_overlapping_ones():
    # 'abc' literal, then a 7-byte copy from distance 3 (overlapping), then a 9-byte copy from
    # distance 8 with the long-length byte form (length code 7 + extra 0 -> 7 + 2 = 9).
    stream = bytes([2]) + b"abc" + bytes([(5 << 5) | 0, 2]) + bytes([(7 << 5) | 0, 0, 7])
    assert lzf_decompress(stream, 19, Path("mem")) == b"abcabcabca" + b"cabcabcac"
    with pytest.raises(PointFileError, match="corrupt"):
        lzf_decompress(bytes([(1 << 5) | 0, 9]), 3, Path("mem"))
