"""Stage-by-stage parity with the real mmdetection3d 1.4 (fixtures in
../shared/fixtures/mmdet3d)."""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from regnet_pillars_ros.runtime.factory import build_detector

FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "mmdet3d"
CASES = {"nus-regnetx-400mf-secfpn-s11": "nus-regnetx-400mf-secfpn", "lyft-fpn-s12": "lyft-fpn"}

pytestmark = [pytest.mark.skipif(not FIXTURES.is_dir(), reason=f"fixtures not found at {FIXTURES}"),
              pytest.mark.kernels]


class Case:
    """One fixture folder, run once through the detector with every intermediate kept."""

    def __init__(self, folder: str):
        self.dir = FIXTURES / folder
        self.meta = json.loads((self.dir / "meta.json").read_text())
        self.detector = build_detector(CASES[folder], self.dir / "checkpoint.pth")
        self.points = np.load(self.dir / "points.npy")
        self.expected = {name: np.load(self.dir / "expected" / f"{name}.npz")
                         for name in ("voxelization", "features", "nms_io", "result")}
        net = self.detector.net
        with torch.inference_mode():
            self.pillars, _ = self.detector.preprocess(self.points)
            self.pillar_features = net.pts_voxel_encoder(*self.pillars.network_inputs())
            canvas = net.encode(*self.pillars.network_inputs())
            backbone = net.pts_backbone(canvas)
            neck = net.pts_neck(backbone)
            head = net.pts_bbox_head(neck)
        self.maps = {"bev_canvas": canvas}
        self.maps.update({f"backbone.{i}": x for i, x in enumerate(backbone)})
        self.maps.update({f"neck.{i}": x for i, x in enumerate(neck)})
        for lvl, (cls, reg, direction) in enumerate(head):
            self.maps.update({f"head.cls_score.{lvl}": cls, f"head.bbox_pred.{lvl}": reg,
                              f"head.dir_cls_pred.{lvl}": direction})
        self.candidates = self.detector.candidates([m for level in head for m in level])
        self.result = self.detector(self.points)


@pytest.fixture(scope="module", params=list(CASES))
def case(request) -> Case:
    return Case(request.param)


def test_model_input_matches_range_mask(case: Case):
    mask = np.load(case.dir / "range_mask.npy")
    assert (case.result.stats["points_in_range"] == int(mask.sum())
            == case.meta["num_points_model_input"])


def test_voxelization_is_exact(case: Case):
    exp = case.expected["voxelization"]
    p = case.pillars
    assert p.num_pillars == case.meta["num_voxels"]
    np.testing.assert_array_equal(p.coors.numpy(), exp["coors"][:, 1:])
    np.testing.assert_array_equal(p.num_points.numpy(), exp["num_points"])
    n = exp["point_voxel"].shape[0]
    voxel, slot = np.full(n, -1), np.full(n, -1)
    voxel[p.source_index.numpy()] = p.point_pillar.numpy()
    slot[p.source_index.numpy()] = p.point_slot.numpy()
    np.testing.assert_array_equal(voxel, exp["point_voxel"])
    np.testing.assert_array_equal(slot, exp["point_slot"])


def test_pillar_features(case: Case):
    expected = case.expected["features"]["pillar_features#f16"].astype(np.float32)
    # The reference is stored as float16: 2^-11 relative precision.
    np.testing.assert_allclose(case.pillar_features.numpy(), expected, rtol=1e-3, atol=1e-3)


def _summaries(case: Case):
    features = case.expected["features"]
    for key in features.files:
        match = re.fullmatch(r"([^#]+)(?:#(chan_mean|chan_absmean|chan_max"
                             r"|crop_c8x8@(\d+),(\d+)|sub_stride(\d+)))?", key)
        if match and match.group(1) in case.maps:
            yield key, match, features[key]


def test_every_fixture_summary_is_compared(case: Case):
    used = {key for key, _, _ in _summaries(case)}
    skipped = [k for k in case.expected["features"].files
               if k not in used and not k.startswith("pillar_features")]
    assert not skipped, f"fixture summaries with no matching map: {skipped}"
    assert ({m.group(1).split(".")[0] for _, m, _ in _summaries(case)}
            == {"bev_canvas", "backbone", "neck", "head"})
    for name, shape in case.meta["tensor_shapes"].items():
        if name in case.maps:
            assert list(case.maps[name].shape) == shape, name


def test_intermediate_maps(case: Case):
    for key, match, expected in _summaries(case):
        x = case.maps[match.group(1)][0].float()
        kind = match.group(2)
        if kind is None:  # small maps are stored whole, with the batch dimension
            got, expected = x, expected[0]
        elif kind == "chan_mean":
            got = x.mean(dim=(1, 2))
        elif kind == "chan_absmean":
            got = x.abs().mean(dim=(1, 2))
        elif kind == "chan_max":
            got = x.amax(dim=(1, 2))
        elif kind.startswith("crop"):
            h0, w0 = int(match.group(3)), int(match.group(4))
            got = x[:, h0:h0 + 8, w0:w0 + 8]
        else:
            s = int(match.group(5))
            got = x[:, ::s, ::s]
        # Float16 summaries carry ~5e-4 relative error; float32 ones differ only by summation
        # order, which grows with depth: tolerances scale with the map's magnitude.
        scale = float(np.abs(expected).max()) or 1.0
        rtol, atol = ((2e-3, 2e-4 * scale) if expected.dtype == np.float16
                      else (1e-4, 2e-4 + 2e-5 * scale))
        np.testing.assert_allclose(got.numpy(), expected.astype(np.float32), rtol=rtol, atol=atol,
                                   err_msg=key)


def test_nms_candidates(case: Case):
    """Same decoded top-k candidates; rows with near-equal scores may come in another order."""
    exp = case.expected["nms_io"]
    boxes = case.candidates.boxes.numpy()
    assert boxes.shape == exp["in_bboxes"].shape
    pair = np.abs(boxes[:, None, :] - exp["in_bboxes"][None, :, :]).max(axis=-1).argmin(axis=1)
    assert len(set(pair.tolist())) == len(pair), "candidates do not pair up one to one"
    np.testing.assert_allclose(boxes, exp["in_bboxes"][pair], rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(case.candidates.scores.numpy(), exp["in_scores"][pair, :-1],
                               rtol=1e-4, atol=2e-5)
    np.testing.assert_array_equal(case.candidates.dir_labels.numpy(), exp["in_dir_scores"][pair])


def test_final_boxes_match_per_label(case: Case):
    exp = case.expected["result"]
    got = case.result
    np.testing.assert_array_equal(np.bincount(got.labels, minlength=10),
                                  np.bincount(exp["labels"], minlength=10))
    assert got.boxes.shape[1] == exp["boxes"].shape[1]
    for label in np.unique(exp["labels"]):
        mine, ref = got.boxes[got.labels == label], exp["boxes"][exp["labels"] == label]
        mine_s, ref_s = got.scores[got.labels == label], exp["scores"][exp["labels"] == label]
        nearest = np.linalg.norm(mine[:, None, :3] - ref[None, :, :3], axis=-1).argmin(axis=1)
        assert len(set(nearest.tolist())) == len(ref), (
            f"label {label}: boxes do not pair up one to one")
        ref, ref_s = ref[nearest], ref_s[nearest]
        yaw_err = np.abs((mine[:, 6] - ref[:, 6] + np.pi) % (2 * np.pi) - np.pi)
        assert yaw_err.max() < 1e-3
        np.testing.assert_allclose(np.delete(mine, 6, axis=1), np.delete(ref, 6, axis=1), atol=1e-3)
        np.testing.assert_allclose(mine_s, ref_s, atol=1e-4)
