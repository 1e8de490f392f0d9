"""Model components against the spec and against plain reference implementations."""
from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from float_bounds import assert_close_float64, assert_within, gamma

from regnet_pillars_ros.model import PRESET_NAMES, get_preset
from regnet_pillars_ros.model.backbones import regnet_stages
from regnet_pillars_ros.model.checkpoint import random_state_dict
from regnet_pillars_ros.model.head import decode_boxes, encode_boxes, level_anchors
from regnet_pillars_ros.model.network import PointPillarsNet
from regnet_pillars_ros.model.pillars import HardVFE, project_rows
from regnet_pillars_ros.model.postprocess import (
    Candidates,
    PostprocessConfig,
    limit_period,
    multiclass_nms,
    physical_bev,
)
from regnet_pillars_ros.model.rotated_nms import nms_rotated_bev
from regnet_pillars_ros.model.voxelize import PAD_SPREAD, VoxelGrid, voxelize, voxelize_fixed

SPEC = Path(__file__).resolve().parents[2] / "shared" / "spec"
needs_spec = pytest.mark.skipif(not SPEC.is_dir(), reason=f"spec not found at {SPEC}")


# -- presets and checkpoint keys --------------------------------------------------------------

def test_nine_presets_in_readme_order():
    assert PRESET_NAMES == (
        "nus-secfpn", "nus-regnetx-400mf-secfpn", "nus-fpn", "nus-regnetx-400mf-fpn",
        "nus-regnetx-1.6gf-fpn",
        "lyft-secfpn", "lyft-regnetx-400mf-secfpn", "lyft-fpn", "lyft-regnetx-400mf-fpn",
    )
    for name in PRESET_NAMES:
        p = get_preset(name)
        assert p.num_classes == (10 if p.dataset == "nuscenes" else 9)
        assert p.has_velocity == (p.dataset == "nuscenes")
        assert (p.checkpoint_filename.endswith(".pth")
                and p.checkpoint_url.endswith(p.checkpoint_filename))


def test_unknown_preset_lists_the_valid_names():
    with pytest.raises(ValueError, match="nus-regnetx-400mf-fpn"):
        get_preset("nus-regnetx-800mf-fpn")


@needs_spec
@pytest.mark.parametrize("name", PRESET_NAMES)
def test_state_dict_keys_and_shapes_equal_spec(name):
    net = PointPillarsNet(get_preset(name))
    ours = [[k, list(v.shape)] for k, v in net.state_dict().items()]
    assert ours == json.loads((SPEC / "checkpoint_keys" / f"{name}.json").read_text())
    assert sum(p.numel() for p in net.parameters()) == get_preset(name).n_parameters


# -- RegNet design space --------------------------------------------------------------------------

# (w0, wa, wm, depth, group_w) -> published stage widths and depths of RegNetX (pycls model zoo).
REGNETX = {
    "200MF": ((24, 36.44, 2.49, 13, 8), (24, 56, 152, 368), (1, 1, 4, 7)),
    "400MF": ((24, 24.48, 2.54, 22, 16), (32, 64, 160, 384), (1, 2, 7, 12)),
    "600MF": ((48, 36.97, 2.24, 16, 24), (48, 96, 240, 528), (1, 3, 5, 7)),
    "800MF": ((56, 35.73, 2.28, 16, 16), (64, 128, 288, 672), (1, 3, 7, 5)),
    "1.6GF": ((80, 34.01, 2.25, 18, 24), (72, 168, 408, 912), (2, 4, 10, 2)),
    "3.2GF": ((88, 26.31, 2.25, 25, 48), (96, 192, 432, 1008), (2, 6, 15, 2)),
    "4.0GF": ((96, 38.65, 2.43, 23, 40), (80, 240, 560, 1360), (2, 5, 14, 2)),
    "6.4GF": ((184, 60.83, 2.07, 17, 56), (168, 392, 784, 1624), (2, 4, 10, 1)),
    "8.0GF": ((80, 49.56, 2.88, 23, 120), (80, 240, 720, 1920), (2, 5, 15, 1)),
    "12GF": ((168, 73.36, 2.37, 19, 112), (224, 448, 896, 2240), (2, 5, 11, 1)),
}


@pytest.mark.parametrize("model", list(REGNETX))
def test_width_generator_reproduces_published_regnetx(model):
    params, widths, depths = REGNETX[model]
    stages = regnet_stages(*params)
    assert stages.widths == widths and stages.depths == depths
    assert all(w % g == 0 for w, g in zip(stages.widths, stages.group_widths))


@pytest.mark.parametrize("name", ["nus-regnetx-400mf-fpn", "nus-regnetx-1.6gf-fpn"])
def test_width_generator_matches_preset_tables(name):
    spec = get_preset(name).backbone
    a = spec.arch
    stages = regnet_stages(a.w0, a.wa, a.wm, a.depth, a.group_w, a.bot_mul)
    assert stages.widths == spec.stage_widths
    assert stages.depths == spec.stage_blocks
    assert stages.groups == spec.groups


def test_width_generator_rejects_nonsense():
    with pytest.raises(ValueError):
        regnet_stages(24, 24.48, 0.9, 22, 16)


# -- voxelization -------------------------------------------------------------------------------

def reference_voxelize(points, pc_range, voxel, max_points, max_voxels):
    """Plain loop over points with mmcv's hard_voxelize rules."""
    lo = np.float32(pc_range[:3])
    size = np.float32(voxel)
    grid = np.round((np.float32(pc_range[3:]) - lo) / size).astype(int)
    ids, coors, slots = {}, [], []
    point_voxel = np.full(len(points), -1)
    point_slot = np.full(len(points), -1)
    for i, p in enumerate(points):
        c = np.floor((p[:3] - lo) / size).astype(int)
        if (c < 0).any() or (c >= grid).any():
            continue
        key = (c[2], c[1], c[0])
        if key not in ids:
            if len(ids) >= max_voxels:
                continue
            ids[key] = len(ids)
            coors.append(key)
            slots.append(0)
        v = ids[key]
        if slots[v] < max_points:
            point_voxel[i], point_slot[i] = v, slots[v]
            slots[v] += 1
    return (np.array(coors, dtype=np.int64).reshape(-1, 3), np.array(slots, dtype=np.int64),
            point_voxel, point_slot)


def random_cloud(rng, n, pc_range, voxel):
    """Points inside, outside, exactly on borders and grid lines, with duplicates and dense
    pillars."""
    lo, hi = np.array(pc_range[:3]), np.array(pc_range[3:])
    pts = rng.uniform(lo - 2, hi + 2, size=(n, 3))
    grid_lines = lo[:2] + voxel[0] * rng.integers(0, int((hi[0] - lo[0]) / voxel[0]) + 1,
                                                  size=(n // 10, 2))
    pts[: n // 10, :2] = grid_lines
    # Exactly on the borders.
    pts[n // 10: n // 10 + 20] = np.where(rng.integers(0, 2, size=(20, 3)) == 1, hi, lo)
    # One pillar with more points than allowed.
    dense = np.repeat(((lo + hi) / 2 + 0.01)[None], 70, axis=0)
    dups = pts[rng.integers(0, n, size=30)]
    dt = rng.uniform(0, 0.5, size=(n + 100, 1))
    return np.concatenate([np.concatenate([pts, dense, dups]), dt], axis=1).astype(np.float32)


@pytest.mark.parametrize("seed,max_points,max_voxels", [(0, 5, 10_000), (1, 3, 40), (2, 64, 1)])
def test_voxelize_matches_plain_loop(seed, max_points, max_voxels):
    pc_range, voxel = (-4.0, -3.0, -2.0, 4.0, 3.0, 2.0), (0.5, 0.5, 4.0)
    pts = random_cloud(np.random.default_rng(seed), 600, pc_range, voxel)
    pillars = voxelize(torch.from_numpy(pts), pc_range, voxel, max_points, max_voxels)
    coors, counts, point_voxel, point_slot = reference_voxelize(pts, pc_range, voxel, max_points,
                                                                max_voxels)
    np.testing.assert_array_equal(pillars.coors.numpy(), coors)
    np.testing.assert_array_equal(pillars.num_points.numpy(), counts)
    got_voxel, got_slot = np.full(len(pts), -1), np.full(len(pts), -1)
    got_voxel[pillars.source_index.numpy()] = pillars.point_pillar.numpy()
    got_slot[pillars.source_index.numpy()] = pillars.point_slot.numpy()
    np.testing.assert_array_equal(got_voxel, point_voxel)
    np.testing.assert_array_equal(got_slot, point_slot)
    assert (pillars.num_points == max_points).any() or max_voxels == 1  # the crowded pillar is kept
    dense = pillars.dense(max_points).numpy()
    kept = point_voxel >= 0
    np.testing.assert_array_equal(dense[point_voxel[kept], point_slot[kept]], pts[kept])
    filled = np.zeros(dense.shape[:2], bool)
    filled[point_voxel[kept], point_slot[kept]] = True
    assert not dense[~filled].any()  # padding slots hold zeros
    if max_voxels < len(coors) + 1:
        assert pillars.overflow > 0


def test_voxelize_empty_and_all_outside():
    pc_range, voxel = (-1.0, -1.0, -1.0, 1.0, 1.0, 1.0), (0.5, 0.5, 2.0)
    for pts in (np.zeros((0, 4), np.float32), np.full((5, 4), 7.0, np.float32)):
        pillars = voxelize(torch.from_numpy(pts), pc_range, voxel, 4, 10)
        assert pillars.num_pillars == 0 and pillars.points.shape == (0, 4) and pillars.overflow == 0


# -- pillar encoder --------------------------------------------------------------------------------

def padded_vfe_reference(vfe: HardVFE, pillars, max_points: int) -> torch.Tensor:
    """mmdet3d's HardVFE written plainly over the padded [M, N, C] layout."""
    feats = pillars.dense(max_points)
    n = pillars.num_points.to(feats.dtype).view(-1, 1, 1)
    mean = feats[:, :, :3].sum(dim=1, keepdim=True) / n
    centre = (pillars.coors.flip(1).to(feats.dtype).unsqueeze(1) * torch.tensor(vfe.voxel_size)
              + torch.tensor(vfe.offset))
    x = torch.cat([feats, feats[:, :, :3] - mean, feats[:, :, :3] - centre], dim=-1)
    mask = (torch.arange(max_points).view(1, -1) < pillars.num_points.view(-1, 1)).unsqueeze(-1)
    x = x * mask
    for i, layer in enumerate(vfe.vfe_layers):
        m, slots, c = x.shape
        y = layer.linear(x)
        y = layer.norm(y.reshape(m * slots, -1)).reshape(m, slots, -1).relu()
        pooled = y.max(dim=1).values
        if i == len(vfe.vfe_layers) - 1:
            return pooled
        x = torch.cat([y, pooled.unsqueeze(1).expand_as(y)], dim=-1)
    raise AssertionError("unreachable")


@pytest.mark.parametrize("folded", [False, True], ids=["batchnorm", "folded"])
@pytest.mark.parametrize("name", ["nus-regnetx-400mf-fpn", "lyft-fpn"])
def test_sparse_vfe_equals_padded_reference(name, folded):
    """Folded, the last layer is pooled before its shift and ReLU (HardVFE._pool_then_activate).
    Both run in float64: the same algebra in another order (float32 sums: the row projection
    test)."""
    from regnet_pillars_ros.model.network import fold_batchnorm

    p = get_preset(name)
    net = PointPillarsNet(p)
    net.load_state_dict(random_state_dict(net, seed=3))
    net.eval().double()
    run = copy.deepcopy(net)
    if folded:
        fold_batchnorm(run)
    pts = random_cloud(np.random.default_rng(5), 3000, p.point_cloud_range, p.voxel_size)
    pts[:, :2] *= 0.05  # crowd points into few pillars so some are full
    pillars = voxelize(torch.from_numpy(pts).double(), p.point_cloud_range, p.voxel_size,
                       p.max_num_points, p.max_voxels)
    assert ((pillars.num_points == p.max_num_points).any()
            and (pillars.num_points < p.max_num_points).any())
    with torch.inference_mode():
        ours = run.pts_voxel_encoder(*pillars.network_inputs())
        ref = padded_vfe_reference(net.pts_voxel_encoder, pillars, p.max_num_points)
    assert_close_float64(ours, ref, "pillar features")


@pytest.mark.parametrize("rows, k", [(50_000, 10), (3001, 64), (1, 5), (0, 10)])
@pytest.mark.kernels
def test_row_projection_equals_the_matrix_product(rows, k):
    """The CPU's 1x1-convolution form of `x @ weight.T`, on a weight slice (not contiguous, as the
    encoder's later layers take it), with gradients for training."""
    gen = torch.Generator().manual_seed(rows + k)
    x = torch.randn(rows, k, generator=gen, requires_grad=True)
    weight = torch.randn(64, 2 * k, generator=gen)[:, :k].requires_grad_()
    got = project_rows(x, weight)
    assert got.shape == (rows, 64) and got.is_contiguous()
    # Against the exact products (float64), within float32's bound for sums of that many terms.
    x64, w64 = x.detach().double(), weight.detach().double()
    exact = x64 @ w64.t()
    magnitude = x64.abs() @ w64.abs().t()  # sum |x_i| |w_i| behind each output
    assert_within(got, exact, gamma(k) * magnitude, "x @ weight.T")
    got.square().sum().backward()
    # d/dy of sum(y^2) is 2y (exact in float32), so the gradients are 2 y @ weight over 64 terms
    # and 2 y.T @ x over the rows, from a y already rounded over k terms: gamma(k + length).
    assert_within(x.grad, 2 * exact @ w64, 2 * gamma(k + 64) * magnitude @ w64.abs(), "x.grad")
    assert_within(weight.grad, 2 * exact.t() @ x64,
                  2 * gamma(k + rows) * magnitude.t() @ x64.abs(), "weight.grad")


# -- anchors, coder, direction --------------------------------------------------------------------

def test_anchor_layout_and_values():
    p = get_preset("nus-secfpn")
    anchors = level_anchors(p.anchors, 0, (200, 200), "v1")
    assert anchors.shape == (200 * 200 * 14, 9)
    grid = anchors.view(200, 200, 7, 2, 9)
    pitch = 99.2 / 200
    np.testing.assert_allclose(grid[0, 0, 0, 0, :2].numpy(), [-49.6 + pitch / 2] * 2, atol=1e-5)
    np.testing.assert_allclose(grid[3, 5, 0, 0, :2].numpy(),
                               [-49.6 + 5.5 * pitch, -49.6 + 3.5 * pitch], atol=1e-4)
    np.testing.assert_allclose(grid[0, 0, :, 0, 3:6].numpy(), np.array(p.anchors.sizes_v1),
                               rtol=1e-6)
    np.testing.assert_allclose(grid[0, 0, :, 0, 2].numpy(), [r[2] for r in p.anchors.ranges],
                               rtol=1e-6)
    np.testing.assert_allclose(grid[0, 0, 0, :, 6].numpy(), [0.0, 1.57], rtol=1e-7)
    v0 = level_anchors(p.anchors, 0, (200, 200), "v0").view(200, 200, 7, 2, 9)
    torch.testing.assert_close(v0[..., 3], grid[..., 4])
    torch.testing.assert_close(v0[..., 4], grid[..., 3])


def test_fpn_levels_scale_the_generic_sizes():
    p = get_preset("nus-regnetx-400mf-fpn")
    for level, (hw, scale) in enumerate(zip([(200, 200), (100, 100), (50, 50)], [1, 2, 4])):
        anchors = level_anchors(p.anchors, level, hw, "v1").view(*hw, 4, 2, 9)
        np.testing.assert_allclose(anchors[0, 0, :, 0, 3:6].numpy(),
                                   np.array(p.anchors.sizes_v1) * scale, rtol=1e-6)
        step = 100 / hw[0]
        np.testing.assert_allclose(anchors[0, 1, 0, 0, 0] - anchors[0, 0, 0, 0, 0], step, rtol=1e-5)


def test_coder_round_trip():
    gen = torch.Generator().manual_seed(0)
    anchors = torch.cat([torch.randn(100, 3, generator=gen) * 10,
                         torch.rand(100, 3, generator=gen) * 4 + 0.3,
                         torch.rand(100, 1, generator=gen) * 3, torch.zeros(100, 2)], dim=1)
    boxes = torch.cat([torch.randn(100, 3, generator=gen) * 10,
                       torch.rand(100, 3, generator=gen) * 4 + 0.3,
                       torch.randn(100, 1, generator=gen) * 3,
                       torch.randn(100, 2, generator=gen)], dim=1)
    torch.testing.assert_close(decode_boxes(anchors, encode_boxes(anchors, boxes)), boxes,
                               rtol=1e-5, atol=1e-4)
    zero = decode_boxes(anchors, torch.zeros_like(anchors))
    torch.testing.assert_close(zero, anchors)


def test_limit_period_range():
    vals = torch.linspace(-20, 20, 1001)
    wrapped = limit_period(vals, 0.0, math.pi)
    assert wrapped.min() >= 0 and wrapped.max() < math.pi
    periods = (vals - wrapped) / math.pi
    torch.testing.assert_close(periods, periods.round(), atol=1e-5, rtol=0)


def per_class_nms(cand: Candidates, cfg: PostprocessConfig) -> tuple[torch.Tensor, ...]:
    """Plain reference: one NMS call per class, classes concatenated, then the max_num cut."""
    bev = physical_bev(cand.boxes, cfg.convention)
    rows, labels = [], []
    for k in range(cand.scores.shape[1]):
        idx = torch.nonzero(cand.scores[:, k] > cfg.score_thr).squeeze(1)
        rows.append(idx[nms_rotated_bev(bev[idx], cand.scores[idx, k], cfg.nms_thr)])
        labels.append(torch.full_like(rows[-1], k))
    rows, labels = torch.cat(rows), torch.cat(labels)
    scores = cand.scores[rows, labels]
    if len(rows) > cfg.max_num:
        top = torch.sort(scores, descending=True)[1][: cfg.max_num]
        rows, scores, labels = rows[top], scores[top], labels[top]
    return cand.boxes[rows], scores, labels, cand.dir_labels[rows]


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA GPU (run with the device tool)"))])
@pytest.mark.parametrize("convention", ["v0", "v1"])
def test_multiclass_nms_equals_one_call_per_class(convention, device):
    gen = torch.Generator().manual_seed(4)
    n = 600
    centres = (torch.rand(60, 2, generator=gen) - 0.5) * 80 + 1e3  # clusters, far from the origin
    member = torch.randint(0, 60, (n,), generator=gen)
    boxes = torch.cat([centres[member] + torch.randn(n, 2, generator=gen) * 0.4,
                       torch.rand(n, 1, generator=gen), torch.rand(n, 3, generator=gen) * 3 + 0.5,
                       torch.randn(n, 3, generator=gen)], dim=1)
    scores = (torch.rand(n, 10, generator=gen) * 8).round() / 8  # ties inside and across classes
    cand = Candidates(boxes.to(device), scores.to(device),
                      torch.randint(0, 2, (n,), generator=gen).to(device))
    for score_thr, nms_thr, max_num in ((0.05, 0.2, 500), (0.3, 0.0, 10_000), (0.9, 0.5, 500),
                                        (1.0, 0.2, 500)):
        cfg = PostprocessConfig(score_thr, nms_thr, 1000, max_num, 0.7854, 0.0, convention)
        got, expected = multiclass_nms(cand, cfg), per_class_nms(cand, cfg)
        for a, b in zip(got, expected):
            assert a.dtype == b.dtype and torch.equal(a, b)
    assert len(multiclass_nms(cand, PostprocessConfig(0.05, 0.2, 1000, 500, 0.7854, 0.0,
                                                      convention))[0]) == 500


@pytest.mark.skipif(not torch.cuda.is_available(),
                    reason="needs a CUDA GPU (run with the device tool)")
def test_voxelize_on_cuda_equals_cpu():
    p = get_preset("nus-regnetx-400mf-fpn")
    pts = torch.from_numpy(random_cloud(np.random.default_rng(9), 20000, p.point_cloud_range,
                                        p.voxel_size))
    cpu = voxelize(pts, p.point_cloud_range, p.voxel_size, p.max_num_points, 500)
    gpu = voxelize(pts.cuda(), p.point_cloud_range, p.voxel_size, p.max_num_points, 500)
    for name in ("points", "point_pillar", "point_slot", "source_index", "coors", "num_points"):
        torch.testing.assert_close(getattr(gpu, name).cpu(), getattr(cpu, name), rtol=0, atol=0)
    assert gpu.overflow == cpu.overflow > 0


@pytest.mark.parametrize("name,max_voxels", [("nus-regnetx-400mf-fpn", None),
                                             ("lyft-secfpn", None), ("nus-secfpn", 700)])
def test_fixed_size_voxelization_gives_the_same_pillars_and_canvas(name, max_voxels):
    """What a CUDA graph replays: `voxelize_fixed` over a mask of usable rows (unusable ones hold
    NaN or points in range) keeps the pillars and points of `voxelize` on the usable rows, pads
    everything else onto the canvas' spare row, and the encoder draws the same canvas."""
    from regnet_pillars_ros.model.network import fold_batchnorm

    p = get_preset(name)
    max_voxels = max_voxels or p.max_voxels
    net = PointPillarsNet(p)
    net.load_state_dict(random_state_dict(net, seed=4))
    fold_batchnorm(net.eval())
    rng = np.random.default_rng(8)
    cloud = torch.from_numpy(random_cloud(rng, 6000, p.point_cloud_range, p.voxel_size))
    usable = torch.from_numpy(rng.random(cloud.shape[0]) < 0.8)
    cloud[~usable & torch.from_numpy(rng.random(cloud.shape[0]) < 0.3)] = float("nan")
    ref = voxelize(cloud[usable], p.point_cloud_range, p.voxel_size, p.max_num_points, max_voxels)
    grid = VoxelGrid.of(p.point_cloud_range, p.voxel_size)
    (points, point_pillar, coors, num_points), counts = voxelize_fixed(
        cloud, usable, grid, p.max_num_points, max_voxels)

    assert (counts.tolist() == [ref.num_pillars, ref.overflow]
            and (max_voxels > 1000 or ref.overflow > 0))
    m = ref.num_pillars
    assert coors.shape[0] == min(max_voxels, grid.num_cells + 1) + PAD_SPREAD == num_points.shape[0]
    kept = point_pillar < m
    # The same rows in the same order.
    torch.testing.assert_close(points[kept], ref.points, rtol=0, atol=0)
    torch.testing.assert_close(point_pillar[kept], ref.point_pillar, rtol=0, atol=0)
    torch.testing.assert_close(coors[:m], ref.coors, rtol=0, atol=0)
    torch.testing.assert_close(num_points[:m], ref.num_points, rtol=0, atol=0)
    assert (not points[~kept].any() and bool((coors[m:] == grid.spare).all())
            and bool((num_points[m:] == 1).all()))
    # Float64: a kernel may sum in another order for another row count.
    net.pts_voxel_encoder.double()
    with torch.inference_mode():
        assert_close_float64(net.encode(points.double(), point_pillar, coors, num_points,
                                        padded=True),
                             net.encode(ref.points.double(), *ref.network_inputs()[1:]), "canvas")


@pytest.mark.parametrize("name", ["nus-regnetx-400mf-fpn", "lyft-secfpn"])
def test_folding_batchnorm_keeps_the_outputs(name):
    from regnet_pillars_ros.model.network import fold_batchnorm

    preset = get_preset(name)
    net = PointPillarsNet(preset)
    net.load_state_dict(random_state_dict(net, seed=2))
    # Float64: folding is exact algebra, float32 rounding would hide a small slip.
    net.eval().double()
    bns = sum(isinstance(m, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)) for m in net.modules())
    folded = PointPillarsNet(preset)
    folded.load_state_dict(net.state_dict())
    assert fold_batchnorm(folded.eval().double()) == bns
    assert not any(isinstance(m, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d))
                   for m in folded.modules())
    gen = torch.Generator().manual_seed(2)
    # A 64 x 64 canvas (every stride divides it): float64 convolutions are slow.
    canvas = torch.rand(1, 64, 64, 64, generator=gen, dtype=torch.float64)
    canvas *= torch.rand(1, 1, 64, 64, generator=gen, dtype=torch.float64) < 0.2
    points = (torch.rand(20000, 4, generator=gen, dtype=torch.float64)
              * torch.tensor([80.0, 80.0, 4.0, 0.5]))
    points -= torch.tensor([40.0, 40.0, 3.0, 0.0])
    pillars = voxelize(points, preset.point_cloud_range, preset.voxel_size, preset.max_num_points,
                       preset.max_voxels)
    with torch.inference_mode():
        for i, (a, b) in enumerate(zip(net.forward_canvas(canvas), folded.forward_canvas(canvas))):
            assert_close_float64(b, a, f"head map {i}")
        a = net.pts_voxel_encoder(*pillars.network_inputs())
        b = folded.pts_voxel_encoder(*pillars.network_inputs())
        assert_close_float64(b, a, "pillar features")
