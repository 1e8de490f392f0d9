"""Rigid transforms and a small time-indexed transform tree (a ROS-free subset of tf2).

Stamps are integer nanoseconds. A transform ``T_a_b`` maps points given in frame ``b`` into
frame ``a`` (tf2's ``lookup_transform(target=a, source=b)``).
"""
from __future__ import annotations

import bisect
from dataclasses import dataclass

import numpy as np


class TransformError(LookupError):
    """A transform that cannot be answered (unknown frame, no path, time out of range)."""


class ExtrapolationError(TransformError):
    """The stamp lies outside the buffered history by more than the tolerance."""


@dataclass(frozen=True)
class Transform:
    """Rotation as a unit quaternion (x, y, z, w) and a translation, float64."""

    translation: np.ndarray
    rotation: np.ndarray

    @classmethod
    def identity(cls) -> "Transform":
        return cls(np.zeros(3), np.array([0.0, 0.0, 0.0, 1.0]))

    @classmethod
    def from_xyz_quat(cls, xyz, quat_xyzw) -> "Transform":
        q = np.asarray(quat_xyzw, np.float64)
        norm = np.linalg.norm(q)
        if not np.isfinite(norm) or norm < 1e-9:
            raise ValueError(f"quaternion {tuple(q)} is not a rotation")
        return cls(np.asarray(xyz, np.float64).copy(), q / norm)

    @classmethod
    def from_xyz_yaw(cls, xyz, yaw: float) -> "Transform":
        return cls.from_xyz_quat(xyz, yaw_quaternions(yaw))

    def matrix(self) -> np.ndarray:
        """[4, 4] homogeneous matrix."""
        m = np.eye(4)
        m[:3, :3] = quat_to_matrix(self.rotation)
        m[:3, 3] = self.translation
        return m

    def inverse(self) -> "Transform":
        conj = self.rotation * np.array([-1.0, -1.0, -1.0, 1.0])
        return Transform(-quat_to_matrix(conj) @ self.translation, conj)

    def __matmul__(self, other: "Transform") -> "Transform":
        """Composition: ``(T_a_b @ T_b_c)`` is ``T_a_c``."""
        rot = quat_to_matrix(self.rotation)
        return Transform(rot @ other.translation + self.translation,
                         quat_multiply(self.rotation, other.rotation))

    def apply(self, xyz: np.ndarray) -> np.ndarray:
        """Transform [N, 3] points; keeps the input dtype."""
        m = self.matrix().astype(xyz.dtype, copy=False)
        return xyz @ m[:3, :3].T + m[:3, 3]

    def yaw(self) -> float:
        """Rotation about z of the heading (+x) axis, radians."""
        x, y, z, w = self.rotation
        return float(np.arctan2(2 * (w * z + x * y), 1 - 2 * (y * y + z * z)))


def yaw_quaternions(yaw) -> np.ndarray:
    """Rotations about +z (REP 103) as (x, y, z, w) = (0, 0, sin(yaw/2), cos(yaw/2)): [..., 4]
    for yaw angles [...] (a scalar gives [4])."""
    yaw = np.asarray(yaw, np.float64)
    zeros = np.zeros_like(yaw)
    return np.stack([zeros, zeros, np.sin(yaw / 2), np.cos(yaw / 2)], axis=-1)


def quat_to_matrix(q: np.ndarray) -> np.ndarray:
    x, y, z, w = q
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
    ])


def quat_multiply(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    ax, ay, az, aw = a
    bx, by, bz, bw = b
    return np.array([
        aw * bx + ax * bw + ay * bz - az * by,
        aw * by - ax * bz + ay * bw + az * bx,
        aw * bz + ax * by - ay * bx + az * bw,
        aw * bw - ax * bx - ay * by - az * bz,
    ])


def slerp(q0: np.ndarray, q1: np.ndarray, frac: float) -> np.ndarray:
    """Spherical interpolation along the shorter arc."""
    dot = float(np.dot(q0, q1))
    if dot < 0.0:
        q1, dot = -q1, -dot
    if dot > 0.9995:  # nearly parallel: lerp is exact to rounding and avoids 0/0
        q = q0 + frac * (q1 - q0)
        return q / np.linalg.norm(q)
    theta = np.arccos(dot)
    return (np.sin((1 - frac) * theta) * q0 + np.sin(frac * theta) * q1) / np.sin(theta)


def interpolate(t0: Transform, t1: Transform, frac: float) -> Transform:
    """Linear translation and slerp rotation, ``frac`` in [0, 1]."""
    return Transform(t0.translation + frac * (t1.translation - t0.translation),
                     slerp(t0.rotation, t1.rotation, frac))


class _History:
    """Transforms of one parent->child edge, sorted by stamp, bounded in time and count."""

    def __init__(self, cache_ns: int, max_len: int):
        self.stamps: list[int] = []
        self.values: list[Transform] = []
        self._cache_ns = cache_ns
        self._max_len = max_len

    def insert(self, stamp_ns: int, value: Transform) -> None:
        if self.stamps and stamp_ns < self.stamps[-1] - self._cache_ns:
            # Time jumped far back (bag restarted): the old history describes another run.
            self.stamps.clear()
            self.values.clear()
        i = bisect.bisect_left(self.stamps, stamp_ns)
        if i < len(self.stamps) and self.stamps[i] == stamp_ns:
            self.values[i] = value
            return
        self.stamps.insert(i, stamp_ns)
        self.values.insert(i, value)
        cutoff = self.stamps[-1] - self._cache_ns
        drop = max(bisect.bisect_left(self.stamps, cutoff), len(self.stamps) - self._max_len)
        if drop > 0:
            del self.stamps[:drop], self.values[:drop]

    def at(self, stamp_ns: int, tolerance_ns: int, edge: str) -> Transform:
        if not self.stamps:
            raise TransformError(f"no transform for {edge} yet")
        first, last = self.stamps[0], self.stamps[-1]
        if stamp_ns <= first or stamp_ns >= last:
            nearest, gap = (0, first - stamp_ns) if stamp_ns <= first else (-1, stamp_ns - last)
            if gap > tolerance_ns:
                side = "before the oldest" if stamp_ns < first else "after the newest"
                raise ExtrapolationError(
                    f"{edge}: stamp {stamp_ns * 1e-9:.3f} s is {gap * 1e-9:.3f} s {side} buffered "
                    f"transform (buffer {first * 1e-9:.3f}..{last * 1e-9:.3f} s, "
                    f"tolerance {tolerance_ns * 1e-9:.3f} s)")
            return self.values[nearest]
        i = bisect.bisect_right(self.stamps, stamp_ns)
        s0, s1 = self.stamps[i - 1], self.stamps[i]
        return interpolate(self.values[i - 1], self.values[i], (stamp_ns - s0) / (s1 - s0))


class TransformBuffer:
    """A transform tree (each child has one parent) with a bounded, time-indexed history.

    Dynamic edges are interpolated between samples; a lookup outside an edge's history by more
    than ``tolerance_s`` raises ExtrapolationError. Static edges hold at any time.
    Not thread-safe on its own: `ego_motion.EgoMotion` guards it with a lock.
    """

    def __init__(self, cache_s: float = 10.0, max_len: int = 10_000, tolerance_s: float = 0.0):
        self._cache_ns = int(cache_s * 1e9)
        self._max_len = max_len
        self.tolerance_ns = int(tolerance_s * 1e9)
        self._parent: dict[str, str] = {}
        self._static: dict[str, Transform] = {}
        self._dynamic: dict[str, _History] = {}

    def set_transform(self, parent: str, child: str, stamp_ns: int, value: Transform,
                      static: bool = False) -> None:
        """Store ``T_parent_child`` at ``stamp_ns``; a child given a new parent is re-attached."""
        parent, child = parent.lstrip("/"), child.lstrip("/")
        if parent == child:
            raise ValueError(f"transform from '{child}' to itself")
        if self._parent.get(child) != parent:
            self._static.pop(child, None)
            self._dynamic.pop(child, None)
            self._parent[child] = parent
        if static:
            self._static[child] = value
            self._dynamic.pop(child, None)
        else:
            self._static.pop(child, None)
            self._dynamic.setdefault(child, _History(self._cache_ns, self._max_len)).insert(
                stamp_ns, value)

    def frames(self) -> set[str]:
        return set(self._parent) | set(self._parent.values())

    def _chain_to_root(self, frame: str) -> list[str]:
        chain = [frame]
        while chain[-1] in self._parent:
            chain.append(self._parent[chain[-1]])
            if len(chain) > len(self._parent) + 1:
                raise TransformError(f"transform tree has a loop through '{frame}'")
        return chain

    def _to_ancestor(self, chain: list[str], stamp_ns: int, tolerance_ns: int) -> Transform:
        """T_ancestor_frame for chain = [frame, parent, ..., ancestor]."""
        result = Transform.identity()
        for child, parent in zip(chain, chain[1:]):
            if child in self._static:
                edge = self._static[child]
            else:
                edge = self._dynamic[child].at(stamp_ns, tolerance_ns, f"{parent} -> {child}")
            result = edge @ result
        return result

    def lookup(self, target: str, source: str, stamp_ns: int, exact: bool = False) -> Transform:
        """T_target_source at ``stamp_ns``: maps points in ``source`` into ``target``.

        ``exact`` refuses the tolerance: the stamp must lie within every dynamic edge's history.
        """
        tolerance_ns = 0 if exact else self.tolerance_ns
        target, source = target.lstrip("/"), source.lstrip("/")
        if target == source:
            return Transform.identity()
        for frame in (target, source):
            if frame not in self.frames():
                known = ", ".join(sorted(self.frames())) or "none"
                raise TransformError(f"frame '{frame}' is unknown (known frames: {known})")
        up_source, up_target = self._chain_to_root(source), self._chain_to_root(target)
        common = next((f for f in up_source if f in up_target), None)
        if common is None:
            raise TransformError(f"'{source}' and '{target}' are not connected "
                                 f"(roots '{up_source[-1]}' and '{up_target[-1]}')")
        to_common = self._to_ancestor(up_source[:up_source.index(common) + 1], stamp_ns,
                                      tolerance_ns)
        from_common = self._to_ancestor(up_target[:up_target.index(common) + 1], stamp_ns,
                                        tolerance_ns)
        return from_common.inverse() @ to_common


def transform_boxes(boxes: np.ndarray, transform: Transform) -> np.ndarray:
    """Boxes (x, y, z_bottom, l, w, h, yaw[, vx, vy]) moved into another frame.

    Assumes the two frames share the up axis (rotation about z only, as between LiDAR, base
    and odom frames); the yaw of the transform is added to each box's yaw.
    """
    out = boxes.copy()
    out[:, :3] = transform.apply(boxes[:, :3].astype(np.float64))
    out[:, 6] = np.arctan2(np.sin(boxes[:, 6] + transform.yaw()),
                           np.cos(boxes[:, 6] + transform.yaw()))
    if boxes.shape[1] >= 9:
        rot = quat_to_matrix(transform.rotation)[:2, :2]
        out[:, 7:9] = boxes[:, 7:9] @ rot.T
    return out
