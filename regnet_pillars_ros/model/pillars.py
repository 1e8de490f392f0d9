"""Pillar encoder (mmdet3d `HardVFE`) and the scatter onto the bird's-eye-view canvas.

The encoder works on the points that exist. mmdet3d pads every pillar to `max_num_points`
slots and runs the layers over the padding too; padded slots are zero on input and are not
re-masked, so they reach each max as a per-pillar constant. That constant is computed once per
pillar here, which gives the same result at a fraction of the cost.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .backbones import BN_EPS, BN_MOMENTUM

# (layer, projected point rows, projected padding rows) -> both after BatchNorm and ReLU.
ActivateFn = Callable[["VFELayer", torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def project_rows(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """`x @ weight.T` for rows x [N, K] and weights [C, K] -> [N, C].

    On a CPU with oneDNN it runs as a 1x1 convolution over x seen as a channels-last image one
    pixel high: oneDNN runs these tall, thin products (K = 10 or 64, C = 64, a row per point)
    faster than the BLAS matrix product (the same floats here), and the output is the [N, C] rows
    in place. Elsewhere, and in an ONNX export, it is the matrix product."""
    n, k = x.shape
    uses_onednn = torch.backends.mkldnn.is_available() and torch.backends.mkldnn.enabled
    if x.device.type != "cpu" or n == 0 or not uses_onednn or torch.onnx.is_in_onnx_export():
        return x @ weight.t()
    image = x.reshape(1, 1, n, k).permute(0, 3, 1, 2)
    return (F.conv2d(image, weight.reshape(weight.shape[0], k, 1, 1))
            .permute(0, 2, 3, 1).reshape(n, -1))


class VFELayer(nn.Module):
    """Linear (no bias) -> BatchNorm -> ReLU on per-point features; keys `norm.*`,
    `linear.weight`."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        # Registration order matters: checkpoints list norm.* before linear.weight.
        self.norm = nn.BatchNorm1d(out_channels, eps=BN_EPS, momentum=BN_MOMENTUM)
        self.linear = nn.Linear(in_channels, out_channels, bias=False)

    def project(self, x: torch.Tensor, pooled: torch.Tensor | None = None,
                index: torch.Tensor | None = None) -> torch.Tensor:
        """linear(x), or linear([x, pooled[index]]) without building that [P, C_in] concatenation:
        the pooled half of the weights is applied once per pillar, gathered, and the point half
        accumulated into that fresh tensor in place (no further [P, C] temporaries)."""
        weight = self.linear.weight
        if pooled is None:
            return project_rows(x, weight)
        from_pooled = project_rows(pooled, weight[:, x.shape[1]:])
        if index is not None:
            from_pooled = from_pooled[index]
        return from_pooled.addmm_(x, weight[:, : x.shape[1]].t())

    @property
    def folded(self) -> bool:
        """Whether `fold` has turned the BatchNorm into the weights and a shift."""
        return isinstance(self.norm, nn.Identity)

    def activate(self, projected: torch.Tensor) -> torch.Tensor:
        """BatchNorm and ReLU of projected rows (in place on them once `fold` has run)."""
        if self.folded:
            return projected.add_(self.shift).relu_()
        return torch.relu(self.norm(projected))

    @torch.no_grad()
    def fold(self) -> None:
        """Inference only: the eval-mode BatchNorm becomes a scale in the linear weights and a
        per-channel shift, applied in place with the ReLU."""
        norm = self.norm
        scale = norm.weight / torch.sqrt(norm.running_var + norm.eps)
        self.linear.weight.mul_(scale[:, None])
        self.register_buffer("shift", norm.bias - norm.running_mean * scale)
        self.norm = nn.Identity()


class _RowScatter(torch.autograd.Function):
    """Exported as one ONNX ScatterND with a reduction over whole rows. The exporter's own
    translation of scatter_reduce is a ScatterElements with a [P, C] index behind If nodes, which
    onnxruntime's CPU provider runs far slower than one ScatterND."""

    @staticmethod
    def forward(ctx, out: torch.Tensor, index: torch.Tensor, rows: torch.Tensor,
                reduction: str) -> torch.Tensor:
        return _scatter_rows(out.clone(), index, rows, reduction)

    @staticmethod
    def symbolic(g, out, index, rows, reduction: str):
        axes = g.op("Constant", value_t=torch.tensor([1]))
        return g.op("ScatterND", out, g.op("Unsqueeze", index, axes), rows, reduction_s=reduction)


def _scatter_rows(out: torch.Tensor, index: torch.Tensor, rows: torch.Tensor,
                  reduction: str) -> torch.Tensor:
    reduce = {"add": "sum", "max": "amax"}[reduction]
    return out.scatter_reduce_(0, index.unsqueeze(1).expand_as(rows), rows, reduce=reduce)


def scatter_rows(out: torch.Tensor, index: torch.Tensor, rows: torch.Tensor,
                 reduction: str) -> torch.Tensor:
    """`out[index[k]] = reduction(out[index[k]], rows[k])` for every row k ('add' or 'max'):
    in place in torch, one row-wise ScatterND in an ONNX export."""
    if torch.onnx.is_in_onnx_export():
        return _RowScatter.apply(out, index, rows, reduction)
    return _scatter_rows(out, index, rows, reduction)


def segment_max(values: torch.Tensor, segment: torch.Tensor, num_segments: int) -> torch.Tensor:
    """Max of `values` [P, C] over rows that share `segment` [P] -> [num_segments, C]."""
    return scatter_rows(values.new_full((num_segments, values.shape[1]), float("-inf")), segment,
                        values, "max")


class HardVFE(nn.Module):
    """Pillar feature net with cluster-centre and pillar-centre offsets (10 input channels)."""

    def __init__(
        self,
        feat_channels: tuple[int, ...],
        voxel_size: tuple[float, ...],
        point_cloud_range: tuple[float, ...],
        max_num_points: int,
        in_channels: int = 4,
    ):
        super().__init__()
        channels = [in_channels + 6, *feat_channels]
        layers = []
        for i in range(len(feat_channels)):
            c_in = channels[i] if i == 0 else channels[i] * 2  # earlier layers concat their max
            layers.append(VFELayer(c_in, channels[i + 1]))
        self.vfe_layers = nn.ModuleList(layers)
        self.voxel_size = tuple(float(v) for v in voxel_size)
        self.offset = tuple(v / 2 + lo for v, lo in zip(self.voxel_size, point_cloud_range[:3]))
        # On the module's device, so a frame creates no tensor from host data (a CUDA graph
        # cannot capture that copy); not in the state dict, whose keys are the checkpoints'.
        self.register_buffer("cell_size", torch.tensor(self.voxel_size), persistent=False)
        self.register_buffer("cell_offset", torch.tensor(self.offset), persistent=False)
        self.max_num_points = max_num_points

    def augment(self, points: torch.Tensor, point_pillar: torch.Tensor, coors: torch.Tensor,
                num_points: torch.Tensor) -> torch.Tensor:
        """[P, 10] = x, y, z, dt, offsets to the pillar's point mean, offsets to the pillar
        centre."""
        xyz = points[:, :3]
        sums = scatter_rows(xyz.new_zeros((coors.shape[0], 3)), point_pillar, xyz, "add")
        mean = sums / num_points.to(xyz.dtype).unsqueeze(1)
        # mmdet3d's operation order (coor * size + offset), for float32 exactness.
        cell_xyz = coors.flip(1).to(xyz.dtype)[point_pillar]
        centre = cell_xyz * self.cell_size + self.cell_offset
        return torch.cat([points, xyz - mean[point_pillar], xyz - centre], dim=1)

    def forward(
        self, points: torch.Tensor, point_pillar: torch.Tensor, coors: torch.Tensor,
        num_points: torch.Tensor, activate: ActivateFn | None = None,
    ) -> torch.Tensor:
        """Kept points [P, 4] of M pillars (see `Pillars`) -> pillar features [M, C_out].

        Layers after the first see [own features, pillar max], as in mmdet3d; `VFELayer.project`
        applies them without materialising that concatenation. `activate(layer, point_rows,
        padding_rows)` replaces the plain BatchNorm + ReLU: training passes one whose statistics
        count every padded slot (the rows here hold each pillar's padding once).
        """
        x = self.augment(points, point_pillar, coors, num_points)
        activate_rows = activate or (lambda layer, x, pad: (layer.activate(x), layer.activate(pad)))
        padded = (num_points < self.max_num_points).unsqueeze(1)
        # What a padded (all-zero) slot becomes after each layer: one row per pillar.
        pad = x.new_zeros((coors.shape[0], x.shape[1]))
        pooled = None
        *inner, last = self.vfe_layers
        for layer in inner:
            x, pad = activate_rows(layer, layer.project(x, pooled, point_pillar),
                                   layer.project(pad, pooled))
            pooled = self._pool(x, pad, point_pillar, padded)
        if last.folded and activate is None:
            return self._pool_then_activate(last, x, pad, pooled, point_pillar, padded)
        x, pad = activate_rows(last, last.project(x, pooled, point_pillar),
                               last.project(pad, pooled))
        return self._pool(x, pad, point_pillar, padded)

    @staticmethod
    def _pool_then_activate(layer: VFELayer, x: torch.Tensor, pad: torch.Tensor,
                            pooled: torch.Tensor | None, point_pillar: torch.Tensor,
                            padded: torch.Tensor) -> torch.Tensor:
        """The last layer of a folded encoder, pooled before it is activated. Within a pillar and
        channel, the pooled half of the projection plus the shift is one value b, and adding b
        then ReLU is monotonic (rounding included), so max_k relu(a_k + b) == relu(max_k a_k + b).
        Only the point half of the projection runs per point: no [P, C] gather of the pooled
        half, no activation of every point row."""
        weight = layer.linear.weight[:, : x.shape[1]]
        top = HardVFE._pool(project_rows(x, weight), project_rows(pad, weight), point_pillar,
                            padded)
        if pooled is not None:
            top.addmm_(pooled, layer.linear.weight[:, x.shape[1]:].t())
        return top.add_(layer.shift).relu_()

    @staticmethod
    def _pool(x: torch.Tensor, pad: torch.Tensor, point_pillar: torch.Tensor,
              padded: torch.Tensor) -> torch.Tensor:
        """Max over each pillar's points and, where it has free slots, its padding value."""
        pooled = segment_max(x, point_pillar, pad.shape[0])
        return torch.where(padded, torch.maximum(pooled, pad), pooled)


def scatter_to_canvas(features: torch.Tensor, coors: torch.Tensor, grid_yx: tuple[int, int],
                      spare_row: bool = False) -> torch.Tensor:
    """PointPillarsScatter: features [M, C] at (z, y, x) cells -> canvas [1, C, ny, nx].

    The canvas is stored channels-last: each pillar's features are one contiguous row, written
    in one piece, and the convolutions that follow (channels-last by default) need no copy.
    With `spare_row`, a pillar at (0, ny, 0), one row past the grid, lands on a spare row after
    the canvas: that is where the padding pillars of fixed-size inputs go (`voxelize_fixed`).
    (Not by default: an ONNX runtime would copy the canvas to drop that row.)"""
    ny, nx = grid_yx
    canvas = features.new_zeros((ny * nx + int(spare_row), features.shape[1]))
    canvas[coors[:, 1] * nx + coors[:, 2]] = features
    if spare_row:
        canvas = canvas[: ny * nx]
    return canvas.view(1, ny, nx, features.shape[1]).permute(0, 3, 1, 2)
