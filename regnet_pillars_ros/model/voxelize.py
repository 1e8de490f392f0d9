"""Hard voxelization into pillars with mmcv's `hard_voxelize` semantics, vectorized.

Semantics (spec section c): a point's cell is floor((p - min) / voxel) in float32; points outside
the grid are dropped; pillars are numbered in order of first appearance; a new pillar past
`max_voxels` drops its points; each pillar keeps its first `max_num_points` points in input order.
No Python loops: one dense first-appearance table over the grid and one stable sort; two host
synchronisations on a GPU.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Pillars:
    """Pillars of one cloud, stored sparsely (only the points that were kept).

    points: [P, C] kept points, grouped by pillar, in input order inside a pillar.
    point_pillar: [P] long, the pillar row of each kept point.
    point_slot: [P] long, the slot of each kept point inside its pillar (< max_num_points).
    source_index: [P] long, row of each kept point in the voxelizer's input.
    coors: [M, 3] long, (z, y, x) cell of each pillar, in order of first appearance.
    num_points: [M] long, points kept per pillar.
    overflow: number of points dropped because `max_voxels` was reached.
    """

    points: torch.Tensor
    point_pillar: torch.Tensor
    point_slot: torch.Tensor
    source_index: torch.Tensor
    coors: torch.Tensor
    num_points: torch.Tensor
    overflow: int

    @property
    def num_pillars(self) -> int:
        return int(self.coors.shape[0])

    def network_inputs(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(points, point_pillar, coors, num_points): what the pillar encoder consumes."""
        return self.points, self.point_pillar, self.coors, self.num_points

    def dense(self, max_num_points: int) -> torch.Tensor:
        """mmcv's padded layout [M, max_num_points, C], zeros in unused slots."""
        out = self.points.new_zeros((self.num_pillars, max_num_points, self.points.shape[1]))
        out[self.point_pillar, self.point_slot] = self.points
        return out


def voxelize(
    points: torch.Tensor,
    point_cloud_range: tuple[float, ...],
    voxel_size: tuple[float, ...],
    max_num_points: int,
    max_voxels: int,
) -> Pillars:
    """Group `points` [N, C] (x, y, z first) into pillars; works on CPU and CUDA tensors."""
    device = points.device
    n = points.shape[0]
    # Grid shape on the host (the same float32 arithmetic as on any device), so it costs no sync.
    lo, hi, size = (torch.tensor(v, dtype=torch.float32) for v in (point_cloud_range[:3], point_cloud_range[3:], voxel_size))
    grid = torch.round((hi - lo) / size).to(torch.long)  # x, y, z cells
    gx, gy, gz = grid.tolist()
    lo, size, grid = lo.to(device), size.to(device), grid.to(device)

    cell = torch.floor((points[:, :3].float() - lo) / size).to(torch.long)
    inside = ((cell >= 0) & (cell < grid)).all(dim=1)
    num_cells = gx * gy * gz
    # Points outside the grid go to one extra sentinel cell that never becomes a pillar.
    linear = torch.where(inside, (cell[:, 2] * gy + cell[:, 1]) * gx + cell[:, 0], num_cells)

    # First appearance of every occupied cell, then pillars ranked by it (host sync 1: their count).
    first = torch.full((num_cells + 1,), n, dtype=torch.long, device=device)
    first.scatter_reduce_(0, linear, torch.arange(n, device=device), reduce="amin")
    first[num_cells] = n
    occupied = torch.nonzero(first < n).squeeze(1)
    occupied = occupied[torch.argsort(first[occupied])][:max_voxels]
    num_pillars = occupied.numel()
    rank = torch.full_like(first, num_pillars)  # num_pillars = dropped (outside or overflow)
    rank[occupied] = torch.arange(num_pillars, device=device)

    # A stable sort by pillar keeps input order inside a pillar and puts dropped points last;
    # pillar r starts at starts[r] in that order (starts[num_pillars]: the dropped points).
    point_rank, index = torch.sort(rank[linear], stable=True)
    counts = torch.zeros(num_pillars + 1, dtype=torch.long, device=device)
    counts.scatter_add_(0, point_rank, torch.ones_like(point_rank))  # bincount would sync on a GPU
    starts = torch.cumsum(counts, 0) - counts
    position = torch.arange(n, device=device)
    slot = position - starts[point_rank]
    kept = (point_rank < num_pillars) & (slot < max_num_points)
    # Host sync 2: points in pillars, points kept, and how many fell past max_voxels.
    num_valid, num_kept, overflow = torch.stack((starts[-1], kept.sum(), inside.sum() - starts[-1])).tolist()
    at: slice | torch.Tensor = slice(num_kept)  # no pillar over max_num_points: the kept points lead
    if num_kept < num_valid:
        # Stable partition, kept points first: a permutation (dropped points fill the end
        # backwards), so the scatter is deterministic.
        seen = torch.cumsum(kept, 0)
        target = torch.where(kept, seen - 1, n - 1 - position + seen)
        at = torch.empty_like(position).scatter_(0, target, position)[:num_kept]
    point_rank, index, slot = point_rank[at], index[at], slot[at]

    coors = torch.stack(
        (occupied // (gx * gy), (occupied // gx) % gy, occupied % gx), dim=1
    )
    return Pillars(
        points=points[index],
        point_pillar=point_rank,
        point_slot=slot,
        source_index=index,
        coors=coors,
        num_points=counts[:num_pillars].clamp(max=max_num_points),
        overflow=overflow,
    )
