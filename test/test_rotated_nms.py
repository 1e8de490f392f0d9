"""Rotated BEV IoU and NMS against shapely, analytic cases, a plain greedy reference and mmdet3d."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from shapely.geometry import Polygon

from regnet_pillars_ros.model.rotated_nms import (
    _candidate_pairs,
    _greedy_keep,
    _indexed_iou,
    benchmark,
    nms_rotated_bev,
    rotated_iou_bev,
)

FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "mmdet3d"
FIXTURE_CASES = ("nus-regnetx-400mf-secfpn-s11", "lyft-fpn-s12")
CUDA = pytest.param(
    "cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(),
                                     reason="no CUDA device in this environment")
)
DEVICES = ("cpu", CUDA)


def polygon(box: np.ndarray) -> Polygon:
    """Shapely rectangle of one (x, y, dx, dy, yaw) row, built independently of the module."""
    x, y, dx, dy, yaw = (float(v) for v in box)
    c, s = math.cos(yaw), math.sin(yaw)
    local = ((-dx / 2, -dy / 2), (dx / 2, -dy / 2), (dx / 2, dy / 2), (-dx / 2, dy / 2))
    return Polygon([(x + c * u - s * v, y + s * u + c * v) for u, v in local])


def shapely_iou(a: np.ndarray, b: np.ndarray) -> float:
    pa, pb = polygon(a), polygon(b)
    inter = pa.intersection(pb).area
    union = pa.area + pb.area - inter
    return inter / union if union > 0 else 0.0


def random_boxes(rng: np.random.Generator, n: int, spread: float = 4.0) -> np.ndarray:
    xy = rng.uniform(-spread, spread, (n, 2))
    dxdy = rng.uniform(0.05, 4.0, (n, 2))
    yaw = rng.uniform(-2 * math.pi, 2 * math.pi, (n, 1))
    return np.concatenate((xy, dxdy, yaw), axis=1)


def jitter(rng: np.random.Generator, boxes: np.ndarray, scale: float) -> np.ndarray:
    """Move centres and yaws by up to ``scale`` and extents by up to ``scale`` relative (extents
    stay > 0)."""
    out = boxes + rng.uniform(-scale, scale, boxes.shape) * np.array([1, 1, 0, 0, 1])
    out[:, 2:4] *= 1 + rng.uniform(-scale, scale, (len(boxes), 2))
    return out


def paired_cases(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Pairs (a[i], b[i]) covering the delicate configurations."""
    n = 200
    a = random_boxes(rng, n)
    pairs = []
    # Near-identical: tiny perturbations of centre, size and yaw.
    for eps in (1e-12, 1e-9, 1e-6, 1e-3):
        pairs.append((a, jitter(rng, a, eps)))
    # One inside the other: same centre or offset, smaller extents, any yaw.
    inner = a.copy()
    inner[:, 2:4] *= rng.uniform(0.05, 0.5, (n, 2))
    inner[:, 4] = rng.uniform(-math.pi, math.pi, n)
    pairs.append((a, inner))
    # Touching along a full or partial edge: shifted by exactly (dx_a + dx_b) / 2 along the heading.
    other = a.copy()
    other[:, 2] = rng.uniform(0.1, 3.0, n)
    other[:, 3] = np.where(rng.random(n) < 0.5, a[:, 3], rng.uniform(0.1, 3.0, n))
    shift = (a[:, 2] + other[:, 2]) / 2
    other[:, 0] += shift * np.cos(a[:, 4])
    other[:, 1] += shift * np.sin(a[:, 4])
    other[:, :2] += (0.3 * (rng.random((n, 1)) < 0.3)
                     * np.stack((-np.sin(a[:, 4]), np.cos(a[:, 4])), 1))
    pairs.append((a, other))
    # Rotated by exactly +-90 degrees, with nearly swapped extents (exactly swapped: see
    # test_same_footprint_gives_one; shapely's overlay sometimes returns an empty intersection
    # there).
    quarter = a.copy()
    quarter[:, 4] += np.where(rng.random(n) < 0.5, math.pi / 2, -math.pi / 2)
    quarter[:, 2:4] = a[:, [3, 2]]
    quarter[:, :2] += rng.uniform(-0.5, 0.5, (n, 2))
    quarter[:, 2:4] *= rng.uniform(0.8, 1.2, (n, 2))
    pairs.append((a, quarter))
    # Parallel edges: same yaw, offset centres.
    parallel = a.copy()
    parallel[:, :2] += rng.uniform(-1.5, 1.5, (n, 2))
    parallel[:, 2:4] = rng.uniform(0.1, 3.0, (n, 2))
    pairs.append((a, parallel))
    # Tiny boxes and huge aspect ratios, over each other.
    thin = a.copy()
    thin[:, 2] = rng.uniform(10.0, 100.0, n)
    thin[:, 3] = rng.uniform(0.001, 0.05, n)
    pairs.append((a, thin))
    pairs.append((thin, jitter(rng, thin, 0.02)))
    tiny = a.copy()
    tiny[:, 2:4] = rng.uniform(1e-3, 1e-2, (n, 2))
    tiny[:, :2] = a[:, :2] + rng.uniform(-0.005, 0.005, (n, 2))
    pairs.append((tiny, jitter(rng, tiny, 3e-3)))
    # Far from the origin (fixture coordinates reach ~60 m).
    far = a.copy()
    far[:, :2] += 80.0
    pairs.append((far, jitter(rng, far, 0.5)))
    return np.concatenate([p[0] for p in pairs]), np.concatenate([p[1] for p in pairs])


def assert_iou_close(got: np.ndarray, ref: np.ndarray) -> None:
    err = np.abs(got - ref)
    bad = err > 1e-6 + 1e-5 * np.abs(ref)
    assert not bad.any(), (f"{bad.sum()} pairs off, worst {err.max():.3g} at "
                           f"{np.unravel_index(err.argmax(), err.shape)}")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", (torch.float64, torch.float32))
@pytest.mark.kernels
def test_iou_matches_shapely_on_random_matrix(device: str, dtype: torch.dtype) -> None:
    rng = np.random.default_rng(0)
    boxes = torch.tensor(random_boxes(rng, 80), dtype=dtype)
    exact = boxes.double().numpy()  # the geometry shapely sees: the same (rounded) numbers
    ref = np.array([[shapely_iou(a, b) for b in exact] for a in exact])
    got = rotated_iou_bev(boxes.to(device), boxes.to(device))
    assert got.dtype == dtype and got.device.type == device and got.shape == (80, 80)
    assert_iou_close(got.cpu().double().numpy(), ref)
    assert 0 < (ref > 0).sum() < ref.size  # the case mixes overlapping and disjoint pairs


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.kernels
def test_iou_matches_shapely_on_delicate_pairs(device: str) -> None:
    a, b = paired_cases(np.random.default_rng(1))
    ref = np.array([shapely_iou(p, q) for p, q in zip(a, b)])
    ta, tb = torch.from_numpy(a).to(device), torch.from_numpy(b).to(device)
    # Paired IoU is the diagonal; compute it in blocks to keep the matrices small.
    got = np.concatenate([
        torch.diagonal(rotated_iou_bev(ta[i:i + 200], tb[i:i + 200])).cpu().numpy()
        for i in range(0, len(a), 200)
    ])
    assert np.isfinite(got).all()
    assert_iou_close(got, ref)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.kernels
def test_same_footprint_gives_one(device: str) -> None:
    a = random_boxes(np.random.default_rng(4), 500)
    quarter = a.copy()
    quarter[:, 4] += np.where(np.arange(500) % 2 == 0, math.pi / 2, -math.pi / 2)
    quarter[:, 2:4] = a[:, [3, 2]]
    half = a.copy()
    half[:, 4] += math.pi
    for b in (a, quarter, half):
        iou = rotated_iou_bev(torch.from_numpy(a).to(device), torch.from_numpy(b).to(device))
        torch.testing.assert_close(torch.diagonal(iou).cpu(), torch.ones(500, dtype=torch.float64),
                                   atol=1e-9, rtol=0)


@pytest.mark.kernels
def test_symmetry_and_self_iou() -> None:
    boxes = torch.from_numpy(random_boxes(np.random.default_rng(2), 60))
    iou = rotated_iou_bev(boxes, boxes)
    torch.testing.assert_close(iou, iou.T, atol=1e-12, rtol=0)
    torch.testing.assert_close(torch.diagonal(iou), torch.ones(60, dtype=torch.float64),
                               atol=1e-12, rtol=0)
    other = torch.from_numpy(random_boxes(np.random.default_rng(3), 40))
    torch.testing.assert_close(rotated_iou_bev(boxes, other), rotated_iou_bev(other, boxes).T,
                               atol=1e-12, rtol=0)


@pytest.mark.kernels
def test_analytic_cases() -> None:
    def iou(a: list[float], b: list[float]) -> float:
        return float(rotated_iou_bev(torch.tensor([a], dtype=torch.float64),
                                     torch.tensor([b], dtype=torch.float64)))

    assert iou([0, 0, 1, 1, 0], [0.5, 0, 1, 1, 0]) == pytest.approx(1 / 3, abs=1e-12)
    shifted = [0.5 * math.cos(0.3), 0.5 * math.sin(0.3), 1, 1, 0.3]
    assert iou([0, 0, 1, 1, 0.3], shifted) == pytest.approx(1 / 3, abs=1e-12)
    # Square over itself rotated by 45 degrees: a regular octagon of area 2*sqrt(2) - 2, IoU
    # 1/sqrt(2).
    assert (iou([3, -2, 1, 1, 0], [3, -2, 1, 1, math.pi / 4])
            == pytest.approx(1 / math.sqrt(2), abs=1e-12))
    # Contained: the smaller area over the larger.
    assert iou([0, 0, 4, 2, 0.7], [0.3, 0.1, 1, 0.5, -0.2]) == pytest.approx(0.5 / 8, abs=1e-12)
    # Same footprint described with swapped extents and yaw + 90 degrees.
    assert iou([1, 1, 4, 2, 0.2], [1, 1, 2, 4, 0.2 + math.pi / 2]) == pytest.approx(1.0, abs=1e-12)
    # Disjoint with overlapping bounding circles, disjoint far apart, touching along an edge:
    # exactly 0.
    assert iou([0, 0, 4, 1, 0], [0, 1.2, 4, 1, 0]) == 0.0
    assert iou([0, 0, 4, 1, 0], [100, 0, 4, 1, 0]) == 0.0
    assert (iou([0, 0, 2, 1, 0.4], [2 * math.cos(0.4), 2 * math.sin(0.4), 2, 1, 0.4])
            == pytest.approx(0.0, abs=1e-12))


def test_degenerate_boxes_give_zero_without_nan() -> None:
    # Zero or negative extents (outside the box contract, which asks for dx, dy >= 0) give IoU 0.
    boxes = torch.tensor(
        [[0, 0, 0, 0, 0], [0, 0, 2, 0, 0.3], [0, 0, 0, 2, 0], [0, 0, 2, 2, 0], [0, 0, 0, 0, 1.0],
         [0, 0, -2, 2, 0], [0, 0, -2, -2, 0]],
        dtype=torch.float32,
    )
    iou = rotated_iou_bev(boxes, boxes)
    expected = torch.zeros(7, 7)
    expected[3, 3] = 1.0
    torch.testing.assert_close(iou, expected, atol=1e-6, rtol=0)
    assert rotated_iou_bev(boxes[:0], boxes).shape == (0, 7)
    assert rotated_iou_bev(boxes, boxes[:0]).shape == (7, 0)


def greedy_reference(boxes: np.ndarray, scores: np.ndarray, threshold: float) -> list[int]:
    """Plain greedy NMS: stable descending score order, suppress when IoU > threshold."""
    order = sorted(range(len(scores)), key=lambda i: -scores[i])
    keep: list[int] = []
    for i in order:
        if all(shapely_iou(boxes[k], boxes[i]) <= threshold for k in keep):
            keep.append(i)
    return keep


def clustered(rng: np.random.Generator, n: int, tied_scores: bool) -> tuple[np.ndarray, np.ndarray]:
    centres = rng.uniform(-15, 15, (n // 8, 2))
    member = rng.integers(0, len(centres), n)
    boxes = np.concatenate(
        (
            centres[member] + rng.normal(0, 0.6, (n, 2)) * rng.choice((0.02, 1.0), (n, 1)),
            rng.uniform(0.5, 5.0, (n, 2)),
            rng.uniform(-math.pi, math.pi, (len(centres), 1))[member] + rng.normal(0, 0.3, (n, 1)),
        ),
        axis=1,
    )
    scores = rng.integers(0, 6, n) / 5.0 if tied_scores else rng.random(n)
    return boxes, scores


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("tied_scores", (False, True))
@pytest.mark.parametrize("threshold", (0.0, 0.1, 0.2, 0.5, 0.8))
def test_nms_matches_greedy_reference(device: str, tied_scores: bool, threshold: float) -> None:
    rng = np.random.default_rng(int(threshold * 10) + 100 * tied_scores)
    boxes, scores = clustered(rng, 160, tied_scores)
    ref = greedy_reference(boxes, scores, threshold)
    for dtype in (torch.float64, torch.float32):
        tb = torch.from_numpy(boxes).to(device, dtype)
        ts = torch.from_numpy(scores).to(device, dtype)
        # Reference on the same rounded geometry the module sees.
        expected = (ref if dtype == torch.float64
                    else greedy_reference(tb.double().cpu().numpy(), scores, threshold))
        keep = nms_rotated_bev(tb, ts, threshold)
        assert keep.dtype == torch.long and keep.device.type == device
        assert keep.tolist() == expected
    assert 1 < len(ref) < len(boxes)  # something is suppressed, something kept


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("layout", ("column", "row", "huge_box"))
def test_nms_pair_search_layouts(device: str, layout: str) -> None:
    # The candidate-pair search sweeps along the more spread axis; any pair it misses shows up
    # at threshold 0, where every overlap suppresses.
    rng = np.random.default_rng(7)
    n = 120
    boxes = np.concatenate(
        (rng.normal(0, 0.4, (n, 1)), np.linspace(0, 60, n)[:, None] + rng.normal(0, 0.5, (n, 1)),
         rng.uniform(0.5, 5.0, (n, 2)), rng.uniform(-math.pi, math.pi, (n, 1))),
        axis=1,
    )
    if layout == "row":
        boxes[:, [0, 1]] = boxes[:, [1, 0]]
    if layout == "huge_box":
        boxes[:, 0] += rng.choice((-30.0, 30.0), n)
        boxes[n // 2] = (0.0, 30.0, 80.0, 1.0, math.pi / 2 + 0.02)
    scores = rng.random(n)
    scores[n // 2] = 0.5
    for threshold in (0.0, 0.1):
        expected = greedy_reference(boxes, scores, threshold)
        keep = nms_rotated_bev(torch.from_numpy(boxes).to(device),
                               torch.from_numpy(scores).to(device), threshold)
        assert keep.tolist() == expected


def per_group_nms(boxes: torch.Tensor, scores: torch.Tensor, groups: torch.Tensor,
                  threshold: float) -> list[int]:
    """One ungrouped call per group, merged into the stable descending score order."""
    keep = torch.cat([
        idx[nms_rotated_bev(boxes[idx], scores[idx], threshold)]
        for idx in (torch.nonzero(groups == k).squeeze(1) for k in groups.unique())
    ])
    order = torch.sort(scores, descending=True, stable=True).indices
    position = torch.empty_like(order)
    position[order] = torch.arange(len(order), device=order.device)
    return keep[torch.argsort(position[keep])].tolist()


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("offset", (0.0, 3e4, -1e-3))
def test_grouped_nms_equals_one_call_per_group(device: str, offset: float) -> None:
    # Batched NMS over classes: the same boxes in several groups (as one anchor scored for several
    # classes) never suppress each other, and far-off coordinates change nothing.
    rng = np.random.default_rng(11)
    for n, groups_count, tied in ((300, 10, False), (300, 3, True), (40, 1, False)):
        boxes, scores = clustered(rng, n, tied)
        boxes[:, :2] += offset
        boxes[::9, 3] = 0.0  # degenerate boxes: IoU 0 with everything
        tb = torch.from_numpy(np.concatenate((boxes, boxes[: n // 2]))).float().to(device)
        ts = torch.from_numpy(np.concatenate((scores, scores[: n // 2]))).float().to(device)
        groups = torch.from_numpy(rng.integers(0, groups_count, len(ts))).to(device)
        groups[n:] = (groups[: n // 2] + 1) % max(groups_count, 2)
        for threshold in (0.0, 0.2, 0.5, -0.1):
            keep = nms_rotated_bev(tb, ts, threshold, groups=groups)
            assert keep.dtype == torch.long and keep.device.type == device
            assert keep.tolist() == per_group_nms(tb, ts, groups, threshold)
        assert (nms_rotated_bev(tb, ts, 0.2, groups=torch.zeros_like(groups)).tolist()
                == nms_rotated_bev(tb, ts, 0.2).tolist())


def test_greedy_keep_settles_long_chains() -> None:
    # Each box overlaps the next one only: a suppression chain longer than the vectorized rounds.
    n = 41
    boxes = torch.tensor([[0.6 * k, 0.0, 1.0, 1.0, 0.0] for k in range(n)])
    assert nms_rotated_bev(boxes, torch.linspace(1, 0, n), 0.2).tolist() == list(range(0, n, 2))
    rng = np.random.default_rng(3)
    for _ in range(50):
        m = int(rng.integers(1, 60))
        pairs = np.unique(np.sort(rng.integers(0, m, (int(rng.integers(0, 4 * m)), 2)), axis=1),
                          axis=0)
        rows, cols = pairs[pairs[:, 0] < pairs[:, 1]].T
        suppressed = [False] * m
        for row, col in zip(rows, cols):
            suppressed[col] |= not suppressed[row]
        assert _greedy_keep(m, rows, cols).tolist() == [k for k in range(m) if not suppressed[k]]


def test_nms_threshold_is_strict() -> None:
    boxes = torch.tensor([[0, 0, 1, 1, 0.2], [0.4, 0.1, 1.2, 0.9, 0.5]], dtype=torch.float64)
    scores = torch.tensor([0.9, 0.8])
    iou = float(rotated_iou_bev(boxes[:1], boxes[1:]))
    assert 0 < iou < 1
    assert nms_rotated_bev(boxes, scores, iou).tolist() == [0, 1]
    assert nms_rotated_bev(boxes, scores, math.nextafter(iou, 0.0)).tolist() == [0]


def test_nms_order_ties_and_edge_cases() -> None:
    boxes = torch.tensor([[0, 0, 1, 1, 0], [10, 0, 1, 1, 0], [20, 0, 1, 1, 0], [20.1, 0, 1, 1, 0]])
    # Equal scores keep input order; box 3 overlaps box 2, which comes first.
    assert nms_rotated_bev(boxes, torch.tensor([0.5, 0.7, 0.5, 0.5]), 0.2).tolist() == [1, 0, 2]
    assert nms_rotated_bev(boxes, torch.tensor([0.5, 0.7, 0.5, 0.6]), 0.2).tolist() == [1, 3, 0]
    # A negative threshold is exceeded by every IoU, including 0: only the best box survives.
    assert nms_rotated_bev(boxes, torch.tensor([0.1, 0.2, 0.3, 0.4]), -0.1).tolist() == [3]
    empty = nms_rotated_bev(boxes[:0], torch.zeros(0), 0.2)
    assert empty.dtype == torch.long and empty.shape == (0,)


def fixture_nms(case: str, columns: list[int]
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.lib.npyio.NpzFile]:
    """mmdet3d's per-class NMS (box3d_multiclass_nms) re-done with nms_rotated_bev."""
    path = FIXTURES / case / "expected" / "nms_io.npz"
    if not path.exists():
        pytest.skip(f"fixture {path} not present")
    data = np.load(path)
    bboxes, scores = torch.from_numpy(data["in_bboxes"]), torch.from_numpy(data["in_scores"])
    out_boxes, out_scores, out_labels = [], [], []
    for k in range(scores.shape[1] - 1):  # the last column is the zero background score
        mask = scores[:, k] > 0.05
        keep = nms_rotated_bev(bboxes[mask][:, columns], scores[mask, k], 0.2)
        out_boxes.append(bboxes[mask][keep])
        out_scores.append(scores[mask, k][keep])
        out_labels.append(torch.full((len(keep),), k, dtype=torch.long))
    return (torch.cat(out_boxes).numpy(), torch.cat(out_scores).numpy(),
            torch.cat(out_labels).numpy(), data)


@pytest.mark.parametrize("case", FIXTURE_CASES)
@pytest.mark.kernels
def test_fixture_parity_with_mmdet3d(case: str) -> None:
    boxes, scores, labels, data = fixture_nms(case, [0, 1, 3, 4, 6])
    np.testing.assert_array_equal(labels, data["out_labels"])
    np.testing.assert_array_equal(boxes, data["out_bboxes"])
    np.testing.assert_array_equal(scores, data["out_scores"])
    # The BEV boxes mmdet3d fed to NMS (x1, y1, x2, y2, yaw) are the same rectangles.
    bev = data["in_bboxes_for_nms"]
    np.testing.assert_allclose((bev[:, :2] + bev[:, 2:4]) / 2, data["in_bboxes"][:, :2], atol=1e-4)
    np.testing.assert_allclose(bev[:, 2:4] - bev[:, :2], data["in_bboxes"][:, 3:5], atol=1e-4)


@pytest.mark.parametrize("case", FIXTURE_CASES)
def test_fixture_detects_swapped_extents(case: str) -> None:
    boxes, _, labels, data = fixture_nms(case, [0, 1, 4, 3, 6])
    same = boxes.shape == data["out_bboxes"].shape and np.array_equal(boxes, data["out_bboxes"])
    assert not same, "feeding (x, y, dy, dx, yaw) should change which boxes survive"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device in this environment")
def test_cuda_matches_cpu() -> None:
    boxes, scores = clustered(np.random.default_rng(5), 2000, tied_scores=False)
    tb, ts = torch.from_numpy(boxes).float(), torch.from_numpy(scores).float()
    torch.testing.assert_close(rotated_iou_bev(tb.cuda(), tb.cuda()).cpu(), rotated_iou_bev(tb, tb),
                               atol=1e-6, rtol=0)
    assert (nms_rotated_bev(tb.cuda(), ts.cuda(), 0.2).cpu().tolist()
            == nms_rotated_bev(tb, ts, 0.2).tolist())


def test_benchmark_runs() -> None:
    result = benchmark(sizes=(50,), repeats=1)
    assert set(result) == {50} and result[50] > 0


@pytest.mark.parametrize("dense", [False, True], ids=["sweep", "dense"])
@pytest.mark.parametrize("threshold", [0.0, 0.2, 0.5, 0.9])
def test_candidate_pairs_hold_every_pair_the_exact_iou_keeps(threshold: float, dense: bool) -> None:
    gen = torch.Generator().manual_seed(3)
    n = 400
    xy = torch.rand(n, 2, generator=gen) * 20.0
    sizes = torch.rand(n, 2, generator=gen) ** 3 * 12.0  # small to huge, some nearly zero
    boxes = torch.cat((xy, sizes, torch.rand(n, 1, generator=gen) * 6.3), dim=1).double()
    groups = torch.randint(0, 3, (n,), generator=gen)
    i, j = torch.triu_indices(n, n, offset=1)
    kept_i, kept_j = _candidate_pairs(boxes, groups, threshold, dense=dense)
    assert bool((kept_i < kept_j).all()) and bool((groups[kept_i] == groups[kept_j]).all())
    exact = (_indexed_iou(boxes, boxes, i, j) > threshold) & (groups[i] == groups[j])
    kept = set(zip(kept_i.tolist(), kept_j.tolist()))
    assert len(kept) == len(kept_i)  # no pair twice
    assert set(zip(i[exact].tolist(), j[exact].tolist())) <= kept
    if threshold > 0:  # and it spares the exact IoU most pairs (at 0 any overlap may count)
        assert len(kept) < len(i) / 6
