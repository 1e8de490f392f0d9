"""ONNX export of the network (pillar encoder through head) with a dynamic pillar count.

The graph takes the pillar tensors `points [P, 4]`, `point_pillar [P]`, `coors [M, 3]`,
`num_points [M]` and returns the raw head maps, so voxelization and decoding/NMS stay in torch.
The file records the preset, the box convention and the opset in its metadata, and every export
is checked against torch on a cloud other than the one it was traced with.
"""
from __future__ import annotations

import copy
import hashlib
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from ..model.network import PointPillarsNet, fold_batchnorm
from ..model.placeholder import synthetic_cloud
from ..model.presets import Preset
from ..model.voxelize import Pillars, voxelize

OPSET = 18  # ScatterND with reduction="max" (the pillar max) needs opset 18
# Bumped whenever the exported graph changes, so that caches of older exports are not reused
# (2: the pillar encoder's scatters became row-wise ScatterND; 3: BatchNorm folded, the last
# encoder layer pooled before its activation, head maps returned NHWC).
GRAPH_VERSION = 3
# Layout of the exported head maps, recorded in the metadata ("output_layout"); exports without
# it are NCHW. NHWC rows are the anchors' rows, so decoding reads them without a copy.
OUTPUT_LAYOUT = "NHWC"
INPUT_NAMES = ("points", "point_pillar", "coors", "num_points")


def cache_dir() -> Path:
    """Where exports are cached: $REGNET_PILLARS_CACHE or ~/.cache/regnet_pillars_ros."""
    return Path(os.environ.get("REGNET_PILLARS_CACHE",
                               Path.home() / ".cache" / "regnet_pillars_ros"))


@dataclass(frozen=True)
class ExportReport:
    path: Path
    opset: int
    max_abs_diff: float  # torch vs onnxruntime CPU on the validation cloud
    max_abs_value: float


def output_names(num_levels: int) -> list[str]:
    return [f"{kind}_{level}" for level in range(num_levels) for kind in ("cls", "reg", "dir")]


def sample_pillars(preset: Preset, seed: int) -> Pillars:
    p = preset
    return voxelize(synthetic_cloud(p, 8_000 + 3_000 * seed, seed), p.point_cloud_range,
                    p.voxel_size, p.max_num_points, p.max_voxels)


def export_onnx(net: PointPillarsNet, preset: Preset, convention: str, path: str | Path,
                opset: int = OPSET, tolerance: float = 1e-3) -> ExportReport:
    """Export `net` to `path`, record metadata, and validate against torch (raises ValueError on
    mismatch).

    The graph is that of a copy with BatchNorm folded (`fold_batchnorm`), which lets the pillar
    encoder pool its last layer before activating it, and returns the head maps NHWC
    (`OUTPUT_LAYOUT`); validation compares it with `net` as given.
    """
    import onnx

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    net = net.cpu().eval()
    folded = copy.deepcopy(net)
    fold_batchnorm(folded)
    trace = sample_pillars(preset, seed=0)
    dynamic = {"points": {0: "P"}, "point_pillar": {0: "P"}, "coors": {0: "M"},
               "num_points": {0: "M"}}
    names = output_names(len(preset.anchors.scales))
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and tracer notes
        torch.onnx.export(
            _NHWCMaps(folded), trace.network_inputs(), str(path), dynamo=False, opset_version=opset,
            input_names=list(INPUT_NAMES), output_names=names, dynamic_axes=dynamic,
        )
    model = onnx.load(str(path))
    for key, value in {"preset": preset.name, "box_convention": convention, "opset": str(opset),
                       "graph_version": str(GRAPH_VERSION), "output_layout": OUTPUT_LAYOUT,
                       "producer": "regnet_pillars_ros", "torch": torch.__version__}.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(model, str(path))
    report = validate(net, preset, path, opset)
    if report.max_abs_diff > tolerance * max(1.0, report.max_abs_value):
        raise ValueError(f"ONNX export {path} differs from torch by {report.max_abs_diff:.3g} "
                         f"(tolerance {tolerance:g} relative)")
    return report


class _NHWCMaps(torch.nn.Module):
    """The network with its head maps permuted to NHWC, as exported."""

    def __init__(self, net: PointPillarsNet):
        super().__init__()
        self.net = net

    def forward(self, *pillars: torch.Tensor) -> list[torch.Tensor]:
        return [m.permute(0, 2, 3, 1) for m in self.net(*pillars)]


def validate(net: PointPillarsNet, preset: Preset, path: Path, opset: int) -> ExportReport:
    """Largest difference between torch and onnxruntime (CPU) on a cloud not used for tracing."""
    from .backends import OnnxRuntimeBackend

    inputs = sample_pillars(preset, seed=1).network_inputs()
    with torch.no_grad():
        expected = net(*inputs)
    got = OnnxRuntimeBackend(path, torch.device("cpu"))(inputs)
    diff = max(float((a - b).abs().max()) for a, b in zip(expected, got))
    peak = max(float(a.abs().max()) for a in expected)
    return ExportReport(path, opset, diff, peak)


def read_metadata(path: str | Path) -> dict[str, str]:
    """The metadata an export recorded (preset, box_convention, opset, ...)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return {p.key: p.value for p in model.metadata_props}


def cached_export(net: PointPillarsNet, preset: Preset, convention: str) -> Path:
    """Export once per set of weights: the file name carries a hash of the state dict."""
    digest = hashlib.sha256()
    for key, value in net.state_dict().items():
        digest.update(key.encode())
        digest.update(value.detach().cpu().numpy().tobytes())
    name = (f"{preset.name}-{convention}-opset{OPSET}-graph{GRAPH_VERSION}-"
            f"{digest.hexdigest()[:16]}.onnx")
    path = cache_dir() / "onnx" / name
    if not path.is_file():
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        export_onnx(net, preset, convention, tmp)
        tmp.replace(path)
    return path
