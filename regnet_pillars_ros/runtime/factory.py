"""`build_detector`: a preset's weights, an inference backend and optionally a CUDA graph,
assembled into a `Detector` (which knows nothing of onnxruntime, export caches or CUDA graphs)."""
from __future__ import annotations

import logging
from pathlib import Path

import torch

from ..model.checkpoint import CONVENTIONS, CheckpointError
from ..model.detector import Detector, resolve_device
from ..model.execution import InferenceBackend
from ..model.presets import get_preset
from ..model.weights import load_network
from .backends import BACKENDS, OnnxRuntimeBackend, TorchBackend
from .cuda_graph import CudaGraphFrame
from .export import cache_dir, cached_export, read_metadata

log = logging.getLogger(__name__)


def build_detector(
    preset: str,
    checkpoint: str | Path | None = None,
    *,
    device: str = "cpu",
    backend: str = "torch",
    precision: str = "fp32",
    cuda_graph: bool = False,
    box_convention: str = "auto",
    verify_sha256: bool = True,
) -> Detector:
    """The detector of `preset` with the weights of `checkpoint` on `device` and `backend`.

    checkpoint: an official-format .pth file, an exported .onnx file (onnxruntime backend),
        None for the weights shipped with the package (nus-regnetx-400mf-fpn, trained on
        synthetic scans) or, for other presets, seeded random placeholder weights (said in the
        log), or "placeholder" for the placeholder weights of any preset.
    backend: 'torch' or 'onnxruntime' (a .pth is exported to ONNX once and cached).
    precision: 'fp32', or on CUDA with the torch backend 'tf32', 'fp16' or 'bf16' ('bf16' on
        CPUs too).
    cuda_graph: replay every step of a frame whose sizes do not depend on the cloud (range filter,
        voxelization, network, top-k decoding: `Detector.fixed_size_frame`) as one CUDA graph
        (torch backend on CUDA); NMS then runs eagerly.
    box_convention: 'auto' reads it from the checkpoint (official v0.1.0 files are 'v0');
        'v0' or 'v1' overrides it.
    Raises ValueError for options that do not fit together, CheckpointError for weights that
    cannot be read or do not fit the preset.
    """
    spec = get_preset(preset)
    if box_convention not in ("auto", *CONVENTIONS):
        raise ValueError(f"box_convention must be auto, v0 or v1, got {box_convention!r}")
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "onnxruntime" and (precision != "fp32" or cuda_graph):
        raise ValueError("the onnxruntime backend runs fp32 exports as they are; "
                         "precision and cuda_graph are torch-backend options")
    torch_device = resolve_device(device)
    if cuda_graph and torch_device.type != "cuda":
        raise ValueError("cuda_graph needs a CUDA device")
    runner: InferenceBackend
    if str(checkpoint).endswith(".onnx"):
        if backend != "onnxruntime":
            raise ValueError(f"{checkpoint} is an ONNX file: use backend 'onnxruntime' "
                             "(or give the .pth checkpoint)")
        meta = read_metadata(checkpoint)
        if meta.get("preset") != preset:
            raise CheckpointError(f"ONNX file {checkpoint} was exported for preset "
                                  f"{meta.get('preset')!r}, not {preset!r}")
        convention, source = meta.get("box_convention", "v1"), str(checkpoint)
        runner = onnxruntime_backend(Path(checkpoint), torch_device)
    else:
        net, convention, source = load_network(spec, checkpoint, verify_sha256)
        if backend == "torch":
            runner = TorchBackend(net, torch_device, precision)
        else:
            runner = onnxruntime_backend(cached_export(net, spec, convention), torch_device)
    if box_convention != "auto":
        convention = box_convention
    log.info("preset %s: weights from %s, box convention %s, %s backend on %s", preset, source,
             convention, backend, torch_device)
    return Detector(spec, runner, convention, torch_device, source,
                    capture=CudaGraphFrame if cuda_graph else None)


def onnxruntime_backend(onnx_path: Path, device: torch.device) -> OnnxRuntimeBackend:
    """onnxruntime on `device`, TensorRT engines cached next to the ONNX exports."""
    return OnnxRuntimeBackend(onnx_path, device, trt_cache_dir=cache_dir() / "tensorrt")
