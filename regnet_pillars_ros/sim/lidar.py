"""A spinning multi-beam LiDAR ray-cast against oriented boxes and a ground plane, in NumPy.

Everything here is in the sensor frame (x forward, y left, z up, origin at the sensor). A sweep is
cast at one instant: the scene is frozen at the sweep's time, so the motion skew of a real sensor
during its 50 ms revolution is not modelled.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..model.boxes import bev_corners

GROUND = -1  # hit index of a ground return
NO_HIT = -2  # hit index of a ray that returned nothing

_PAIR_CHUNK = 1 << 18  # ray-box pairs tested at once (bounds the temporary arrays to a few MB)


@dataclass(frozen=True)
class LidarConfig:
    """Defaults follow nuScenes' Velodyne HDL-32E (LIDAR_TOP): 32 beams from -30.67 to +10.67
    degrees, 20 Hz, about 1080 firings per revolution, mounted 1.84 m above the ground."""

    elevations_deg: tuple[float, ...] = tuple(np.linspace(-30.67, 10.67, 32).tolist())
    azimuth_steps: int = 1080
    rate_hz: float = 20.0
    min_range: float = 0.5
    max_range: float = 70.0
    range_noise: float = 0.02  # standard deviation, m
    dropout: float = 0.07  # probability that a return is lost
    intensity_noise: float = 0.1  # relative standard deviation
    # Sensor pose on the ego vehicle: x, y, z (m) and yaw (rad); the ground is at ego z = 0.
    mount: tuple[float, float, float, float] = (0.94, 0.0, 1.84, 0.0)
    # Reflectivity (0-1) per class name; others use `default_reflectivity`.
    reflectivity: dict[str, float] = field(default_factory=lambda: {
        "car": 0.45, "truck": 0.4, "trailer": 0.4, "bus": 0.45, "construction_vehicle": 0.5,
        "bicycle": 0.3, "motorcycle": 0.35, "pedestrian": 0.2, "traffic_cone": 0.9,
        "barrier": 0.6, "wall": 0.3, "pole": 0.5, "vegetation": 0.15})
    default_reflectivity: float = 0.4
    ground_reflectivity: float = 0.08

    @property
    def num_beams(self) -> int:
        return len(self.elevations_deg)

    def directions(self, azimuth_offset: float = 0.0) -> np.ndarray:
        """Unit ray directions float64 [A * B, 3] in firing order: azimuth-major, beams (rings)
        lowest elevation first within each firing; azimuths counter-clockwise from +x."""
        az = azimuth_offset + np.arange(self.azimuth_steps) * (2 * np.pi / self.azimuth_steps)
        el = np.deg2rad(np.asarray(self.elevations_deg))
        cos_el = np.cos(el)
        return np.stack(np.broadcast_arrays(np.cos(az)[:, None] * cos_el,
                                            np.sin(az)[:, None] * cos_el, np.sin(el)),
                        axis=-1).reshape(-1, 3)


@dataclass(frozen=True)
class RayHits:
    """Per ray: range (m, inf if nothing), what it hit (box index, `GROUND` or `NO_HIT`) and the
    cosine of the incidence angle at the hit."""

    ranges: np.ndarray
    hit: np.ndarray
    cos_incidence: np.ndarray


def cast_rays(directions: np.ndarray, boxes: np.ndarray, ground_z: float | None,
              max_range: float = np.inf) -> RayHits:
    """Cast unit rays [R, 3] from the origin against boxes [M, 7] (x, y, z_bottom, l, w, h, yaw)
    and the plane z = ``ground_z`` (None: no ground); the nearest surface wins.

    Only the rays whose azimuth falls inside a box's angular extent are tested against it (slab
    test in the box frame); this is exact, since a ray outside that extent cannot meet the box.
    Boxes that contain the origin are ignored.
    """
    directions = np.asarray(directions, np.float64)
    boxes = np.asarray(boxes, np.float64).reshape(-1, 7)
    if directions.ndim != 2 or directions.shape[1] != 3:
        raise ValueError(f"directions must be [R, 3], got shape {directions.shape}")
    n = len(directions)
    ranges = np.full(n, np.inf)
    hit = np.full(n, NO_HIT, np.int64)
    cos_incidence = np.zeros(n)
    if ground_z is not None:
        down = directions[:, 2] < 0
        ranges[down] = ground_z / directions[down, 2]
        hit[down] = GROUND
        cos_incidence[down] = -directions[down, 2]
    rays, box_ids = _candidate_pairs(directions, boxes)
    met = []
    for s in range(0, len(rays), _PAIR_CHUNK):
        r, b = rays[s:s + _PAIR_CHUNK], box_ids[s:s + _PAIR_CHUNK]
        t, cos = _slab_hits(directions[r], boxes[b])
        keep = np.isfinite(t)
        met.append((r[keep], b[keep], t[keep], cos[keep]))
    if met:
        rays, box_ids, t, cos = (np.concatenate(column) for column in zip(*met))
        order = np.lexsort((t, rays))  # by ray, nearest first
        rays, box_ids, t, cos = rays[order], box_ids[order], t[order], cos[order]
        first = np.ones(len(rays), bool)
        first[1:] = rays[1:] != rays[:-1]
        closer = first & (t < ranges[rays])
        r = rays[closer]
        ranges[r], hit[r], cos_incidence[r] = t[closer], box_ids[closer], cos[closer]
    far = ranges > max_range
    ranges[far], hit[far], cos_incidence[far] = np.inf, NO_HIT, 0.0
    return RayHits(ranges, hit, cos_incidence)


def _candidate_pairs(directions: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(ray, box) index pairs whose ray azimuth lies in the box's azimuth extent seen from the
    origin."""
    n, m = len(directions), len(boxes)
    if m == 0 or n == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    azimuth = np.arctan2(directions[:, 1], directions[:, 0])
    order = np.argsort(azimuth, kind="stable")
    # Sorted azimuths twice around the circle, so that an interval crossing +-pi is one slice.
    circle = np.concatenate([azimuth[order], azimuth[order] + 2 * np.pi])
    centre = np.arctan2(boxes[:, 1], boxes[:, 0])
    corners = bev_corners(boxes)  # [M, 4, 2]
    offsets = np.arctan2(corners[..., 1], corners[..., 0]) - centre[:, None]
    offsets = (offsets + np.pi) % (2 * np.pi) - np.pi
    lo, hi = offsets.min(axis=1), offsets.max(axis=1)
    # A box around (or too close to) the origin spans every azimuth.
    around = np.hypot(boxes[:, 0], boxes[:, 1]) <= 0.5 * np.hypot(boxes[:, 3], boxes[:, 4])
    lo[around], hi[around] = -np.pi, np.pi
    start = (centre + lo + np.pi) % (2 * np.pi) - np.pi
    stop = start + np.minimum(hi - lo, 2 * np.pi)
    first = np.searchsorted(circle, start - 1e-9, side="left")
    counts = np.minimum(np.searchsorted(circle, stop + 1e-9, side="right") - first, n)
    box_ids = np.repeat(np.arange(m), counts)
    within = np.arange(len(box_ids)) - np.repeat(np.cumsum(counts) - counts, counts)
    rays = order[(np.repeat(first, counts) + within) % n]
    return rays, box_ids


def _slab_hits(directions: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Entry distance (inf on a miss) and incidence cosine of each ray [P, 3] from the origin
    with its box [P, 7] (aligned pairs)."""
    c, s = np.cos(boxes[:, 6]), np.sin(boxes[:, 6])
    half = 0.5 * boxes[:, 3:6]
    cx, cy, cz = boxes[:, 0], boxes[:, 1], boxes[:, 2] + half[:, 2]
    # Origin and direction in the box frame (rotation by -yaw about z).
    origin = np.stack([-(c * cx + s * cy), s * cx - c * cy, -cz], axis=1)
    d = np.stack([c * directions[:, 0] + s * directions[:, 1],
                  -s * directions[:, 0] + c * directions[:, 1], directions[:, 2]], axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        inv = 1.0 / d
        t1 = (-half - origin) * inv
        t2 = (half - origin) * inv
    near = np.fmin(t1, t2)
    enter_axis = np.argmax(np.nan_to_num(near, nan=-np.inf), axis=1)
    t_enter = np.take_along_axis(near, enter_axis[:, None], axis=1)[:, 0]
    t_exit = np.nanmin(np.fmax(t1, t2), axis=1)
    missed = ~(t_enter <= t_exit) | ~(t_enter > 0)
    t_enter[missed] = np.inf
    return t_enter, np.abs(np.take_along_axis(d, enter_axis[:, None], axis=1)[:, 0])


def scan(config: LidarConfig, boxes: np.ndarray, names: tuple[str, ...], ground_z: float,
         rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One revolution against boxes [M, 7] (sensor frame, class ``names``) and the ground at
    ``ground_z`` (sensor frame, e.g. minus the mount height).

    Returns float32 [N, 5] points (x, y, z, intensity 0-255, ring index) in firing order, like a
    nuScenes LIDAR_TOP file, and int64 [N] hit indices (box index or `GROUND`). Range noise,
    dropout, the azimuth phase of the revolution and intensity noise are drawn from ``rng``.
    """
    directions = config.directions(azimuth_offset=rng.uniform(0, 2 * np.pi / config.azimuth_steps))
    hits = cast_rays(directions, boxes, ground_z, config.max_range)
    ranges = hits.ranges + config.range_noise * rng.standard_normal(len(directions))
    keep = (np.isfinite(hits.ranges) & (ranges >= config.min_range) & (ranges <= config.max_range)
            & (rng.random(len(directions)) >= config.dropout))
    reflectivity = np.array([config.reflectivity.get(n, config.default_reflectivity) for n in names]
                            + [config.ground_reflectivity])  # index -1 (GROUND) is the ground
    hit = hits.hit[keep]
    intensity = (255 * reflectivity[hit] * hits.cos_incidence[keep]
                 * (1 + config.intensity_noise * rng.standard_normal(len(hit))))
    points = np.empty((len(hit), 5), np.float32)
    points[:, :3] = directions[keep] * ranges[keep, None]
    points[:, 3] = np.clip(np.round(intensity), 0, 255)
    points[:, 4] = np.nonzero(keep)[0] % config.num_beams
    return points, hit
