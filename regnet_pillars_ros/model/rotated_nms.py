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

import numpy as np
import torch
from torch import Tensor

# Pairs per batch on the CPU: the clipping's ~50 elementwise ops then run on tensors of well under
# 1 MB that stay in cache, faster than one batch of 10^5 pairs. GPUs take all pairs at once.
_CPU_PAIR_BATCH = 8192
# Pairs per slice when the sweep expands its runs on the CPU: the ~25 cheap ops of the IoU bound
# per slice favour larger slices than the clipping's.
_CPU_SWEEP_BATCH = 65536
# Up to this many boxes a GPU bounds every pair on N x N matrices instead of sweeping (about 20
# kernel launches and one host synchronisation fewer; float64 matrices of at most 34 MB each).
_DENSE_PAIRS_MAX_BOXES = 2048
# Vectorized rounds of the greedy pass before its sequential remainder (see ``_greedy_keep``).
_GREEDY_ROUNDS = 8


def _paired_intersection(a: Tensor, b: Tensor) -> Tensor:
    """Intersection areas ``[P]`` of the aligned pairs ``a[i]``, ``b[i]`` (float64 ``[P, 5]``).

    In a's frame, scaled per axis by a's half extents, a is the square ``[-1, 1]^2``. Clamping
    every point of b's boundary into that square turns it into the boundary of the intersection
    (plus zero-area back-and-forth runs along the square's edges): clamping is continuous and
    moves no curve point across a point strictly inside the square, so winding numbers there are
    unchanged, and outside it they become 0. This is Sutherland-Hodgman clipping by a's four
    half-planes with each outside run projected onto the clip line instead of cut out, which
    needs no vertex compaction. Clamping is affine between the points where an edge of b crosses
    one of the lines x = +-1, y = +-1, so splitting each edge there and clamping the split points
    gives the exact polygon, and the shoelace formula its area.
    The x and y halves of every step share one tensor, the pairs along its last (contiguous)
    dimension, so that a GPU runs the whole computation in about 40 kernel launches.
    """
    half_a = 0.5 * a[:, 2:4].T  # [2, P]
    angles = torch.stack((a[:, 4], b[:, 4] - a[:, 4]))
    cos, sin = torch.cos(angles), torch.sin(angles)  # [2, P]: a's heading, b's relative to a's
    ca, sa, c, s = cos[0], sin[0], cos[1], sin[1]
    d = (b[:, :2] - a[:, :2]).T
    # b's centre in a's frame, and b's half axes u (along its heading) and v (across it).
    centre = torch.stack((torch.addcmul(ca * d[0], sa, d[1]),
                          torch.addcmul(ca * d[1], sa, d[0], value=-1.0)))
    u = torch.stack((c, s)) * (0.5 * b[:, 2])
    v = torch.stack((-s, c)) * (0.5 * b[:, 3])
    basis = torch.stack((centre, u, v)).div_(half_a)  # [3, 2, P], per axis over a's half extents
    # Counter-clockwise corners centre -u-v, +u-v, +u+v, -u+v, then the edges leaving them:
    # [8, 2, P].
    corners_edges = torch.mm(_corner_edge_matrix(a.device, a.dtype).T,
                             basis.view(3, -1)).view(8, 2, -1)
    x, e = corners_edges[:4], corners_edges[4:]
    # Edge parameters of the crossings with the lines -1 and +1 of each axis, clamped to the edge;
    # nan (edge on a line) and +-inf (edge parallel to it) also become points of the edge, which
    # is harmless: such an edge does not cross that line, so clamping stays affine along it.
    # [2 lines, 4 edges, 2 axes, P]
    t = torch.stack((-1 - x, 1 - x)).div_(e).nan_to_num_(0.0).clamp_(0.0, 1.0)
    # The edge lies in the x slab for t in [x_lo, x_hi] and in the y slab for t in [y_lo, y_hi].
    # Clamping is constant before min(x_lo, y_lo) and after max(x_hi, y_hi) (the edge is then in a
    # corner cell, outside both slabs), so only mid_lo = max(x_lo, y_lo) and
    # mid_hi = min(x_hi, y_hi) are needed as split points. If mid_lo > mid_hi the edge crosses a
    # corner cell between them and both clamp to that corner, so they need no sorting.
    mid_lo, mid_hi = t.amin(dim=0).amax(dim=1), t.amax(dim=0).amin(dim=1)  # [4 edges, P]
    # Boundary points in order: per edge its start corner (t = 0) and the two split points, then
    # the first corner again to close the polygon.
    steps = torch.stack((torch.zeros_like(mid_lo), mid_lo, mid_hi), dim=1)  # [4, 3, P]
    points = torch.addcmul(x.unsqueeze(1), steps.unsqueeze(2), e.unsqueeze(1)).view(12, 2, -1)
    points = torch.cat((points, points[:1])).clamp_(-1.0, 1.0)
    twice_area = (points[:-1, 0] * points[1:, 1] - points[1:, 0] * points[:-1, 1]).sum(dim=0)
    return (twice_area * half_a.prod(dim=0)).mul_(0.5).clamp_(min=0.0)


_CORNER_EDGE_MATRICES: dict[tuple[torch.device, torch.dtype], Tensor] = {}


def _corner_edge_matrix(device: torch.device, dtype: torch.dtype) -> Tensor:
    """``[3, 8]``: rows (centre, u, v) -> the four corners c -+ u -+ v counter-clockwise, then the
    edges from each corner to the next (2u, 2v, -2u, -2v). Made once per device and dtype."""
    key = (device, dtype)
    if key not in _CORNER_EDGE_MATRICES:
        _CORNER_EDGE_MATRICES[key] = torch.tensor([
            [1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0],
            [-1.0, 1.0, 1.0, -1.0, 2.0, 0.0, -2.0, 0.0],
            [-1.0, -1.0, 1.0, 1.0, 0.0, 2.0, 0.0, -2.0],
        ], dtype=dtype, device=device)
    return _CORNER_EDGE_MATRICES[key]


def _paired_iou(a: Tensor, b: Tensor) -> Tensor:
    """IoU ``[P]`` of aligned float64 box pairs; 0 where either box has a non-positive extent."""
    inter = _paired_intersection(a, b)
    area_a, area_b = a[:, 2] * a[:, 3], b[:, 2] * b[:, 3]
    valid = torch.cat((a[:, 2:4], b[:, 2:4]), dim=1).amin(dim=1) > 0
    # Disjoint or edge-touching pairs leave rounding noise (~1e-16 of the areas) instead of 0;
    # snap it to 0 so that a threshold of 0 means "any overlap".
    areas = area_a + area_b
    inter = torch.where(inter > 1e-12 * areas, inter, 0.0)
    inter = torch.minimum(inter, torch.minimum(area_a, area_b))
    union = torch.where(valid, areas - inter, 1.0)  # > 0 where valid
    return torch.where(valid, inter / union, 0.0)


def _indexed_iou(a: Tensor, b: Tensor, i: Tensor, j: Tensor) -> Tensor:
    """IoU ``[P]`` of the pairs ``a[i[k]]``, ``b[j[k]]`` (float64 boxes)."""
    if a.device.type != "cpu" or i.shape[0] <= _CPU_PAIR_BATCH:
        return _paired_iou(a[i], b[j])
    return torch.cat([
        _paired_iou(a[i[k:k + _CPU_PAIR_BATCH]], b[j[k:k + _CPU_PAIR_BATCH]])
        for k in range(0, i.shape[0], _CPU_PAIR_BATCH)
    ])


def _half_spans(boxes: Tensor) -> Tensor:
    """``[N, 2]`` half-widths of each box's axis-aligned bounding box, enlarged so that rounding in
    the pruning tests below can only keep extra pairs (whose exact IoU is then 0), never drop an
    overlapping one."""
    c, s = torch.cos(boxes[:, 4]).abs(), torch.sin(boxes[:, 4]).abs()
    half = 0.5 * (1.0 + 1e-9)
    return torch.stack((boxes[:, 2] * c + boxes[:, 3] * s, boxes[:, 2] * s + boxes[:, 3] * c),
                       dim=1) * half


def _may_overlap(a: Tensor, b: Tensor) -> Tensor:
    """``[N, M]`` mask of the pairs whose bounding boxes overlap; the others have IoU 0."""
    wa, wb = _half_spans(a), _half_spans(b)
    gap = (a[:, None, :2] - b[None, :, :2]).abs_() < wa[:, None] + wb[None, :]
    return gap.all(dim=2)


def _candidate_pairs(boxes: Tensor, groups: Tensor, iou_threshold: float,
                     dense: bool | None = None) -> tuple[Tensor, Tensor]:
    """Index pairs ``i < j`` of ``boxes`` in the same group whose IoU may exceed ``iou_threshold``.

    Each pair is kept when a cheap upper bound of its IoU reaches the threshold: the intersection
    is at most that of the (enlarged) axis-aligned bounding boxes and at most the smaller area.
    The bound errs high by a margin far above rounding, so no pair the exact IoU would keep is
    dropped; for detector output it leaves a few percent of the pairs. ``dense`` bounds every
    pair (the default on GPUs for up to ``_DENSE_PAIRS_MAX_BOXES`` boxes). Otherwise a sweep
    visits only the pairs whose extents overlap along the axis where the centres spread most:
    with the boxes' extents [c - w, c + w] on that axis sorted by their start, the boxes whose
    extent overlaps box k's and starts after it are the contiguous run up to the first start
    > c_k + w_k. Only those runs are expanded into pairs and bounded, slice by slice on the CPU
    so that the runs' pairs never exist all at once.
    Each group's extents are shifted along the sweep axis past the previous group's so that
    groups share no run; the shift only prunes, the group test decides. Adding one shift to both
    ends of every extent in a group is monotone in float64, so two extents that overlap still do
    after rounding (at worst they touch, which the inclusive run end keeps).
    """
    n = boxes.shape[0]
    span = _half_spans(boxes)
    area = boxes[:, 2] * boxes[:, 3]
    spread = boxes[:, :2].amax(dim=0) - boxes[:, :2].amin(dim=0)
    swap = spread[1] > spread[0]  # a tensor, so choosing the axis needs no host synchronisation
    centre, other = torch.where(swap, boxes[:, :2].flip(1), boxes[:, :2]).unbind(1)
    width, other_width = torch.where(swap, span.flip(1), span).unbind(1)
    lo, hi = centre - width, centre + width
    other_lo, other_hi = other - other_width, other + other_width
    # One row per box, so that a pair costs two row gathers (group ids are exact in float64).
    table = torch.stack((lo, hi, other_lo, other_hi, area, groups.to(boxes.dtype)), dim=1)

    def bound_reaches(first: Tensor, second: Tensor) -> Tensor:
        """Mask of the pairs of table rows (broadcast) in one group whose IoU bound reaches the
        threshold."""
        a, b = first.unbind(-1), second.unbind(-1)
        # Overlap of the bounding boxes along each axis (<= 0: apart on that axis).
        along = torch.minimum(a[1], b[1]) - torch.maximum(a[0], b[0])
        across = torch.minimum(a[3], b[3]) - torch.maximum(a[2], b[2])
        inter = torch.minimum(along.clamp_(min=0) * across.clamp_(min=0), torch.minimum(a[4], b[4]))
        bound = inter / (a[4] + b[4] - inter)
        return (across > 0) & (a[5] == b[5]) & (bound >= iou_threshold - 1e-9)

    if dense is None:
        dense = boxes.device.type != "cpu" and n <= _DENSE_PAIRS_MAX_BOXES
    if dense:
        return bound_reaches(table[:, None], table[None]).triu_(diagonal=1).nonzero().unbind(1)
    gap = (hi.amax() - lo.amin()).nan_to_num(nan=0.0, posinf=0.0, neginf=0.0)
    shift = groups * (gap + 1.0)
    start, order = torch.sort(lo + shift)
    stop = torch.searchsorted(start, (hi + shift)[order], right=True)
    rank = torch.arange(n, device=boxes.device)
    counts = (stop - rank - 1).clamp(min=0)
    ends = counts.cumsum(0)
    # On the CPU the runs are expanded in slices of about _CPU_SWEEP_BATCH pairs, elsewhere all at
    # once.
    cuts = [0, n]
    if boxes.device.type == "cpu":
        marks = torch.arange(_CPU_SWEEP_BATCH, max(int(ends[-1]), _CPU_SWEEP_BATCH),
                             _CPU_SWEEP_BATCH)
        cuts[1:1] = torch.searchsorted(ends, marks).tolist()
    pairs = []
    sorted_table = table[order]  # rows and cols below are positions in the sweep's order
    for a, b in zip(cuts[:-1], cuts[1:]):
        rows = torch.repeat_interleave(rank[a:b], counts[a:b])
        cols = (rows + 1 + torch.arange(rows.shape[0], device=boxes.device) + (ends[a] - counts[a])
                - (ends - counts)[rows])
        # one sync for both sides
        close = bound_reaches(sorted_table[rows], sorted_table[cols]).nonzero().squeeze(1)
        pairs.append((rows[close], cols[close]))
    i, j = (order[torch.cat(side)] for side in zip(*pairs))
    return torch.minimum(i, j), torch.maximum(i, j)


def rotated_iou_bev(boxes_a: Tensor, boxes_b: Tensor) -> Tensor:
    """Exact BEV IoU matrix ``[N, M]`` of ``boxes_a [N, 5]`` and ``boxes_b [M, 5]``.

    Computed in float64 and returned in the dtype of ``boxes_a``; boxes with a zero extent give 0.
    """
    a, b = boxes_a.double(), boxes_b.double()
    iou = a.new_zeros(a.shape[0], b.shape[0])
    ia, ib = _may_overlap(a, b).nonzero(as_tuple=True)
    iou[ia, ib] = _indexed_iou(a, b, ia, ib)
    return iou.to(boxes_a.dtype)


def nms_rotated_bev(boxes: Tensor, scores: Tensor, iou_threshold: float,
                    groups: Tensor | None = None) -> Tensor:
    """Greedy rotated NMS; returns the kept indices ``[K]`` (int64) in descending score order.

    Boxes are visited in descending score (stable sort, so ties keep input order); a box is
    suppressed when its IoU with an already kept box of the same group (``groups [N]`` int64, e.g.
    class labels; one group if None) is strictly greater than ``iou_threshold``. Per group the
    result is that of a separate call on the group's boxes (batched NMS in one pass).
    Host synchronisations on a GPU for a threshold >= 0, whatever the number of groups: two
    for up to ``_DENSE_PAIRS_MAX_BOXES`` boxes, three above.
    """
    n = boxes.shape[0]
    if n == 0:
        return torch.zeros(0, dtype=torch.long, device=boxes.device)
    order = torch.sort(scores, descending=True, stable=True).indices
    b = boxes[order].double()
    g = torch.zeros(n, dtype=torch.long, device=boxes.device) if groups is None else groups[order]
    # Exact IoUs only for the pairs that can overlap (all pairs of a group for a negative
    # threshold, which even IoU 0 exceeds), in one batch; i < j are positions in score order.
    if iou_threshold < 0:
        i, j = torch.triu_indices(n, n, offset=1, device=boxes.device)
        same = g[i] == g[j]
        i, j = i[same], j[same]
    else:
        i, j = _candidate_pairs(b, g, iou_threshold)
    over = _indexed_iou(b, b, i, j) > iou_threshold
    # The greedy pass is sequential: it runs on the host over the suppressing pairs, sorted by
    # their higher-scored box. The candidate pairs and their verdicts travel in one
    # device-to-host copy (selecting the suppressing ones on a GPU first would cost a sync).
    rows, cols, suppress = torch.stack((i, j, over.to(i.dtype))).cpu().numpy()
    rows, cols = rows[suppress == 1], cols[suppress == 1]
    by_row = np.argsort(rows, kind="stable")
    return order[torch.from_numpy(_greedy_keep(n, rows[by_row], cols[by_row])).to(boxes.device)]


def _greedy_keep(n: int, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Positions ``[K]`` (int64) that greedy NMS keeps, given its suppressing pairs.

    ``rows[k] < cols[k]`` are visiting positions, sorted by row: box ``cols[k]`` is suppressed if
    box ``rows[k]`` is kept. A box is kept if none of its suppressors is. Vectorized rounds first
    settle whole cluster tops at once: a box whose remaining suppressors are all suppressed is
    kept, and suppresses its pairs' boxes; pairs from suppressed boxes or into them are dropped.
    Each round settles at least the first unsettled box. The pairs left after a few rounds (long
    suppression chains) go through the sequential pass, which visits every row after all of its
    remaining suppressors, so its status is final when its own pairs are visited.
    """
    suppressed = np.zeros(n, dtype=bool)
    for _ in range(_GREEDY_ROUNDS):
        live = ~(suppressed[rows] | suppressed[cols])
        rows, cols = rows[live], cols[live]
        if rows.size == 0:
            break
        threatened = np.zeros(n, dtype=bool)
        threatened[cols] = True
        kept = ~threatened[rows]
        suppressed[cols[kept]] = True
        rows, cols = rows[~kept], cols[~kept]
    flags = bytearray(suppressed.tobytes())
    for row, col in zip(rows.tolist(), cols.tolist()):
        if not flags[row]:
            flags[col] = 1
    return np.flatnonzero(np.frombuffer(flags, dtype=np.uint8) == 0)


def _clustered_boxes(n: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """Detector-like candidates: clusters of ~10 jittered boxes scattered over a 100 m square."""
    clusters = max(1, n // 10)
    centres = (torch.rand(clusters, 2, generator=generator) - 0.5) * 100.0
    sizes = (torch.rand(clusters, 2, generator=generator) * torch.tensor([4.0, 1.5])
             + torch.tensor([0.5, 0.5]))
    member = torch.randint(0, clusters, (n,), generator=generator)
    xy = centres[member] + torch.randn(n, 2, generator=generator) * 0.5
    dxdy = sizes[member] * (1.0 + 0.1 * torch.randn(n, 2, generator=generator)).clamp(min=0.5)
    yaw = (torch.rand(clusters, generator=generator)[member] * 6.3
           + 0.2 * torch.randn(n, generator=generator))
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
        print(f"nms_rotated_bev: {count} candidates, median {ms:.2f} ms "
              f"({torch.get_num_threads()} threads)")
