"""Read LiDAR point files (.npy, .bin, .pcd) into the model's merged-cloud layout.

Every reader returns float32 [N, 5] = x, y, z, intensity, dt (dt: time lag in seconds of the
point's sweep behind the key frame; 0 for a single sweep):

- ``.npy`` [N, 5]: already x, y, z, intensity, dt (a merged multi-sweep cloud); [N, 4]: x, y, z, dt
  (intensity set to 0). float32 or float64.
- ``.bin`` raw float32 rows of ``dims`` values (KITTI 4: x, y, z, reflectance; nuScenes/Lyft
  ``.pcd.bin`` 5: x, y, z, intensity, ring): x, y, z, intensity from the first four columns, the
  rest ignored, dt = 0 (one key frame).
- ``.pcd`` (ASCII, binary, binary_compressed): fields x, y, z required; intensity (or i,
  reflectance) and a time field (dt, t, time or timestamp, taken as dt in seconds) optional, 0 if
  absent. Any field sizes and types; fields with COUNT > 1 are skipped over.
"""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np

COLUMNS = ("x", "y", "z", "intensity", "dt")
INTENSITY_FIELDS = ("intensity", "i", "reflectance")
TIME_FIELDS = ("dt", "t", "time", "timestamp")
PCD_TYPES = {"F": "f", "U": "u", "I": "i"}
PCD_HEADER_KEYS = ("VERSION", "FIELDS", "SIZE", "TYPE", "COUNT", "WIDTH", "HEIGHT", "VIEWPOINT",
                   "POINTS", "DATA")


class PointFileError(ValueError):
    """A point file that cannot be read; the message names the file, what was expected and what
    came."""


def read_points(path: str | Path, dims: int | None = None) -> np.ndarray:
    """Read ``path`` into float32 [N, 5] (x, y, z, intensity, dt); ``dims`` is required for
    ``.bin``."""
    path = Path(path)
    if not path.is_file():
        raise PointFileError(f"point file {path}: no such file")
    suffix = path.suffix.lower()
    if suffix == ".npy":
        return read_npy(path)
    if suffix == ".bin":
        return read_bin(path, dims)
    if suffix == ".pcd":
        return read_pcd(path)
    raise PointFileError(
        f"point file {path}: unknown extension {path.suffix!r}, expected .npy, .bin or .pcd"
    )


def merged(xyz: np.ndarray, intensity: np.ndarray | None = None,
           dt: np.ndarray | None = None) -> np.ndarray:
    """Stack columns into float32 [N, 5]; missing intensity or dt become 0."""
    out = np.zeros((xyz.shape[0], len(COLUMNS)), np.float32)
    out[:, :3] = xyz
    if intensity is not None:
        out[:, 3] = intensity
    if dt is not None:
        out[:, 4] = dt
    return out


def read_npy(path: Path) -> np.ndarray:
    try:
        array = np.load(path, allow_pickle=False)
    except ValueError as exc:
        raise PointFileError(f"point file {path}: not a plain numeric .npy array ({exc})") from exc
    if array.ndim != 2 or array.shape[1] not in (4, 5):
        raise PointFileError(
            f"point file {path}: expected an array [N, 4] (x, y, z, dt) "
            "or [N, 5] (x, y, z, intensity, dt), "
            f"got shape {array.shape}"
        )
    if array.dtype not in (np.float32, np.float64):
        raise PointFileError(
            f"point file {path}: expected float32 or float64 values, got {array.dtype}"
        )
    if array.shape[1] == 4:
        return merged(array[:, :3], dt=array[:, 3])
    return array.astype(np.float32, copy=False)


def read_bin(path: Path, dims: int | None) -> np.ndarray:
    if dims is None:
        raise PointFileError(
            f"point file {path}: a .bin file needs the number of float32 values per point "
            "(dims / --dims: 4 for KITTI, 5 for nuScenes and Lyft)"
        )
    if dims < 4:
        raise PointFileError(
            f"point file {path}: dims must be >= 4 (x, y, z, intensity, ...), got {dims}"
        )
    size = path.stat().st_size
    if size % (4 * dims):
        raise PointFileError(
            f"point file {path}: {size} bytes is not a whole number of points "
            f"of {dims} float32 values "
            f"({4 * dims} bytes each); is dims right (4 for KITTI, 5 for nuScenes and Lyft)?"
        )
    rows = np.fromfile(path, dtype="<f4").reshape(-1, dims)
    return merged(rows[:, :3], intensity=rows[:, 3])


def read_pcd(path: Path) -> np.ndarray:
    raw = path.read_bytes()
    header, body = parse_pcd_header(raw, path)
    fields = header["FIELDS"]
    count = header.get("COUNT", ["1"] * len(fields))
    for key in ("SIZE", "TYPE"):
        if key not in header:
            raise PointFileError(f"point file {path}: PCD header lacks {key}")
    if not len(fields) == len(header["SIZE"]) == len(header["TYPE"]) == len(count):
        raise PointFileError(
            f"point file {path}: PCD header has {len(fields)} FIELDS "
            f"but {len(header['SIZE'])} SIZE, "
            f"{len(header['TYPE'])} TYPE and {len(count)} COUNT entries"
        )
    dtype = pcd_dtype(path, fields, header["SIZE"], header["TYPE"], count)
    num_points = pcd_point_count(path, header)
    data = header["DATA"][0].lower()
    if data == "ascii":
        table = pcd_ascii(path, body, dtype, num_points)
    elif data == "binary":
        table = pcd_binary(path, body, dtype, num_points)
    elif data == "binary_compressed":
        table = pcd_binary_compressed(path, body, dtype, num_points)
    else:
        raise PointFileError(
            f"point file {path}: PCD DATA must be ascii, binary or binary_compressed, got {data!r}"
        )
    return pcd_columns(path, table)


def parse_pcd_header(raw: bytes, path: Path) -> tuple[dict[str, list[str]], bytes]:
    """Header entries (key -> values) and the bytes after the DATA line."""
    header: dict[str, list[str]] = {}
    pos = 0
    while pos < len(raw):
        end = raw.find(b"\n", pos)
        end = len(raw) if end < 0 else end
        line = raw[pos:end].decode("ascii", errors="replace").strip()
        pos = end + 1
        if not line or line.startswith("#"):
            continue
        key, *values = line.split()
        if key.upper() not in PCD_HEADER_KEYS:
            raise PointFileError(f"point file {path}: unexpected PCD header line {line[:60]!r}")
        header[key.upper()] = values
        if key.upper() == "DATA":
            if not values:
                raise PointFileError(f"point file {path}: PCD DATA line names no format")
            return header, raw[pos:]
    raise PointFileError(f"point file {path}: PCD header has no DATA line (not a PCD file?)")


def pcd_dtype(path: Path, fields: list[str], sizes: list[str], types: list[str],
              counts: list[str]) -> np.dtype:
    """Little-endian structured dtype of one PCD record (COUNT > 1 becomes a sub-array)."""
    parts = []
    for index, (name, size, kind, count) in enumerate(zip(fields, sizes, types, counts)):
        if kind.upper() not in PCD_TYPES or size not in ("1", "2", "4", "8"):
            raise PointFileError(
                f"point file {path}: PCD field {name!r} has unsupported TYPE {kind} / SIZE {size}"
            )
        base = f"<{PCD_TYPES[kind.upper()]}{size}"
        # Repeated names (e.g. '_' padding) must stay distinct in a structured dtype.
        parts.append((f"{index}:{name}", base) if int(count) == 1
                     else (f"{index}:{name}", base, (int(count),)))
    return np.dtype(parts)


def pcd_point_count(path: Path, header: dict[str, list[str]]) -> int:
    if "POINTS" in header:
        return int(header["POINTS"][0])
    if "WIDTH" in header and "HEIGHT" in header:
        return int(header["WIDTH"][0]) * int(header["HEIGHT"][0])
    raise PointFileError(f"point file {path}: PCD header gives neither POINTS nor WIDTH and HEIGHT")


def pcd_ascii(path: Path, body: bytes, dtype: np.dtype, num_points: int) -> np.ndarray:
    width = sum(int(np.prod(dtype[name].shape, dtype=int)) for name in dtype.names)
    try:
        values = (np.loadtxt(io.BytesIO(body), dtype=np.float64, ndmin=2) if num_points
                  else np.zeros((0, width)))
    except ValueError as exc:
        raise PointFileError(
            f"point file {path}: PCD ascii data is not a table of numbers ({exc})"
        ) from exc
    if values.shape != (num_points, width):
        raise PointFileError(
            f"point file {path}: PCD ascii data is a {values.shape[0]} x {values.shape[1]} table, "
            f"expected {num_points} points x {width} values"
        )
    table = np.zeros(num_points, dtype)
    column = 0
    for name in dtype.names:
        n = int(np.prod(dtype[name].shape, dtype=int))
        table[name] = values[:, column:column + n].reshape((num_points, *dtype[name].shape))
        column += n
    return table


def pcd_binary(path: Path, body: bytes, dtype: np.dtype, num_points: int) -> np.ndarray:
    needed = num_points * dtype.itemsize
    if len(body) < needed:
        raise PointFileError(
            f"point file {path}: PCD binary data has {len(body)} bytes, expected {needed} "
            f"({num_points} points x {dtype.itemsize} bytes); the file is truncated"
        )
    return np.frombuffer(body, dtype, count=num_points)


def pcd_binary_compressed(path: Path, body: bytes, dtype: np.dtype, num_points: int) -> np.ndarray:
    """LZF-compressed, stored field by field (all x, then all y, ...)."""
    if len(body) < 8:
        raise PointFileError(
            f"point file {path}: PCD binary_compressed data is truncated (no size words)"
        )
    compressed_size, raw_size = np.frombuffer(body[:8], "<u4")
    if raw_size != num_points * dtype.itemsize:
        raise PointFileError(
            f"point file {path}: PCD binary_compressed says {raw_size} bytes uncompressed, "
            f"expected {num_points} points x {dtype.itemsize} bytes"
        )
    raw = lzf_decompress(body[8:8 + int(compressed_size)], int(raw_size), path)
    table = np.zeros(num_points, dtype)
    offset = 0
    for name in dtype.names:
        field = dtype[name]
        nbytes = num_points * field.itemsize
        table[name] = np.frombuffer(raw, field, count=num_points, offset=offset)
        offset += nbytes
    return table


def lzf_decompress(data: bytes, raw_size: int, path: Path) -> bytes:
    """liblzf's format; loops over tokens (literal runs and back-references), not over points."""
    out = bytearray()
    pos = 0
    try:
        while pos < len(data):
            ctrl = data[pos]
            pos += 1
            if ctrl < 32:  # literal run of ctrl + 1 bytes
                out += data[pos:pos + ctrl + 1]
                pos += ctrl + 1
                continue
            length = ctrl >> 5
            if length == 7:
                length += data[pos]
                pos += 1
            start = len(out) - ((ctrl & 0x1F) << 8) - data[pos] - 1
            pos += 1
            length += 2
            if start < 0:
                raise IndexError("back-reference before the start")
            # Overlapping references repeat the last `distance` bytes.
            distance = len(out) - start
            chunk = bytes(out[start:start + min(length, distance)])
            out += (chunk * (length // len(chunk) + 1))[:length]
    except IndexError as exc:
        raise PointFileError(
            f"point file {path}: PCD binary_compressed data is corrupt ({exc})"
        ) from exc
    if len(out) != raw_size:
        raise PointFileError(
            f"point file {path}: PCD binary_compressed data gave {len(out)} bytes, "
            f"expected {raw_size}"
        )
    return bytes(out)


def pcd_columns(path: Path, table: np.ndarray) -> np.ndarray:
    """Pick x, y, z, intensity and dt by field name from a structured PCD table."""
    by_name = {name.split(":", 1)[1].lower(): name for name in table.dtype.names}
    missing = [axis for axis in ("x", "y", "z") if axis not in by_name]
    if missing:
        raise PointFileError(
            f"point file {path}: PCD fields {sorted(by_name)} lack {missing}; "
            "x, y and z are required"
        )

    def column(name: str) -> np.ndarray:
        if table.dtype[name].shape:
            raise PointFileError(
                f"point file {path}: PCD field {name.split(':', 1)[1]!r} must have COUNT 1"
            )
        return table[name]

    def optional(candidates: tuple[str, ...]) -> np.ndarray | None:
        name = next((by_name[c] for c in candidates if c in by_name), None)
        return None if name is None else column(name)

    xyz = np.stack([column(by_name[axis]) for axis in ("x", "y", "z")], axis=1)
    return merged(xyz, optional(INTENSITY_FIELDS), optional(TIME_FIELDS))
