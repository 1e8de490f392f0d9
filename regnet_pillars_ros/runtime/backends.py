"""Inference backends: run the network from pillars to raw head maps, behind the model layer's
`InferenceBackend` interface (model/execution.py). Voxelization before and decoding/NMS after stay
in torch on the detector's device.
"""
from __future__ import annotations

import contextlib
import copy
import logging
import threading
from pathlib import Path
from typing import ContextManager

import numpy as np
import torch

from ..model.execution import NetworkInputs, StageTimer, no_timing
from ..model.network import PointPillarsNet, fold_batchnorm
from .choices import BACKENDS, PRECISIONS  # noqa: F401 (BACKENDS: for importers of this module)

AUTOCAST_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}
CUDA_ONLY = ("tf32", "fp16")

log = logging.getLogger(__name__)
_cudnn_lock = threading.Lock()
_cudnn_tf32: bool | None = None  # the TF32 setting this process gave cuDNN, None before the first


def use_cudnn(precision: str) -> None:
    """Set cuDNN's process-wide flags for `precision` (autotuned convolutions; TF32 only for
    tf32), once per process and precision. They are never entered and left around each frame:
    `torch.backends.cudnn.flags` restores the flags it found on exit, so during a model swap one
    thread's exit could switch TF32 back on under the other thread's fp32 frame or graph capture.
    A process runs one CUDA precision at a time (the node's `precision` is fixed at start)."""
    global _cudnn_tf32
    tf32 = precision == "tf32"
    with _cudnn_lock:
        if _cudnn_tf32 == tf32:
            return
        if _cudnn_tf32 is not None:
            log.warning("cuDNN TF32 switched %s for precision %s: "
                        "CUDA detectors built earlier in this process follow it",
                        "on" if tf32 else "off", precision)
        torch.backends.cudnn.enabled = True
        torch.backends.cudnn.benchmark = True
        torch.backends.cudnn.allow_tf32 = tf32
        _cudnn_tf32 = tf32


class TorchBackend:
    """The PyTorch network in one of `PRECISIONS` (tf32 and fp16 on CUDA only).

    fp32 is IEEE fp32 (cuDNN's TF32 convolutions switched off), tf32 lets cuDNN use TF32, fp16 and
    bf16 autocast the backbone, neck and head (the pillar encoder stays fp32); bf16 also runs on
    CPUs (faster where they have AVX-512 BF16 or AMX, at a lower match rate). On CUDA, building
    one sets cuDNN's flags for its precision (`use_cudnn`). Runs a copy of the network with
    BatchNorm folded into the convolutions and, by default, in channels-last layout (faster on
    CPUs); `net` keeps the loaded weights as they are, for exports and inspection.
    `network_padded` runs fixed-size inputs, the part of a frame that a captured CUDA graph
    replays (`Detector.fixed_size_frame`).
    """

    name = "torch"

    def __init__(self, net: PointPillarsNet, device: torch.device, precision: str = "fp32",
                 channels_last: bool = True):
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        if precision in CUDA_ONLY and device.type != "cuda":
            raise ValueError(f"precision {precision} needs a CUDA device "
                             "(on CPU the torch backend runs fp32 or bf16)")
        if device.type == "cuda":
            use_cudnn(precision)
        self.net = net.to(device).eval()
        self.device = device
        self.precision = precision
        self.channels_last = channels_last
        self.runner = copy.deepcopy(self.net)
        fold_batchnorm(self.runner)
        if channels_last:
            self.runner.to(memory_format=torch.channels_last)

    def __call__(self, inputs: NetworkInputs, stage: StageTimer = no_timing) -> list[torch.Tensor]:
        with stage("encoder"):
            canvas = self._encode(inputs)
        return self._network(canvas, stage)

    def network_padded(self, inputs: NetworkInputs) -> list[torch.Tensor]:
        """Head maps of fixed-size inputs (`voxelize_fixed`: padding pillars on the canvas' spare
        row)."""
        return self._network(self._encode(inputs, padded=True))

    def _encode(self, inputs: NetworkInputs, padded: bool = False) -> torch.Tensor:
        canvas = self.runner.encode(*inputs, padded=padded)  # written channels-last by the scatter
        return canvas if self.channels_last else canvas.contiguous()

    def _network(self, canvas: torch.Tensor, stage: StageTimer = no_timing) -> list[torch.Tensor]:
        """Backbone, neck and head on the canvas in this backend's precision -> float32 maps."""
        net = self.runner
        with self._math_mode():
            with stage("backbone"):
                feats = net.pts_backbone(canvas)
            with stage("neck"):
                feats = net.pts_neck(feats)
            with stage("head"):
                maps = [m for level in net.pts_bbox_head(feats) for m in level]
        return [m.float() for m in maps]

    def _math_mode(self) -> ContextManager[None]:
        """Autocast for fp16 and bf16 (thread-local state, unlike cuDNN's flags)."""
        if self.precision in AUTOCAST_DTYPES:
            return torch.autocast(self.device.type, dtype=AUTOCAST_DTYPES[self.precision])
        return contextlib.nullcontext()


def onnx_providers(device: torch.device, trt_cache_dir: Path | None = None) -> list:
    """TensorRT -> CUDA -> CPU, keeping those this onnxruntime build offers (CPU only for a CPU
    device)."""
    import onnxruntime as ort

    available = set(ort.get_available_providers())
    wanted: list = []
    if device.type == "cuda":
        if "TensorrtExecutionProvider" in available:
            trt_options = {"device_id": device.index or 0, "trt_fp16_enable": False}
            if trt_cache_dir is not None:
                trt_cache_dir.mkdir(parents=True, exist_ok=True)
                trt_options.update(trt_engine_cache_enable=True,
                                   trt_engine_cache_path=str(trt_cache_dir))
            wanted.append(("TensorrtExecutionProvider", trt_options))
        if "CUDAExecutionProvider" in available:
            wanted.append(("CUDAExecutionProvider", {"device_id": device.index or 0}))
    wanted.append("CPUExecutionProvider")
    return wanted


class OnnxRuntimeBackend:
    """An exported network (see `export.py`) in onnxruntime; IO binding keeps CUDA tensors on the
    GPU."""

    name = "onnxruntime"

    def __init__(self, onnx_path: str | Path, device: torch.device,
                 trt_cache_dir: Path | None = None):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.log_severity_level = 3  # onnxruntime warns about dynamic output shapes on every run
        # Its idle worker threads would otherwise spin after each run, taking the CPU from the
        # torch post-processing that follows.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(str(onnx_path), options,
                                            providers=onnx_providers(device, trt_cache_dir))
        self.providers = self.session.get_providers()
        self.device = device
        self.on_gpu = device.type == "cuda" and self.providers[0] != "CPUExecutionProvider"
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]
        # Exports since graph version 3 return NHWC maps; they are handed on as NCHW views.
        self.nhwc = self.session.get_modelmeta().custom_metadata_map.get("output_layout") == "NHWC"

    def __call__(self, inputs: NetworkInputs, stage: StageTimer = no_timing) -> list[torch.Tensor]:
        with stage("network"):
            if self.on_gpu:
                maps = self._run_bound(inputs)
            else:
                feed = {name: t.detach().cpu().numpy() for name, t in zip(self.input_names, inputs)}
                outputs = self.session.run(self.output_names, feed)
                maps = [torch.from_numpy(np.ascontiguousarray(o)).to(self.device) for o in outputs]
        return [m.permute(0, 3, 1, 2) for m in maps] if self.nhwc else maps

    def _run_bound(self, inputs: NetworkInputs) -> list[torch.Tensor]:
        binding = self.session.io_binding()
        index = self.device.index or 0
        for name, tensor in zip(self.input_names, inputs):
            tensor = tensor.contiguous()
            binding.bind_input(name, "cuda", index, _numpy_dtype(tensor.dtype), tuple(tensor.shape),
                               tensor.data_ptr())
        for name in self.output_names:
            binding.bind_output(name, "cuda", index)
        self.session.run_with_iobinding(binding)
        return [torch.from_dlpack(o.to_dlpack()) if hasattr(o, "to_dlpack")
                else torch.from_numpy(o.numpy()).to(self.device)
                for o in binding.get_outputs()]


def _numpy_dtype(dtype: torch.dtype) -> type:
    return {torch.float32: np.float32, torch.int64: np.int64}[dtype]
