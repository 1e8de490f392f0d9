"""RViz markers for detections: DELETEALL first, then per-class box edges, labels, arrows."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from geometry_msgs.msg import Point, Vector3
from std_msgs.msg import ColorRGBA
from visualization_msgs.msg import Marker, MarkerArray

from ..model.boxes import box_corners
from ..model.detections import Detections

# Tableau-like palette: distinct on RViz's dark background, indexed by class.
PALETTE = ((1.0, 0.5, 0.05), (0.12, 0.47, 0.71), (0.17, 0.63, 0.17), (0.84, 0.15, 0.16),
           (0.58, 0.4, 0.74), (0.55, 0.34, 0.29), (0.89, 0.47, 0.76), (0.5, 0.5, 0.5),
           (0.74, 0.74, 0.13), (0.09, 0.75, 0.81))
# Box edges as pairs of `box_corners` indices: bottom ring, top ring, verticals.
_EDGES = np.array([0, 1, 1, 2, 2, 3, 3, 0, 4, 5, 5, 6, 6, 7, 7, 4, 0, 4, 1, 5, 2, 6, 3, 7])


@dataclass
class MarkerOptions:
    show_labels: bool = True
    show_heading: bool = True
    show_velocity: bool = True
    line_width: float = 0.1
    colors: dict[str, tuple[float, float, float]] = field(default_factory=dict)

    def color(self, class_names: tuple[str, ...], label: int) -> ColorRGBA:
        r, g, b = self.colors.get(class_names[label], PALETTE[label % len(PALETTE)])
        return ColorRGBA(r=float(r), g=float(g), b=float(b), a=1.0)


def _points(xyz: np.ndarray) -> list[Point]:
    return [Point(x=float(a), y=float(b), z=float(c)) for a, b, c in xyz]


def _marker(header, ns: str, marker_id: int, kind: int, color: ColorRGBA,
            scale: Vector3) -> Marker:
    m = Marker(header=header, ns=ns, id=marker_id, type=kind, action=Marker.ADD,
               color=color, scale=scale)
    m.pose.orientation.w = 1.0
    return m


def _arrows(dets: Detections, header, ns: str, starts: np.ndarray, ends: np.ndarray,
            opts: MarkerOptions) -> list[Marker]:
    out = []
    for i, (a, b, label) in enumerate(zip(starts, ends, dets.labels)):
        m = _marker(header, ns, i, Marker.ARROW, opts.color(dets.class_names, label),
                    Vector3(x=opts.line_width, y=2 * opts.line_width, z=2 * opts.line_width))
        m.points = _points(np.stack([a, b]))
        out.append(m)
    return out


def detection_markers(dets: Detections, header, opts: MarkerOptions) -> MarkerArray:
    """MarkerArray: DELETEALL, one LINE_LIST per class (``boxes/<class>``), then ``labels``,
    ``heading`` and ``velocity`` markers per box, all with the detections' header."""
    markers = [Marker(header=header, action=Marker.DELETEALL)]
    corners = box_corners(dets.boxes.astype(np.float64))
    for label in np.unique(dets.labels):
        name = dets.class_names[label]
        m = _marker(header, f"boxes/{name}", 0, Marker.LINE_LIST,
                    opts.color(dets.class_names, label), Vector3(x=opts.line_width))
        m.points = _points(corners[dets.labels == label][:, _EDGES].reshape(-1, 3))
        markers.append(m)
    centers = dets.gravity_centers().astype(np.float64)
    if opts.show_labels:
        for i, (c, box, label, score) in enumerate(
                zip(centers, dets.boxes, dets.labels, dets.scores)):
            m = _marker(header, "labels", i, Marker.TEXT_VIEW_FACING,
                        opts.color(dets.class_names, label), Vector3(z=0.6))
            m.pose.position = Point(x=float(c[0]), y=float(c[1]),
                                    z=float(c[2] + box[5] / 2 + 0.5))
            m.text = f"{dets.class_names[label]} {score:.2f}"
            markers.append(m)
    yaw = dets.boxes[:, 6].astype(np.float64)
    if opts.show_heading:
        tips = centers + np.stack([np.cos(yaw), np.sin(yaw), np.zeros_like(yaw)], 1) \
            * dets.boxes[:, 3:4] / 2
        markers += _arrows(dets, header, "heading", centers, tips, opts)
    if opts.show_velocity and dets.has_velocity:
        ends = centers.copy()
        ends[:, :2] += dets.velocities  # where the object will be in one second
        markers += _arrows(dets, header, "velocity", centers, ends, opts)
    return MarkerArray(markers=markers)
