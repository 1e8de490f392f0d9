"""Exact rotated bird's-eye-view IoU and greedy rotated NMS in plain torch (CPU and CUDA).

Box rows are ``(x, y, dx, dy, yaw)``: centre ``(x, y)``, extent ``dx`` along the heading axis and
``dy`` across it (both >= 0), heading ``yaw`` counter-clockwise from +x. The corners are
``centre + R(yaw) @ (+-dx/2, +-dy/2)``, the footprint mmcv's ``nms_rotated`` uses.

Intersection areas are exact polygon clipping of one rectangle by the other (see
``_paired_intersection``), computed for all candidate pairs at once on fixed-size tensors in
float64, on whatever device the boxes live.
"""
from __future__ import annotations

import time

import torch
from torch import Tensor

# Local rectangle corners in counter-clockwise order, as multiples of the half extents.
_UNIT_CORNERS = ((-1.0, -1.0), (1.0, -1.0), (1.0, 1.0), (-1.0, 1.0))


def bev_box_corners(boxes: Tensor) -> Tensor:
    """Corners ``[N, 4, 2]`` of ``boxes [N, 5]``, counter-clockwise, in the boxes' dtype."""
    x, y, dx, dy, yaw = boxes.unbind(-1)
    unit = boxes.new_tensor(_UNIT_CORNERS)  # [4, 2]
    lx = unit[:, 0] * (0.5 * dx)[:, None]
    ly = unit[:, 1] * (0.5 * dy)[:, None]
    c, s = torch.cos(yaw)[:, None], torch.sin(yaw)[:, None]
    return torch.stack((x[:, None] + c * lx - s * ly, y[:, None] + s * lx + c * ly), dim=-1)


def _roll_up(t: Tensor) -> Tensor:
    """Row i of the result is row i + 1 of ``t``, cyclically."""
    return torch.cat((t[1:], t[:1]))


def _paired_intersection(a: Tensor, b: Tensor) -> Tensor:
    """Intersection areas ``[P]`` of the aligned pairs ``a[i]``, ``b[i]`` (float64 ``[P, 5]``).

    In a's frame a is the box ``[-hx, hx] x [-hy, hy]``. Clamping every point of b's boundary into
    that box turns it into the boundary of the intersection (plus zero-area back-and-forth runs
    along a's edges): clamping is continuous and moves no curve point across a point strictly
    inside a, so winding numbers there are unchanged, and outside a they become 0. This is
    Sutherland-Hodgman clipping by a's four half-planes with each outside run projected onto the
    clip line instead of cut out, which needs no vertex compaction. Clamping is affine between
    the points where an edge of b crosses one of the lines x = +-hx, y = +-hy, so splitting each
    edge there and clamping the split points gives the exact polygon, and the shoelace formula
    its area.
    """
    ca, sa = torch.cos(a[:, 4]), torch.sin(a[:, 4])
    ox, oy = b[:, 0] - a[:, 0], b[:, 1] - a[:, 1]
    rel = torch.stack((ca * ox + sa * oy, ca * oy - sa * ox, b[:, 2], b[:, 3], b[:, 4] - a[:, 4]), dim=1)
    x, y = bev_box_corners(rel).permute(2, 1, 0).contiguous()  # each [4 corners, P]
    hx, hy = 0.5 * a[:, 2], 0.5 * a[:, 3]
    ex, ey = _roll_up(x) - x, _roll_up(y) - y
    # Edge parameters of the crossings with x = -+hx and y = -+hy, clamped to the edge; nan (edge
    # on a line) and +-inf (edge parallel to it) also become points of the edge, which is harmless:
    # such an edge does not cross that line, so clamping stays affine along it.
    tx = (torch.stack((-hx - x, hx - x)) / ex).nan_to_num_(0.0).clamp_(0.0, 1.0)
    ty = (torch.stack((-hy - y, hy - y)) / ey).nan_to_num_(0.0).clamp_(0.0, 1.0)
    # The edge lies in the x slab for t in [x_lo, x_hi] and in the y slab for t in [y_lo, y_hi].
    # Clamping is constant before min(x_lo, y_lo) and after max(x_hi, y_hi) (the edge is then in a
    # corner cell, outside both slabs), so only mid_lo = max(x_lo, y_lo) and mid_hi = min(x_hi, y_hi)
    # are needed as split points. If mid_lo > mid_hi the edge crosses a corner cell between them
    # and both clamp to that corner, so they need no sorting.
    mid_lo = torch.maximum(torch.minimum(tx[0], tx[1]), torch.minimum(ty[0], ty[1]))
    mid_hi = torch.minimum(torch.maximum(tx[0], tx[1]), torch.maximum(ty[0], ty[1]))
    t = torch.stack((torch.zeros_like(mid_lo), mid_lo, mid_hi))
    n = 3 * 4  # [3 points, 4 edges, P] -> edge-major order along the boundary
    px = torch.addcmul(x, t, ex).transpose(0, 1).reshape(n, -1).clamp(min=-hx, max=hx)
    py = torch.addcmul(y, t, ey).transpose(0, 1).reshape(n, -1).clamp(min=-hy, max=hy)
    area = 0.5 * (px * _roll_up(py) - _roll_up(px) * py).sum(dim=0)
    return area.clamp(min=0.0)


def _paired_iou(a: Tensor, b: Tensor) -> Tensor:
    """IoU ``[P]`` of aligned float64 box pairs; 0 where the union is empty."""
    inter = _paired_intersection(a, b)
    area_a, area_b = a[:, 2] * a[:, 3], b[:, 2] * b[:, 3]
    # Disjoint or edge-touching pairs leave rounding noise (~1e-16 of the areas) instead of 0;
    # snap it to 0 so that a threshold of 0 means "any overlap".
    inter = torch.where(inter > 1e-12 * (area_a + area_b), inter, torch.zeros_like(inter))
    inter = torch.minimum(inter, torch.minimum(area_a, area_b))
    union = area_a + area_b - inter
    return torch.where(union > 0, inter / torch.where(union > 0, union, torch.ones_like(union)),
                       torch.zeros_like(union))


def _may_overlap(a: Tensor, b: Tensor) -> Tensor:
    """``[N, M]`` mask of the pairs whose bounding circles may overlap (conservatively).

    The other pairs cannot have an intersection of positive area, so their IoU is exactly 0.
    """
    ra, rb = 0.5 * torch.hypot(a[:, 2], a[:, 3]), 0.5 * torch.hypot(b[:, 2], b[:, 3])
    ones_a, ones_b = torch.ones_like(ra), torch.ones_like(rb)
    # |c_a - c_b|^2 - (r_a + r_b)^2 for all pairs as one matrix product of 5-vectors.
    u = torch.stack((a[:, 0].square() + a[:, 1].square() - ra.square(), ones_a, -2 * a[:, 0], -2 * a[:, 1], -2 * ra), 1)
    v = torch.stack((ones_b, b[:, 0].square() + b[:, 1].square() - rb.square(), b[:, 0], b[:, 1], rb), 1)
    # The product's rounding error is below 1e-14 * scale^2; the slack only adds candidates.
    scale = torch.cat(((a[:, 0].abs() + a[:, 1].abs() + ra), (b[:, 0].abs() + b[:, 1].abs() + rb))).max()
    return (u @ v.T) < 1e-12 * (1.0 + scale.square())


def rotated_iou_bev(boxes_a: Tensor, boxes_b: Tensor) -> Tensor:
    """Exact BEV IoU matrix ``[N, M]`` of ``boxes_a [N, 5]`` and ``boxes_b [M, 5]``.

    Computed in float64 and returned in the dtype of ``boxes_a``; degenerate boxes give 0.
    """
    a, b = boxes_a.double(), boxes_b.double()
    iou = a.new_zeros(a.shape[0], b.shape[0])
    if iou.numel() == 0:
        return iou.to(boxes_a.dtype)
    ia, ib = _may_overlap(a, b).nonzero(as_tuple=True)
    iou[ia, ib] = _paired_iou(a[ia], b[ib])
    return iou.to(boxes_a.dtype)


def nms_rotated_bev(boxes: Tensor, scores: Tensor, iou_threshold: float) -> Tensor:
    """Greedy rotated NMS; returns the kept indices ``[K]`` (int64) in descending score order.

    Boxes are visited in descending score (stable sort, so ties keep input order); a box is
    suppressed when its IoU with an already kept box is strictly greater than ``iou_threshold``.
    """
    n = boxes.shape[0]
    if n == 0:
        return torch.zeros(0, dtype=torch.long, device=boxes.device)
    order = torch.sort(scores, descending=True, stable=True).indices
    b = boxes[order].double()
    # Only pairs (i, j), i < j in score order, can suppress, and only if their circles overlap
    # (a negative threshold is exceeded even by IoU 0). The exact IoU is computed for those pairs
    # alone, in one batch, and only the pairs above the threshold leave the device.
    if iou_threshold < 0:
        cand = torch.ones(n, n, dtype=torch.bool, device=boxes.device)
    else:
        cand = _may_overlap(b, b)
    ii, jj = cand.triu_(diagonal=1).nonzero(as_tuple=True)
    over = _paired_iou(b[ii], b[jj]) > iou_threshold
    # The greedy pass is inherently sequential; it runs in Python over the (few) suppressing
    # pairs. nonzero() yields them sorted by i, and every pair into i comes from a smaller index,
    # so whether i is kept is settled before its own pairs are visited. This costs one
    # device-to-host copy instead of one synchronisation per box.
    suppressed = bytearray(n)
    for i, j in zip(ii[over].tolist(), jj[over].tolist()):
        if not suppressed[i]:
            suppressed[j] = 1
    keep = torch.frombuffer(suppressed, dtype=torch.uint8).to(boxes.device) == 0
    return order[keep]


def _clustered_boxes(n: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """Detector-like candidates: clusters of ~10 jittered boxes scattered over a 100 m square."""
    clusters = max(1, n // 10)
    centres = (torch.rand(clusters, 2, generator=generator) - 0.5) * 100.0
    sizes = torch.rand(clusters, 2, generator=generator) * torch.tensor([4.0, 1.5]) + torch.tensor([0.5, 0.5])
    member = torch.randint(0, clusters, (n,), generator=generator)
    xy = centres[member] + torch.randn(n, 2, generator=generator) * 0.5
    dxdy = sizes[member] * (1.0 + 0.1 * torch.randn(n, 2, generator=generator)).clamp(min=0.5)
    yaw = torch.rand(clusters, generator=generator)[member] * 6.3 + 0.2 * torch.randn(n, generator=generator)
    boxes = torch.cat((xy, dxdy, yaw[:, None]), dim=1).float()
    return boxes, torch.rand(n, generator=generator)


def benchmark(sizes: tuple[int, ...] = (1000, 3000), repeats: int = 15) -> dict[int, float]:
    """Median wall time in ms of ``nms_rotated_bev(threshold 0.2)`` on clustered CPU candidates."""
    gen = torch.Generator().manual_seed(0)
    result = {}
    for n in sizes:
        boxes, scores = _clustered_boxes(n, gen)
        nms_rotated_bev(boxes, scores, 0.2)  # warm-up
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            nms_rotated_bev(boxes, scores, 0.2)
            times.append((time.perf_counter() - start) * 1e3)
        result[n] = sorted(times)[len(times) // 2]
    return result


if __name__ == "__main__":
    for count, ms in benchmark().items():
        print(f"nms_rotated_bev: {count} candidates, median {ms:.2f} ms ({torch.get_num_threads()} threads)")
