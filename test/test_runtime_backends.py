"""Runtime backends: ONNX export and onnxruntime against torch fp32 CPU, provider order, CUDA
paths."""
from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from shared_data import MMDET3D_FIXTURES, require
from torch.utils._python_dispatch import TorchDispatchMode

from regnet_pillars_ros.model import Detector
from regnet_pillars_ros.model.checkpoint import CheckpointError
from regnet_pillars_ros.model.detector import FRAME_COUNTS
from regnet_pillars_ros.model.postprocess import Candidates, physical_bev, postprocess
from regnet_pillars_ros.model.rotated_nms import rotated_iou_bev
from regnet_pillars_ros.runtime.backends import onnx_providers
from regnet_pillars_ros.runtime.export import OPSET, export_onnx, read_metadata
from regnet_pillars_ros.runtime.factory import build_detector
from regnet_pillars_ros.sim.scene import generate_scene
from regnet_pillars_ros.sim.sweeps import simulate_sample
from regnet_pillars_ros.train.data import VAL_SEED_BASE

FIXTURE = MMDET3D_FIXTURES / "nus-regnetx-400mf-secfpn-s11"
PRESET = "nus-regnetx-400mf-secfpn"
TRAINED = "nus-regnetx-400mf-fpn"  # the preset with a bundled trained model
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(),
                                reason="needs a CUDA GPU (run with the device tool)")


@pytest.fixture(scope="module")
def points() -> np.ndarray:
    """The fixture's cloud: the tests that use the mmdet3d fixture take it, and skip without it."""
    return np.load(require(FIXTURE) / "points.npy")


@pytest.fixture(scope="module")
def reference(points):
    return build_detector(PRESET, FIXTURE / "checkpoint.pth")(points)


@pytest.fixture(scope="module")
def onnx_file(tmp_path_factory) -> Path:
    detector = build_detector(PRESET, require(FIXTURE) / "checkpoint.pth")
    path = tmp_path_factory.mktemp("onnx") / "model.onnx"
    report = export_onnx(detector.net, detector.preset, detector.box_convention, path)
    assert report.max_abs_diff < 1e-3 * report.max_abs_value
    return path


def assert_same_detections(got, ref, centre_tol=0.01, score_tol=1e-3):
    """fp32 parity: same labels, centres within 1 cm, scores within 1e-3 (paired by label and
    position)."""
    assert len(got) == len(ref)
    order_g, order_r = (np.lexsort((got.boxes[:, 0], got.labels)),
                        np.lexsort((ref.boxes[:, 0], ref.labels)))
    np.testing.assert_array_equal(got.labels[order_g], ref.labels[order_r])
    np.testing.assert_allclose(got.boxes[order_g, :3], ref.boxes[order_r, :3], atol=centre_tol)
    np.testing.assert_allclose(got.scores[order_g], ref.scores[order_r], atol=score_tol)


def test_export_records_preset_convention_and_opset(onnx_file):
    meta = read_metadata(onnx_file)
    assert (meta["preset"] == PRESET and meta["box_convention"] == "v1"
            and meta["opset"] == str(OPSET))
    assert meta["output_layout"] == "NHWC"  # the backend hands the maps on as NCHW views


def test_onnxruntime_cpu_matches_torch(onnx_file, points, reference):
    detector = build_detector(PRESET, onnx_file, backend="onnxruntime")
    assert detector.backend.providers == ["CPUExecutionProvider"]
    assert_same_detections(detector(points), reference)


def test_pth_with_onnxruntime_exports_once_to_the_cache(tmp_path, monkeypatch, points, reference):
    monkeypatch.setenv("REGNET_PILLARS_CACHE", str(tmp_path))
    detector = build_detector(PRESET, FIXTURE / "checkpoint.pth", backend="onnxruntime")
    exported = list((tmp_path / "onnx").glob("*.onnx"))
    assert len(exported) == 1
    assert_same_detections(detector(points), reference)
    mtime = exported[0].stat().st_mtime_ns
    build_detector(PRESET, FIXTURE / "checkpoint.pth", backend="onnxruntime")
    assert exported[0].stat().st_mtime_ns == mtime


def test_onnx_of_another_preset_is_refused(onnx_file):
    with pytest.raises(CheckpointError, match="exported for preset"):
        build_detector("nus-regnetx-400mf-fpn", onnx_file, backend="onnxruntime")
    with pytest.raises(ValueError, match="use backend 'onnxruntime'"):
        build_detector(PRESET, onnx_file, backend="torch")


def test_bad_backend_and_precision_are_refused():
    with pytest.raises(ValueError, match="backend must be one of"):
        build_detector(PRESET, backend="tensorflow")
    for precision in ("tf32", "fp16"):
        with pytest.raises(ValueError, match=f"{precision} needs a CUDA device"):
            build_detector(PRESET, precision=precision)
    with pytest.raises(ValueError, match="cuda_graph needs a CUDA device"):
        build_detector(PRESET, cuda_graph=True)


def test_provider_order_prefers_tensorrt_then_cuda(tmp_path):
    import onnxruntime as ort

    available = set(ort.get_available_providers())
    names = [p[0] if isinstance(p, tuple) else p
             for p in onnx_providers(torch.device("cuda"), tmp_path / "trt")]
    expected = [p for p in ("TensorrtExecutionProvider", "CUDAExecutionProvider")
                if p in available] + ["CPUExecutionProvider"]
    assert names == expected
    assert onnx_providers(torch.device("cpu")) == ["CPUExecutionProvider"]


@needs_cuda
def test_torch_cuda_fp32_matches_cpu(points, reference):
    assert_same_detections(
        build_detector(PRESET, FIXTURE / "checkpoint.pth", device="cuda")(points), reference)


@needs_cuda
def test_torch_cuda_graph_matches_cpu(points, reference):
    detector = build_detector(PRESET, FIXTURE / "checkpoint.pth", device="cuda", cuda_graph=True)
    for _ in range(2):  # the first frame captures, the second replays
        assert_same_detections(detector(points), reference)
    assert_same_detections(detector(points[::2].copy()),
                           build_detector(PRESET, FIXTURE / "checkpoint.pth")(points[::2].copy()))
    # More points than the graph has room for: captured anew.
    doubled = np.concatenate([points, points])
    assert_same_detections(detector(doubled),
                           build_detector(PRESET, FIXTURE / "checkpoint.pth")(doubled))
    # Replayed: no pillar, no box.
    empty = detector(np.full((100, points.shape[1]), np.nan, np.float32))
    assert (len(empty) == 0 and empty.stats["points_nonfinite"] == 100
            and empty.stats["pillars"] == 0)
    assert detector(points).stats == reference.stats
    assert detector.cuda_graph  # replayed, never fell back to eager frames


@pytest.mark.kernels
def test_fixed_size_frame_gives_the_eager_detections(points, reference):
    """The body of the CUDA graph (`Detector.fixed_size_frame`), run eagerly on the CPU: the first
    `count` rows of a larger buffer, whose other rows hold a stale cloud, give the eager boxes."""
    detector = build_detector(PRESET, FIXTURE / "checkpoint.pth")
    cloud = np.concatenate([points, np.full((7, points.shape[1]), np.nan, np.float32)])
    buffer = torch.from_numpy(np.concatenate([cloud, points[:5000] + 1.0]))
    with torch.inference_mode():
        *decoded, counts = detector.fixed_size_frame(buffer, torch.tensor(cloud.shape[0]))
        boxes, scores, labels = postprocess(Candidates(*decoded), detector.postprocess_config())
    eager = detector(cloud)
    stats = dict(zip(FRAME_COUNTS, counts.tolist()))
    assert stats == {key: eager.stats[key] for key in stats} and stats["points_nonfinite"] == 7
    np.testing.assert_array_equal(labels.numpy(), reference.labels)
    # The same float32 operations on the same rows (bit-identical on AVX2 and SSE4.1 kernels);
    # 1e-5 (2.6 ulp of a 50 m coordinate) allows a kernel that orders its sums by row count.
    np.testing.assert_allclose(boxes.numpy(), reference.boxes, atol=1e-5)
    np.testing.assert_allclose(scores.numpy(), reference.scores, atol=1e-6)
    # A float64 [N, 4] cloud (no intensity column) gives the same counts; no live row, no pillar.
    four = torch.from_numpy(np.delete(cloud, 3, axis=1).astype(np.float64))
    with torch.inference_mode():
        assert (detector.fixed_size_frame(four, torch.tensor(four.shape[0]))[-1].tolist()
                == counts.tolist())
        assert detector.fixed_size_frame(four, torch.tensor(0))[-1].tolist() == [0, 0, 0, 0]


def test_failed_graph_capture_falls_back_to_eager_frames(points, reference, caplog):
    """A capture that fails (an operation the GPU's capture refuses) costs no frame: it is logged
    and the detector runs eagerly from then on. (No GPU here: the capture given to the detector
    refuses.)"""
    built = build_detector(PRESET, FIXTURE / "checkpoint.pth")
    attempts = []

    def refuse(fn, cloud, device):
        attempts.append(cloud.shape)
        raise RuntimeError("operation not permitted when stream is capturing")

    detector = Detector(built.preset, built.backend, built.box_convention, built.device,
                        built.source, capture=refuse)
    assert detector.cuda_graph
    assert_same_detections(detector(points), reference)
    assert not detector.cuda_graph and "capturing the CUDA graph failed" in caplog.text
    assert_same_detections(detector(points), reference)
    assert len(attempts) == 1  # no second capture after the failure


class SyncRecorder(TorchDispatchMode):
    """Records dispatched operations that a CUDA graph cannot capture: host synchronisations
    (nonzero, boolean indexing, item) and tensors made from host data. (`tolist` reaches no
    dispatch and goes unseen.)"""

    NAMES = ("nonzero", "_local_scalar_dense", "lift_fresh", "masked_select", "unique",
             "repeat_interleave")
    INDEXING = ("aten.index.Tensor", "aten.index_put_.default", "aten.index_put.default")

    def __init__(self):
        super().__init__()
        self.ops = 0
        self.uncapturable: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = str(func)
        indices = args[1] if name in self.INDEXING else ()
        if (any(n in name for n in self.NAMES)
                or any(isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in indices)):
            self.uncapturable.append(name)
        self.ops += 1
        return func(*args, **(kwargs or {}))


def test_fixed_size_frame_needs_no_host_synchronisation(points):
    detector = build_detector(PRESET, FIXTURE / "checkpoint.pth")
    buffer, count = torch.from_numpy(points), torch.tensor(points.shape[0])
    with torch.inference_mode():
        detector.fixed_size_frame(buffer, count)  # anchors are made once, before a capture
        with SyncRecorder() as graphed:
            detector.fixed_size_frame(buffer, count)
        with SyncRecorder() as eager:  # the recorder sees what the eager path does
            detector.preprocess(points)
    assert graphed.ops > 100 and graphed.uncapturable == []
    assert ({"aten.nonzero.default", "aten.index.Tensor", "aten.lift_fresh.default"}
            <= set(eager.uncapturable))


@needs_cuda
def test_cuda_graph_capture_while_another_detector_runs_frames(points, reference):
    """A model swap: the new detector captures its graph on one thread while the old one keeps
    replaying frames on another; no frame fails and neither falls back to eager frames."""
    old = build_detector(PRESET, FIXTURE / "checkpoint.pth", device="cuda", cuda_graph=True)
    old(points)
    frames, errors, stop = [], [], threading.Event()

    def run_old():
        try:
            while not stop.is_set():
                frames.append(old(points))
        except Exception as exc:  # reported below, in the test's thread
            errors.append(exc)

    worker = threading.Thread(target=run_old)
    worker.start()
    try:
        new = build_detector(PRESET, FIXTURE / "checkpoint.pth", device="cuda", cuda_graph=True)
        new.warmup(points)
    finally:
        stop.set()
        worker.join()
    assert errors == [] and len(frames) > 0 and old.cuda_graph and new.cuda_graph
    assert_same_detections(frames[-1], reference)
    assert_same_detections(new(points), reference)


@pytest.fixture(scope="module")
def trained_scan() -> tuple[np.ndarray, object]:
    """A held-out synthetic scan and the bundled trained model's fp32 CPU detections of it (random
    weights are no judge of reduced precision: their scores sit on knife edges)."""
    scene = generate_scene(VAL_SEED_BASE + 770)
    points = simulate_sample(scene, 20, seed=VAL_SEED_BASE + 770).points
    return points, build_detector(TRAINED)(points)


def match_rate(reference, got, min_score: float = 0.3) -> float:
    """Share of the reference boxes scoring > min_score that a same-class box with BEV IoU > 0.9
    matches."""
    strong = reference.scores > min_score
    assert strong.sum() >= 10
    ref_bev = physical_bev(torch.from_numpy(reference.boxes[strong]), "v1")
    got_bev = physical_bev(torch.from_numpy(got.boxes), "v1")
    iou = rotated_iou_bev(ref_bev, got_bev).numpy()
    same_class = reference.labels[strong][:, None] == got.labels[None, :]
    return float(((iou > 0.9) & same_class).any(axis=1).mean())


@needs_cuda
@pytest.mark.parametrize("precision,cuda_graph,rate", [
    ("tf32", False, 0.99), ("fp16", False, 0.99), ("fp16", True, 0.99),
    ("bf16", False, 0.85),  # 39 of 44 on an H200: its 8-bit mantissa misses the 99% criterion
])
def test_torch_cuda_reduced_precision_match_rate(trained_scan, precision, cuda_graph, rate):
    """Trained weights: at least 99% of the strong boxes matched for tf32 and fp16, the measured
    share for bf16."""
    points, reference = trained_scan
    got = build_detector(TRAINED, device="cuda", precision=precision, cuda_graph=cuda_graph)(points)
    measured = match_rate(reference, got)
    print(f"{precision}{' + CUDA graph' if cuda_graph else ''}: "
          f"{measured:.3f} of the boxes matched")
    assert measured >= rate


def test_torch_cpu_bf16_match_rate(trained_scan):
    """bf16 autocast on the CPU (43 of 44 boxes on this scan with oneDNN's bf16 convolutions)."""
    points, reference = trained_scan
    assert match_rate(reference, build_detector(TRAINED, precision="bf16")(points)) >= 0.95


@needs_cuda
def test_onnxruntime_gpu_provider_matches_torch(onnx_file, points, reference):
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip("this onnxruntime build has no CUDA provider")
    detector = build_detector(PRESET, onnx_file, backend="onnxruntime", device="cuda")
    if detector.backend.providers[0] == "CPUExecutionProvider":
        pytest.skip("the CUDA provider is listed but could not start (CUDA libraries missing)")
    assert_same_detections(detector(points), reference)
