"""Detector: points in, boxes out, for one preset and one set of weights."""
from __future__ import annotations

import logging
import time
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator

import numpy as np
import torch

from .bundled import BUNDLED_NOTE, PLACEHOLDER, bundled_checkpoint
from .checkpoint import CONVENTIONS, CheckpointError, box_convention_of, load_into, read_checkpoint
from .detections import Detections
from .head import flatten_maps, level_anchors
from .network import PointPillarsNet
from .placeholder import placeholder_weights, synthetic_cloud
from .postprocess import Candidates, PostprocessConfig, postprocess, select_candidates
from .presets import Preset, get_preset
from .voxelize import Pillars, VoxelGrid, voxelize, voxelize_fixed

if TYPE_CHECKING:
    from ..runtime.backends import InferenceBackend
    from ..runtime.cuda_graph import CapturedFrame

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
    tensor = torch.from_numpy(np.asarray(points)) if not isinstance(points, torch.Tensor) else points
    if tensor.dim() != 2 or tensor.shape[1] not in (4, 5):
        raise ValueError(
            f"points must be [N, 4] (x, y, z, dt) or [N, 5] (x, y, z, intensity, dt), got shape {tuple(tensor.shape)}"
        )
    if tensor.dtype not in (torch.float32, torch.float64):
        raise ValueError(f"points must be float32 or float64, got {tensor.dtype}")
    return tensor


def model_columns(cloud: torch.Tensor) -> torch.Tensor:
    """float32 [N, 4] (x, y, z, dt) of a validated cloud (slices, so no index from host data)."""
    return (torch.cat((cloud[:, :3], cloud[:, 4:]), dim=1) if cloud.shape[1] == 5 else cloud).float()


def usable_mask(points: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Masks [N] of the finite rows of `points` and of those also strictly inside (lo, hi) (the
    test pipeline's PointsRangeFilter)."""
    finite = torch.isfinite(points).all(dim=1)
    xyz = points[:, :3]
    return finite, finite & ((xyz > lo) & (xyz < hi)).all(dim=1)


def usable_points(cloud: torch.Tensor, point_cloud_range: tuple[float, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """float32 [M, 4] (x, y, z, dt) rows of a validated cloud that are finite and strictly inside
    the range (order kept), and the number of non-finite rows as a 0-d tensor (no host
    synchronisation for it). One pass, on the cloud's device."""
    points = model_columns(cloud)
    finite, usable = usable_mask(points, points.new_tensor(point_cloud_range[:3]), points.new_tensor(point_cloud_range[3:]))
    return points[usable], finite.logical_not().sum()


def resolve_device(device: str) -> torch.device:
    """'auto' picks CUDA when available; 'cuda' without a GPU is an error that says so."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but torch sees no CUDA GPU (torch {torch.__version__}); use 'cpu' or 'auto'")
    return torch.device(device)


class Detector:
    """One preset with its weights on one device and backend. Thresholds may change between calls."""

    def __init__(self, preset: Preset, backend: "InferenceBackend", convention: str, device: torch.device, source: str,
                 cuda_graph: bool = False):
        if convention not in CONVENTIONS:
            raise ValueError(f"box convention must be one of {CONVENTIONS}, got {convention!r}")
        if cuda_graph and device.type != "cuda":
            raise ValueError("cuda_graph needs a CUDA device")
        if cuda_graph and not hasattr(backend, "network_padded"):
            raise ValueError(f"cuda_graph needs the torch backend, not {backend.name}")
        self.preset = preset
        self.backend = backend
        self.box_convention = convention
        self.device = device
        self.source = source
        self.score_threshold = preset.test_cfg.score_thr
        self.max_detections = preset.test_cfg.max_num
        self.cuda_graph = cuda_graph
        self.profile_stages = False  # synchronise and time every stage (benchmarks)
        self._anchors: dict[tuple[int, int, int], torch.Tensor] = {}
        self._grid = VoxelGrid.of(preset.point_cloud_range, preset.voxel_size, device)
        self._captured: "CapturedFrame | None" = None

    @property
    def net(self) -> PointPillarsNet:
        """The torch network (torch backend only)."""
        if not isinstance(getattr(self.backend, "net", None), PointPillarsNet):
            raise AttributeError(f"the {self.backend.name} backend has no torch network")
        return self.backend.net

    @classmethod
    def from_preset(
        cls,
        name: str,
        checkpoint: str | Path | None = None,
        device: str = "cpu",
        box_convention: str = "auto",
        verify_sha256: bool = True,
        backend: str = "torch",
        precision: str = "fp32",
        cuda_graph: bool = False,
    ) -> "Detector":
        """Build preset `name` with the weights of `checkpoint` on `device` and `backend`.

        checkpoint: an official-format .pth file, an exported .onnx file (onnxruntime backend),
            None for the weights shipped with the package (nus-regnetx-400mf-fpn, trained on
            synthetic scans) or, for other presets, seeded random placeholder weights (said in the
            log), or "placeholder" for the placeholder weights of any preset.
        box_convention: 'auto' reads it from the checkpoint (official v0.1.0 files are 'v0');
            'v0' or 'v1' overrides it.
        backend: 'torch' or 'onnxruntime' (a .pth is exported to ONNX once and cached).
        precision: 'fp32', or on CUDA with the torch backend 'tf32', 'fp16' or 'bf16'.
        cuda_graph: replay every step of a frame whose sizes do not depend on the cloud (range filter,
            voxelization, network, top-k decoding: `fixed_size_frame`) as one CUDA graph (torch
            backend on CUDA); NMS then runs eagerly.
        """
        # The runtime layer builds on the model layer: imported here, not at module level.
        from ..runtime.backends import BACKENDS, OnnxRuntimeBackend, TorchBackend
        from ..runtime.export import cache_dir, cached_export, read_metadata

        preset = get_preset(name)
        if box_convention not in ("auto", *CONVENTIONS):
            raise ValueError(f"box_convention must be auto, v0 or v1, got {box_convention!r}")
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        torch_device = resolve_device(device)
        shipped = bundled_checkpoint(name)
        if checkpoint is None or str(checkpoint) == "":
            checkpoint = shipped or PLACEHOLDER
        bundled = shipped is not None and checkpoint == shipped
        if str(checkpoint).endswith(".onnx"):
            if backend != "onnxruntime":
                raise ValueError(f"{checkpoint} is an ONNX file: use backend 'onnxruntime' (or give the .pth checkpoint)")
            meta = read_metadata(checkpoint)
            if meta.get("preset") != name:
                raise CheckpointError(f"ONNX file {checkpoint} was exported for preset {meta.get('preset')!r}, not {name!r}")
            convention, source = meta.get("box_convention", "v1"), str(checkpoint)
            onnx_path = Path(checkpoint)
        else:
            net = PointPillarsNet(preset)
            if str(checkpoint) == PLACEHOLDER:
                placeholder_weights(net, preset, preset.test_cfg.score_thr)
                convention, source = "v1", "seeded random placeholder weights (detections are meaningless)"
                log.warning("preset %s: no trained weights given, using %s", name, source)
            else:
                ckpt = read_checkpoint(checkpoint, verify_sha256=verify_sha256)
                load_into(net, ckpt, preset)
                convention, source = box_convention_of(ckpt.meta), str(checkpoint)
                if bundled:
                    source = f"the bundled default model ({BUNDLED_NOTE}): {checkpoint}"
            if backend == "onnxruntime":
                onnx_path = cached_export(net, preset, convention)
        if box_convention != "auto":
            convention = box_convention
        if backend == "torch":
            runner: "InferenceBackend" = TorchBackend(net, torch_device, precision)
        else:
            if precision != "fp32" or cuda_graph:
                raise ValueError("the onnxruntime backend runs fp32 exports as they are; precision and cuda_graph "
                                 "are torch-backend options")
            runner = OnnxRuntimeBackend(onnx_path, torch_device, trt_cache_dir=cache_dir() / "tensorrt")
        log.info("preset %s: weights from %s, box convention %s, %s backend on %s", name, source, convention, backend, torch_device)
        return cls(preset, runner, convention, torch_device, source, cuda_graph=cuda_graph)

    # -- stages -----------------------------------------------------------------------------

    def preprocess(self, points: np.ndarray | torch.Tensor) -> tuple[Pillars, dict[str, int]]:
        """Validate, keep the finite rows inside the range, voxelize."""
        cloud = as_model_points(points)
        p = self.preset
        # The whole cloud goes to the device as it came: selecting columns and rows there
        # costs the host no pass over the points.
        in_range, nonfinite = usable_points(cloud.to(self.device), p.point_cloud_range)
        pillars = voxelize(in_range, p.point_cloud_range, p.voxel_size, p.max_num_points, p.max_voxels)
        stats = frame_stats(int(cloud.shape[0]), [int(nonfinite), int(in_range.shape[0]), pillars.num_pillars, pillars.overflow])
        return pillars, stats

    def anchors(self, level: int, feature_hw: tuple[int, int]) -> torch.Tensor:
        key = (level, *feature_hw)
        if key not in self._anchors:
            self._anchors[key] = level_anchors(self.preset.anchors, level, feature_hw, self.box_convention, self.device)
        return self._anchors[key]

    def postprocess_config(self) -> PostprocessConfig:
        p = self.preset
        return PostprocessConfig(
            score_thr=float(self.score_threshold),
            nms_thr=p.test_cfg.nms_thr,
            nms_pre=p.test_cfg.nms_pre,
            max_num=int(self.max_detections),
            dir_offset=p.dir_offset(self.box_convention),
            dir_limit_offset=p.dir_limit_offset,
            convention=self.box_convention,
        )

    @torch.inference_mode()
    def __call__(self, points: np.ndarray | torch.Tensor) -> Detections:
        """Detect boxes in one merged cloud [N, 4] (x, y, z, dt) or [N, 5] (x, y, z, intensity, dt)."""
        timings: dict[str, float] = {}
        start = time.perf_counter()
        cloud = as_model_points(points)
        replayed = self._replay_frame(cloud, timings) if self.cuda_graph and cloud.shape[0] else None
        candidates, stats = replayed or self._run_frame(cloud, timings)
        if candidates is None:
            empty = Detections.empty(self.preset.class_names, self.preset.box_code_size)
            empty.stats, empty.timings_ms = stats, {**timings, "total": (time.perf_counter() - start) * 1e3}
            return empty
        with self._stage(timings, "postprocess", always=True):
            boxes, scores, labels = postprocess(candidates(), self.postprocess_config())
            # One device-to-host copy for the frame's results (labels < 2^24 are exact in float32).
            rows = torch.cat((boxes.float(), scores.float()[:, None], labels.float()[:, None]), dim=1).cpu().numpy()
            result = Detections(
                boxes=rows[:, :-2].copy(),
                scores=rows[:, -2].copy(),
                labels=rows[:, -1].astype(np.int64),
                class_names=self.preset.class_names,
            )
        timings["total"] = (time.perf_counter() - start) * 1e3
        result.timings_ms, result.stats = timings, stats
        return result

    def _run_frame(self, cloud: torch.Tensor, timings: dict[str, float]) -> tuple[Callable[[], Candidates] | None, dict[str, int]]:
        """Preprocessing and network, eagerly: (the decoding of the head maps, to be timed with the
        postprocessing, or None without pillars; the frame's counts)."""
        with self._stage(timings, "preprocess", always=True):
            pillars, stats = self.preprocess(cloud)
        if pillars.num_pillars == 0:
            return None, stats
        with self._stage(timings, "inference", always=True):
            maps = self.backend(pillars.network_inputs(), self._fine_stage(timings))
        return lambda: self.candidates(maps), stats

    def _replay_frame(self, cloud: torch.Tensor, timings: dict[str, float]) -> tuple[Callable[[], Candidates] | None, dict[str, int]] | None:
        """`_run_frame` through the CUDA graph of `fixed_size_frame`; None (and eager frames from
        then on, said in the log) if the graph cannot be captured."""
        with self._stage(timings, "preprocess", always=True):
            try:
                captured = self._captured_frame(cloud)
            except RuntimeError as err:  # an operation the capture refused: the frame still runs
                log.error("preset %s: capturing the CUDA graph failed, running eagerly from now on: %s", self.preset.name, err)
                self.cuda_graph, self._captured = False, None
                return None
            captured.load(cloud)
        with self._stage(timings, "graph", always=True):
            *decoded, counts = captured.replay()
            stats = frame_stats(int(cloud.shape[0]), counts.tolist())
        return (lambda: Candidates(*decoded)) if stats["pillars"] else None, stats

    def fixed_size_frame(self, cloud: torch.Tensor, count: torch.Tensor) -> tuple[torch.Tensor, ...]:
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
        return candidates.boxes, candidates.scores, candidates.dir_labels, torch.cat((torch.stack((nonfinite, usable.sum())), counts))

    def _captured_frame(self, cloud: torch.Tensor) -> "CapturedFrame":
        """The CUDA graph of `fixed_size_frame`, captured anew for a cloud it has no room for."""
        from ..runtime.cuda_graph import CapturedFrame

        if self._captured is None or not self._captured.fits(cloud):
            self._captured = None  # free the old graph's memory before the new capture
            self._captured = CapturedFrame(self.fixed_size_frame, cloud, self.device)
        return self._captured

    def candidates(self, maps: list[torch.Tensor]) -> Candidates:
        """Raw head maps (cls, reg, dir per level) -> decoded top-k candidates of all levels."""
        p = self.preset
        levels = [flatten_maps(*maps[i:i + 3], p.num_classes, p.box_code_size) for i in range(0, len(maps), 3)]
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
