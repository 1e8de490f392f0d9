"""Hard voxelization into pillars with mmcv's `hard_voxelize` semantics, vectorized.

Semantics (spec section c): a point's cell is floor((p - min) / voxel) in float32; points outside
the grid are dropped; pillars are numbered in order of first appearance; a new pillar past
`max_voxels` drops its points; each pillar keeps its first `max_num_points` points in input order.
No Python loops: one dense first-appearance table over the grid and one stable sort. `voxelize`
returns just the kept points and pillars (two host synchronisations on a GPU); `voxelize_fixed`
returns them padded to sizes that do not depend on the cloud (no synchronisation: what a CUDA
graph can replay).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

# Dropped points of fixed-size inputs are dealt over this many padding pillars: on a GPU,
# scattering them all into one pillar would serialise on that pillar's atomics.
PAD_SPREAD = 256


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


@dataclass(frozen=True)
class VoxelGrid:
    """A point cloud range and its pillar grid as tensors on one device (float32 bounds and cell
    size; cell counts x, y, z). Made once per detector, a frame then creates no tensor from host
    data, which a CUDA graph could not capture."""

    lo: torch.Tensor
    hi: torch.Tensor
    size: torch.Tensor
    cells: torch.Tensor
    spare: torch.Tensor  # (z, y, x) = (0, gy, 0): one row past the grid, a canvas' spare row
    shape: tuple[int, int, int]  # gx, gy, gz on the host

    @classmethod
    def of(cls, point_cloud_range: tuple[float, ...], voxel_size: tuple[float, ...],
           device: torch.device | str = "cpu") -> "VoxelGrid":
        # The grid shape is computed on the host (the same float32 arithmetic as on any device).
        lo, hi, size = (torch.tensor(v, dtype=torch.float32)
                        for v in (point_cloud_range[:3], point_cloud_range[3:], voxel_size))
        cells = torch.round((hi - lo) / size).to(torch.long)
        gx, gy, gz = cells.tolist()
        spare = torch.tensor([0, gy, 0], device=device)
        return cls(lo.to(device), hi.to(device), size.to(device), cells.to(device), spare,
                   (gx, gy, gz))

    @property
    def num_cells(self) -> int:
        gx, gy, gz = self.shape
        return gx * gy * gz

    def cell_index(self, points: torch.Tensor,
                   usable: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Linear cell of each point [N] (`num_cells`, one sentinel cell past the grid, for points
        outside it or not `usable`) and the mask of the points inside."""
        gx, gy, _ = self.shape
        xyz = points[:, :3].float()
        if usable is not None:  # rows that are not usable may hold NaN: give them a harmless cell
            xyz = torch.where(usable[:, None], xyz, self.lo)
        cell = torch.floor((xyz - self.lo) / self.size).to(torch.long)
        inside = ((cell >= 0) & (cell < self.cells)).all(dim=1)
        if usable is not None:
            inside &= usable
        return torch.where(inside, (cell[:, 2] * gy + cell[:, 1]) * gx + cell[:, 0],
                           self.num_cells), inside

    def coors(self, cells: torch.Tensor) -> torch.Tensor:
        """(z, y, x) of linear cells [M] -> [M, 3]."""
        gx, gy, _ = self.shape
        return torch.stack((cells // (gx * gy), (cells // gx) % gy, cells % gx), dim=1)


def _first_appearance(linear: torch.Tensor, num_cells: int) -> torch.Tensor:
    """[num_cells + 1] index of the first point in each cell; n (the point count) where none is."""
    n = linear.shape[0]
    first = torch.full((num_cells + 1,), n, dtype=torch.long, device=linear.device)
    first.scatter_reduce_(0, linear, torch.arange(n, device=linear.device), reduce="amin")
    # the sentinel cell; not `first[num_cells] = n`, a copy from host memory
    first[num_cells:].fill_(n)
    return first


@dataclass
class _Slots:
    """Points sorted by pillar (stable, so input order inside a pillar; dropped points last)."""

    point_rank: torch.Tensor  # [n] pillar of each point in sorted order (num_pillars: dropped)
    index: torch.Tensor  # [n] input row of each sorted point
    counts: torch.Tensor  # [num_pillars + 1] points per pillar (last: dropped)
    starts: torch.Tensor  # [num_pillars + 1] first sorted position of each pillar
    slot: torch.Tensor  # [n] position of each sorted point inside its pillar
    kept: torch.Tensor  # [n] in a pillar and within its first max_num_points


def _slots(linear: torch.Tensor, rank: torch.Tensor, num_pillars: int,
           max_num_points: int) -> _Slots:
    """Sort the points of cells ranked by `rank` (cell -> pillar, num_pillars for dropped cells)."""
    point_rank, index = torch.sort(rank[linear], stable=True)
    counts = torch.zeros(num_pillars + 1, dtype=torch.long, device=linear.device)
    counts.scatter_add_(0, point_rank, torch.ones_like(point_rank))  # bincount would sync on a GPU
    starts = torch.cumsum(counts, 0) - counts
    slot = torch.arange(linear.shape[0], device=linear.device) - starts[point_rank]
    kept = (point_rank < num_pillars) & (slot < max_num_points)
    return _Slots(point_rank, index, counts, starts, slot, kept)


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
    grid = VoxelGrid.of(point_cloud_range, voxel_size, device)
    linear, inside = grid.cell_index(points)

    # Pillars ranked by first appearance (host sync 1: their count).
    first = _first_appearance(linear, grid.num_cells)
    occupied = torch.nonzero(first < n).squeeze(1)
    occupied = occupied[torch.argsort(first[occupied])][:max_voxels]
    num_pillars = occupied.numel()
    rank = torch.full_like(first, num_pillars)  # num_pillars = dropped (outside or overflow)
    rank[occupied] = torch.arange(num_pillars, device=device)
    s = _slots(linear, rank, num_pillars, max_num_points)

    # Host sync 2: points in pillars, points kept, and how many fell past max_voxels.
    num_valid, num_kept, overflow = torch.stack(
        (s.starts[-1], s.kept.sum(), inside.sum() - s.starts[-1])).tolist()
    # no pillar over max_num_points: the kept points lead
    at: slice | torch.Tensor = slice(num_kept)
    if num_kept < num_valid:
        # Stable partition, kept points first: a permutation (dropped points fill the end
        # backwards), so the scatter is deterministic.
        position = torch.arange(n, device=device)
        seen = torch.cumsum(s.kept, 0)
        target = torch.where(s.kept, seen - 1, n - 1 - position + seen)
        at = torch.empty_like(position).scatter_(0, target, position)[:num_kept]
    point_rank, index, slot = s.point_rank[at], s.index[at], s.slot[at]
    return Pillars(
        points=points[index],
        point_pillar=point_rank,
        point_slot=slot,
        source_index=index,
        coors=grid.coors(occupied),
        num_points=s.counts[:num_pillars].clamp(max=max_num_points),
        overflow=overflow,
    )


def voxelize_fixed(
    points: torch.Tensor, usable: torch.Tensor, grid: VoxelGrid, max_num_points: int,
    max_voxels: int
) -> tuple[tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]:
    """`voxelize` of the `usable` rows of `points` [N, C], padded to sizes fixed by N and
    `max_voxels` alone, with no host synchronisation.

    Returns the encoder's inputs (points [N, C], point_pillar [N], coors [M + PAD_SPREAD, 3],
    num_points [M + PAD_SPREAD]) with M = min(max_voxels, cells + 1), and [pillars, overflow] as
    a device tensor. The first `pillars` pillars and their points are those of `voxelize`, in its
    order; every other point is a zero row in one of the last PAD_SPREAD pillars, and every other
    pillar holds one point's worth and sits at (0, ny, 0), which
    `scatter_to_canvas(..., spare_row=True)` writes to a spare row past the canvas.
    """
    device = points.device
    n = points.shape[0]
    linear, inside = grid.cell_index(points, usable)
    # Cells sorted by first appearance put the occupied ones first, in pillar order.
    first_sorted, by_first = torch.sort(_first_appearance(linear, grid.num_cells))
    occupied, valid = by_first[:max_voxels], first_sorted[:max_voxels] < n
    m = occupied.shape[0]
    rank = torch.full((grid.num_cells + 1,), m, dtype=torch.long, device=device)
    rank[occupied] = torch.where(valid, torch.arange(m, device=device), m)
    s = _slots(linear, rank, m, max_num_points)

    padding = m + torch.arange(n, device=device) % PAD_SPREAD
    point_pillar = torch.where(s.kept, s.point_rank, padding)
    kept_points = torch.where(s.kept[:, None], points[s.index], 0.0)
    coors = torch.cat((torch.where(valid[:, None], grid.coors(occupied), grid.spare),
                       grid.spare.expand(PAD_SPREAD, 3)))
    num_points = torch.cat((torch.where(valid, s.counts[:m].clamp(max=max_num_points), 1),
                            torch.ones(PAD_SPREAD, dtype=torch.long, device=device)))
    counts = torch.stack((valid.sum(), inside.sum() - s.starts[m]))
    return (kept_points, point_pillar, coors, num_points), counts
