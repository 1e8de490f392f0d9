"""Multi-sweep input: every received cloud enters a short history; a frame stacks its cloud with
the sweeps received before it, moved into its frame, time lag appended.

Matches the models' test pipeline (MODEL_SPEC b): rows of the current sweep first (dt = 0), then
the past sweeps newest first, each with xyz moved through the ego motion between the two stamps
and dt = t_current - t_sweep in seconds as the last column. The models saw consecutive sweeps
(nuScenes: 20 Hz), so every cloud the sensor sends enters the history, also those a node slower
than its sensor never runs on: a frame's past sweeps are the clouds received just before it,
however many frames were skipped.
"""
from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from .transforms import Transform, TransformError

MISSING_POLICIES = ("single", "uncompensated")


class PoseSource(Protocol):
    def pose(self, frame: str, stamp: int, wait: bool = True) -> Transform:
        """T_fixed_frame at ``stamp``; raises TransformError when unknown."""


@dataclass(frozen=True)
class Sweep:
    """A received cloud: float32 [N, C] points in its sensor frame, its stamp and frame. ``pose``
    (T_fixed_sensor) when known on arrival (the simulator); else it is looked up when stacked."""

    points: np.ndarray
    stamp_ns: int
    frame_id: str = ""
    pose: Transform | None = None


@dataclass(frozen=True)
class SweepWindow:
    """What one frame stacks: a cloud and the sweeps received before it, newest first."""

    current: Sweep
    past: tuple[Sweep, ...]


@dataclass(frozen=True)
class Accumulated:
    """points: float32 [M, C + 1] (input columns, then dt); stamps_ns: of the clouds stacked,
    current first; ego_motion_missing: a past sweep was skipped or stacked without compensation,
    ego_motion_error: why a pose lookup failed ('' when none did)."""

    points: np.ndarray
    stamps_ns: tuple[int, ...]
    ego_motion_missing: bool
    ego_motion_error: str = ""

    @property
    def sweeps(self) -> int:
        """Clouds stacked, the current one included."""
        return len(self.stamps_ns)

    @property
    def max_lag_s(self) -> float:
        """The oldest stacked sweep's time lag (0 for the current cloud alone)."""
        return (self.stamps_ns[0] - self.stamps_ns[-1]) * 1e-9


class SweepAccumulator:
    """Keeps the last ``num_sweeps`` received clouds; stacks a cloud with them.

    ``receive`` (thread-safe, cheap) enters a cloud into the history and returns its window;
    ``stack`` builds the frame's input, looking up the poses not known on arrival from ``poses``
    (the current cloud's lookup may wait for /tf; None: no ego motion). ``missing_policy`` says
    what to do with a past sweep when a pose is missing (for it or for the current cloud):
    'single' leaves it out, 'uncompensated' stacks it unmoved. Past sweeps with a time lag above
    ``max_age_s`` (if given) are left out: it bounds the stacked sweeps' time span.
    """

    def __init__(self, num_sweeps: int, missing_policy: str = "single",
                 max_age_s: float | None = None, poses: PoseSource | None = None):
        if num_sweeps < 0:
            raise ValueError(f"num_sweeps must be >= 0, got {num_sweeps}")
        if missing_policy not in MISSING_POLICIES:
            raise ValueError(f"missing_policy must be one of {MISSING_POLICIES}, "
                             f"got '{missing_policy}'")
        self.num_sweeps = num_sweeps
        self.missing_policy = missing_policy
        self.max_age_ns = None if max_age_s is None else int(max_age_s * 1e9)
        self.poses = poses
        self._past: deque[Sweep] = deque(maxlen=num_sweeps)
        self._lock = threading.Lock()

    def reset(self) -> None:
        with self._lock:
            self._past.clear()

    def __len__(self) -> int:
        return len(self._past)

    def receive(self, points: np.ndarray, stamp_ns: int, frame_id: str = "",
                pose: Transform | None = None) -> SweepWindow:
        """Enter a cloud ``points`` [N, C >= 3] (float32, its sensor frame) into the history;
        returns it with the sweeps received before it."""
        if points.ndim != 2 or points.shape[1] < 3:
            raise ValueError(f"points must be [N, >=3], got shape {points.shape}")
        sweep = Sweep(points, stamp_ns, frame_id, pose)
        with self._lock:
            newest = self._past[0] if self._past else None
            if newest and (stamp_ns <= newest.stamp_ns
                           or newest.points.shape[1] != points.shape[1]):
                self._past.clear()  # time went back (bag loop) or the cloud layout changed
            window = SweepWindow(sweep, tuple(self._past))
            if self.num_sweeps:
                self._past.appendleft(sweep)
        return window

    def stack(self, window: SweepWindow) -> Accumulated:
        """The window's cloud with its past sweeps moved into its frame, dt appended."""
        points, stamp_ns = window.current.points, window.current.stamp_ns
        used, missing, error = self._select(window)
        out = np.empty((points.shape[0] + sum(s.points.shape[0] for s, _ in used),
                        points.shape[1] + 1), np.float32)
        n = points.shape[0]
        out[:n, :-1] = points
        out[:n, -1] = 0.0
        for sweep, motion in used:
            m = sweep.points.shape[0]
            block = out[n:n + m]
            if motion is None:
                block[:, :-1] = sweep.points
            else:  # moved points written once, the other columns copied around them
                block[:, :3] = motion.apply(sweep.points[:, :3].astype(np.float32, copy=False))
                block[:, 3:-1] = sweep.points[:, 3:]
            block[:, -1] = (stamp_ns - sweep.stamp_ns) * 1e-9
            n += m
        return Accumulated(out, (stamp_ns, *(s.stamp_ns for s, _ in used)), missing, error)

    def add(self, points: np.ndarray, stamp_ns: int, pose: Transform | None) -> Accumulated:
        """Receive and stack at once, for a caller that stacks every cloud with known poses."""
        return self.stack(self.receive(points, stamp_ns, pose=pose))

    def _select(self, window: SweepWindow
                ) -> tuple[list[tuple[Sweep, Transform | None]], bool, str]:
        """Past sweeps to stack, each with its motion into the current frame (None = unmoved),
        whether ego motion was missing, and the first lookup failure."""
        current = window.current
        past = [s for s in window.past
                if self.max_age_ns is None or current.stamp_ns - s.stamp_ns <= self.max_age_ns]
        if not past:
            return [], False, ""
        errors: list[str] = []
        pose = self._pose(current, True, errors)
        current_inv = pose.inverse() if pose is not None else None
        used, missing = [], False
        for sweep in past:
            past_pose = self._pose(sweep, False, errors) if current_inv is not None else None
            if past_pose is None:
                missing = True
                if self.missing_policy == "uncompensated":
                    used.append((sweep, None))
                continue
            used.append((sweep, current_inv @ past_pose))
        return used, missing, errors[0] if errors else ""

    def _pose(self, sweep: Sweep, wait: bool, errors: list[str]) -> Transform | None:
        if sweep.pose is not None or self.poses is None:
            return sweep.pose
        try:
            return self.poses.pose(sweep.frame_id, sweep.stamp_ns, wait)
        except TransformError as exc:
            errors.append(str(exc))
            return None
