"""Multi-sweep accumulation: past clouds moved into the current cloud's frame, time lag appended.

Matches the models' test pipeline (MODEL_SPEC b): rows of the current sweep first (dt = 0), then
the past sweeps newest first, each with xyz moved through the ego motion between the two stamps
and dt = t_current - t_sweep in seconds as the last column.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

from .transforms import Transform

MISSING_POLICIES = ("single", "uncompensated")


@dataclass(frozen=True)
class _Sweep:
    points: np.ndarray  # [N, C] float32 in the sensor frame of its own stamp
    stamp_ns: int
    pose: Transform | None  # T_fixed_sensor at stamp_ns, None when ego motion was unknown


@dataclass(frozen=True)
class Accumulated:
    """points: float32 [M, C + 1] (input columns, then dt); sweeps: clouds stacked (current
    included); ego_motion_missing: a past sweep was skipped or stacked without compensation."""

    points: np.ndarray
    sweeps: int
    ego_motion_missing: bool


class SweepAccumulator:
    """Keeps the last ``num_sweeps`` past clouds with their stamps and poses in a fixed frame.

    ``missing_policy`` says what to do with a past sweep when a pose is missing (for it or for
    the current cloud): 'single' leaves it out, 'uncompensated' stacks it unmoved.
    Sweeps older than ``max_age_s`` (if given) are left out.
    """

    def __init__(self, num_sweeps: int, missing_policy: str = "single",
                 max_age_s: float | None = None):
        if num_sweeps < 0:
            raise ValueError(f"num_sweeps must be >= 0, got {num_sweeps}")
        if missing_policy not in MISSING_POLICIES:
            raise ValueError(f"missing_policy must be one of {MISSING_POLICIES}, "
                             f"got '{missing_policy}'")
        self.num_sweeps = num_sweeps
        self.missing_policy = missing_policy
        self.max_age_ns = None if max_age_s is None else int(max_age_s * 1e9)
        self._past: deque[_Sweep] = deque(maxlen=num_sweeps)

    def reset(self) -> None:
        self._past.clear()

    def __len__(self) -> int:
        return len(self._past)

    def add(self, points: np.ndarray, stamp_ns: int, pose: Transform | None) -> Accumulated:
        """Stack ``points`` [N, C >= 3] (float32, current sensor frame) with the kept past
        sweeps, then remember it as the newest past sweep."""
        if points.ndim != 2 or points.shape[1] < 3:
            raise ValueError(f"points must be [N, >=3], got shape {points.shape}")
        if self._past and (stamp_ns <= self._past[0].stamp_ns
                           or self._past[0].points.shape[1] != points.shape[1]):
            self.reset()  # time went back (bag loop) or the cloud layout changed
        used, missing = self._select(stamp_ns, pose)
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
        if self.num_sweeps:
            self._past.appendleft(_Sweep(points, stamp_ns, pose))
        return Accumulated(out, 1 + len(used), missing)

    def _select(self, stamp_ns: int, pose: Transform | None
                ) -> tuple[list[tuple[_Sweep, Transform | None]], bool]:
        """Past sweeps to stack, each with its motion into the current frame (None = unmoved)."""
        used, missing = [], False
        current_inv = pose.inverse() if pose is not None else None
        for sweep in self._past:
            if self.max_age_ns is not None and stamp_ns - sweep.stamp_ns > self.max_age_ns:
                break
            if current_inv is None or sweep.pose is None:
                missing = True
                if self.missing_policy == "uncompensated":
                    used.append((sweep, None))
                continue
            used.append((sweep, current_inv @ sweep.pose))
        return used, missing
