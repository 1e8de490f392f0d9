"""Hard voxelization into pillars with mmcv's `hard_voxelize` semantics, vectorized.

Semantics (spec section c): a point's cell is floor((p - min) / voxel) in float32; points outside
the grid are dropped; pillars are numbered in order of first appearance; a new pillar past
`max_voxels` drops its points; each pillar keeps its first `max_num_points` points in input order.
No Python loops: one dense first-appearance table over the grid and one stable sort.
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
    lo = torch.tensor(point_cloud_range[:3], dtype=torch.float32, device=device)
    hi = torch.tensor(point_cloud_range[3:], dtype=torch.float32, device=device)
    size = torch.tensor(voxel_size, dtype=torch.float32, device=device)
    grid = torch.round((hi - lo) / size).to(torch.long)  # x, y, z cells
    gx, gy, gz = (int(g) for g in grid.tolist())

    cell = torch.floor((points[:, :3].float() - lo) / size).to(torch.long)
    inside = ((cell >= 0) & (cell < grid)).all(dim=1)
    num_cells = gx * gy * gz
    # Points outside the grid go to one extra sentinel cell that never becomes a pillar.
    linear = torch.where(inside, (cell[:, 2] * gy + cell[:, 1]) * gx + cell[:, 0], num_cells)

    # First appearance of every occupied cell, then pillars ranked by it.
    first = torch.full((num_cells + 1,), n, dtype=torch.long, device=device)
    first.scatter_reduce_(0, linear, torch.arange(n, device=device), reduce="amin")
    first[num_cells] = n
    occupied = torch.nonzero(first < n).squeeze(1)
    occupied = occupied[torch.argsort(first[occupied])][:max_voxels]
    num_pillars = occupied.numel()
    rank = torch.full_like(first, max_voxels)  # max_voxels = dropped (outside or overflow)
    rank[occupied] = torch.arange(num_pillars, device=device)

    # A stable sort by pillar keeps input order inside a pillar and puts dropped points last.
    point_rank, index = torch.sort(rank[linear], stable=True)
    counts = torch.bincount(point_rank, minlength=max_voxels + 1)[:num_pillars]
    num_valid = int(counts.sum())
    overflow = int(inside.sum()) - num_valid
    point_rank, index = point_rank[:num_valid], index[:num_valid]
    starts = torch.cumsum(counts, 0) - counts
    slot = torch.arange(num_valid, device=device) - starts[point_rank]
    if num_valid and int(counts.max()) > max_num_points:
        kept = slot < max_num_points
        point_rank, index, slot = point_rank[kept], index[kept], slot[kept]

    coors = torch.stack(
        (occupied // (gx * gy), (occupied // gx) % gy, occupied % gx), dim=1
    )
    return Pillars(
        points=points[index],
        point_pillar=point_rank,
        point_slot=slot,
        source_index=index,
        coors=coors,
        num_points=counts.clamp(max=max_num_points),
        overflow=overflow,
    )
