"""Detector: points in, boxes out, for one preset and one set of weights."""
from __future__ import annotations

import logging
import time
from contextlib import contextmanager
from typing import Callable, Iterator

import numpy as np
import torch

from .checkpoint import CONVENTIONS
from .detections import Detections
from .execution import CapturedFrame, FrameCapture, InferenceBackend
from .head import flatten_maps, level_anchors
from .network import PointPillarsNet
from .placeholder import synthetic_cloud
from .postprocess import Candidates, PostprocessConfig, postprocess, select_candidates
from .presets import Preset
from .voxelize import Pillars, VoxelGrid, voxelize, voxelize_fixed

log = logging.getLogger(__name__)

# A frame's counts after "points_in", in the order `fixed_size_frame` returns them.
FRAME_COUNTS = ("points_nonfinite", "points_in_range", "pillars", "pillar_overflow")


def frame_stats(points_in: int, counts: list[int]) -> dict[str, int]:
    """The `Detections.stats` of a frame: its points, then `counts` in `FRAME_COUNTS` order."""
    return {"points_in": points_in, **dict(zip(FRAME_COUNTS, counts, strict=True))}


def as_model_points(points: np.ndarray | torch.Tensor) -> torch.Tensor:
    """Validate a cloud and return it as a tensor without copying it.

    Accepts [N, 4] (x, y, z, dt) or [N, 5] (x, y, z, intensity, dt), float32 or float64;
    `usable_points` then selects the model's columns and rows on the detector's device.
    """
    tensor = (torch.from_numpy(np.asarray(points)) if not isinstance(points, torch.Tensor)
              else points)
    if tensor.dim() != 2 or tensor.shape[1] not in (4, 5):
        raise ValueError(
            "points must be [N, 4] (x, y, z, dt) or [N, 5] (x, y, z, intensity, dt), "
            f"got shape {tuple(tensor.shape)}"
        )
    if tensor.dtype not in (torch.float32, torch.float64):
        raise ValueError(f"points must be float32 or float64, got {tensor.dtype}")
    return tensor


def model_columns(cloud: torch.Tensor) -> torch.Tensor:
    """float32 [N, 4] (x, y, z, dt) of a validated cloud (slices, so no index from host data)."""
    return (torch.cat((cloud[:, :3], cloud[:, 4:]), dim=1) if cloud.shape[1] == 5
            else cloud).float()


def usable_mask(points: torch.Tensor, lo: torch.Tensor,
                hi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Masks [N] of the finite rows of `points` and of those also strictly inside (lo, hi) (the
    test pipeline's PointsRangeFilter)."""
    finite = torch.isfinite(points).all(dim=1)
    xyz = points[:, :3]
    return finite, finite & ((xyz > lo) & (xyz < hi)).all(dim=1)


def usable_points(cloud: torch.Tensor,
                  point_cloud_range: tuple[float, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """float32 [M, 4] (x, y, z, dt) rows of a validated cloud that are finite and strictly inside
    the range (order kept), and the number of non-finite rows as a 0-d tensor (no host
    synchronisation for it). One pass, on the cloud's device."""
    points = model_columns(cloud)
    finite, usable = usable_mask(points, points.new_tensor(point_cloud_range[:3]),
                                 points.new_tensor(point_cloud_range[3:]))
    return points[usable], finite.logical_not().sum()


def resolve_device(device: str) -> torch.device:
    """'auto' picks CUDA when available; 'cuda' without a GPU is an error that says so."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but torch sees no CUDA GPU "
                         f"(torch {torch.__version__}); use 'cpu' or 'auto'")
    return torch.device(device)


class Detector:
    """One preset with its weights on one device and backend (`runtime.factory.build_detector`
    assembles one). Score threshold and box limit are given per call; the preset's test_cfg
    values (`score_threshold`, `max_detections`) serve calls that give none.

    capture: where given, every frame with points runs `fixed_size_frame` as a `CapturedFrame`
        that ``capture`` builds (a CUDA graph: range filter, voxelization, network, top-k
        decoding; the backend must run padded inputs); NMS then runs eagerly. A capture that
        fails is logged and the frames run eagerly from then on.
    """

    def __init__(self, preset: Preset, backend: InferenceBackend, convention: str,
                 device: torch.device, source: str, capture: FrameCapture | None = None):
        if convention not in CONVENTIONS:
            raise ValueError(f"box convention must be one of {CONVENTIONS}, got {convention!r}")
        if capture is not None and not hasattr(backend, "network_padded"):
            raise ValueError(f"a captured frame needs the torch backend, not {backend.name}")
        self.preset = preset
        self.backend = backend
        self.box_convention = convention
        self.device = device
        self.source = source
        self.score_threshold = preset.test_cfg.score_thr
        self.max_detections = preset.test_cfg.max_num
        self.profile_stages = False  # synchronise and time every stage (benchmarks)
        self._anchors: dict[tuple[int, int, int], torch.Tensor] = {}
        self._grid = VoxelGrid.of(preset.point_cloud_range, preset.voxel_size, device)
        self._capture = capture
        self._captured: CapturedFrame | None = None

    @property
    def cuda_graph(self) -> bool:
        """Whether frames replay a captured graph (False again after a failed capture)."""
        return self._capture is not None

    @property
    def net(self) -> PointPillarsNet:
        """The torch network (torch backend only)."""
        if not isinstance(getattr(self.backend, "net", None), PointPillarsNet):
            raise AttributeError(f"the {self.backend.name} backend has no torch network")
        return self.backend.net

    # -- stages -----------------------------------------------------------------------------

    def preprocess(self, points: np.ndarray | torch.Tensor) -> tuple[Pillars, dict[str, int]]:
        """Validate, keep the finite rows inside the range, voxelize."""
        cloud = as_model_points(points)
        p = self.preset
        # The whole cloud goes to the device as it came: selecting columns and rows there
        # costs the host no pass over the points.
        in_range, nonfinite = usable_points(cloud.to(self.device), p.point_cloud_range)
        pillars = voxelize(in_range, p.point_cloud_range, p.voxel_size, p.max_num_points,
                           p.max_voxels)
        stats = frame_stats(int(cloud.shape[0]), [int(nonfinite), int(in_range.shape[0]),
                                                  pillars.num_pillars, pillars.overflow])
        return pillars, stats

    def anchors(self, level: int, feature_hw: tuple[int, int]) -> torch.Tensor:
        key = (level, *feature_hw)
        if key not in self._anchors:
            self._anchors[key] = level_anchors(self.preset.anchors, level, feature_hw,
                                               self.box_convention, self.device)
        return self._anchors[key]

    def postprocess_config(self, score_threshold: float | None = None,
                           max_detections: int | None = None) -> PostprocessConfig:
        """Decoding and NMS settings; the preset's threshold and box limit where none is given."""
        p = self.preset
        return PostprocessConfig(
            score_thr=float(self.score_threshold if score_threshold is None else score_threshold),
            nms_thr=p.test_cfg.nms_thr,
            nms_pre=p.test_cfg.nms_pre,
            max_num=int(self.max_detections if max_detections is None else max_detections),
            dir_offset=p.dir_offset(self.box_convention),
            dir_limit_offset=p.dir_limit_offset,
            convention=self.box_convention,
        )

    @torch.inference_mode()
    def __call__(self, points: np.ndarray | torch.Tensor, score_threshold: float | None = None,
                 max_detections: int | None = None) -> Detections:
        """Detect boxes in one merged cloud [N, 4] (x, y, z, dt) or [N, 5] (x, y, z, intensity, dt):
        those scoring at least `score_threshold`, at most `max_detections` of them (the preset's
        values where None)."""
        timings: dict[str, float] = {}
        start = time.perf_counter()
        cloud = as_model_points(points)
        replayed = (self._replay_frame(cloud, timings) if self.cuda_graph and cloud.shape[0]
                    else None)
        candidates, stats = replayed or self._run_frame(cloud, timings)
        if candidates is None:
            empty = Detections.empty(self.preset.class_names, self.preset.box_code_size)
            empty.stats, empty.timings_ms = stats, {
                **timings, "total": (time.perf_counter() - start) * 1e3}
            return empty
        with self._stage(timings, "postprocess", always=True):
            boxes, scores, labels = postprocess(
                candidates(), self.postprocess_config(score_threshold, max_detections))
            # One device-to-host copy for the frame's results (labels < 2^24 are exact in float32).
            rows = torch.cat((boxes.float(), scores.float()[:, None], labels.float()[:, None]),
                             dim=1).cpu().numpy()
            result = Detections(
                boxes=rows[:, :-2].copy(),
                scores=rows[:, -2].copy(),
                labels=rows[:, -1].astype(np.int64),
                class_names=self.preset.class_names,
            )
        timings["total"] = (time.perf_counter() - start) * 1e3
        result.timings_ms, result.stats = timings, stats
        return result

    def _run_frame(
        self, cloud: torch.Tensor, timings: dict[str, float]
    ) -> tuple[Callable[[], Candidates] | None, dict[str, int]]:
        """Preprocessing and network, eagerly: (the decoding of the head maps, to be timed with the
        postprocessing, or None without pillars; the frame's counts)."""
        with self._stage(timings, "preprocess", always=True):
            pillars, stats = self.preprocess(cloud)
        if pillars.num_pillars == 0:
            return None, stats
        with self._stage(timings, "inference", always=True):
            maps = self.backend(pillars.network_inputs(), self._fine_stage(timings))
        return lambda: self.candidates(maps), stats

    def _replay_frame(
        self, cloud: torch.Tensor, timings: dict[str, float]
    ) -> tuple[Callable[[], Candidates] | None, dict[str, int]] | None:
        """`_run_frame` through the CUDA graph of `fixed_size_frame`; None (and eager frames from
        then on, said in the log) if the graph cannot be captured."""
        with self._stage(timings, "preprocess", always=True):
            try:
                captured = self._captured_frame(cloud)
            except RuntimeError as err:  # an operation the capture refused: the frame still runs
                log.error("preset %s: capturing the CUDA graph failed, "
                          "running eagerly from now on: %s", self.preset.name, err)
                self._capture, self._captured = None, None
                return None
            captured.load(cloud)
        with self._stage(timings, "graph", always=True):
            *decoded, counts = captured.replay()
            stats = frame_stats(int(cloud.shape[0]), counts.tolist())
        return (lambda: Candidates(*decoded)) if stats["pillars"] else None, stats

    def fixed_size_frame(self, cloud: torch.Tensor,
                         count: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The steps of a frame whose tensor sizes do not depend on the cloud, as a CUDA graph
        replays them: the first `count` (a 0-d tensor) rows of `cloud` [N, 4|5] range-filtered,
        voxelized (`voxelize_fixed`), through the network (torch backend) and decoded into the
        top-k candidates. Returns the `Candidates` fields, then the frame's counts in
        `FRAME_COUNTS` order as a tensor; no host synchronisation."""
        p = self.preset
        points = model_columns(cloud)
        present = torch.arange(points.shape[0], device=points.device) < count
        finite, usable = usable_mask(points, self._grid.lo, self._grid.hi)
        usable &= present
        inputs, counts = voxelize_fixed(points, usable, self._grid, p.max_num_points, p.max_voxels)
        candidates = self.candidates(self.backend.network_padded(inputs))
        nonfinite = (present & finite.logical_not()).sum()
        return (candidates.boxes, candidates.scores, candidates.dir_labels,
                torch.cat((torch.stack((nonfinite, usable.sum())), counts)))

    def _captured_frame(self, cloud: torch.Tensor) -> CapturedFrame:
        """The captured `fixed_size_frame`, captured anew for a cloud it has no room for."""
        if self._captured is None or not self._captured.fits(cloud):
            self._captured = None  # free the old graph's memory before the new capture
            self._captured = self._capture(self.fixed_size_frame, cloud, self.device)
        return self._captured

    def candidates(self, maps: list[torch.Tensor]) -> Candidates:
        """Raw head maps (cls, reg, dir per level) -> decoded top-k candidates of all levels."""
        p = self.preset
        levels = [flatten_maps(*maps[i:i + 3], p.num_classes, p.box_code_size)
                  for i in range(0, len(maps), 3)]
        anchors = [self.anchors(i // 3, tuple(maps[i].shape[-2:])) for i in range(0, len(maps), 3)]
        return select_candidates(levels, anchors, p.test_cfg.nms_pre)

    def _fine_stage(self, timings: dict[str, float]):
        return lambda name: self._stage(timings, name)

    @contextmanager
    def _stage(self, timings: dict[str, float], name: str, always: bool = False) -> Iterator[None]:
        """Time a stage; fine stages only when `profile_stages` (they need device syncs)."""
        if not (always or self.profile_stages):
            yield
            return
        self.synchronize()
        start = time.perf_counter()
        yield
        self.synchronize()
        timings[name] = (time.perf_counter() - start) * 1e3

    def synchronize(self) -> None:
        """Wait for the work this thread queued on the detector's device (a no-op on the CPU).
        The current stream only, not the whole device: during a model swap another thread may be
        capturing a CUDA graph, which a device-wide synchronisation would break."""
        if self.device.type == "cuda":
            torch.cuda.current_stream(self.device).synchronize()

    def warmup(self, points: np.ndarray | None = None, num_points: int = 2000) -> None:
        """Run one frame so that the first real frame pays no start-up costs: on `points` (a
        recent cloud, which also sizes a CUDA graph's buffers), or on a small synthetic cloud."""
        self(synthetic_cloud(self.preset, num_points) if points is None else points)
