"""Where a CUDA frame makes the host wait: one nus-regnetx-400mf-fpn frame (fp16, without and
with the CUDA graph) under torch.cuda.set_sync_debug_mode("warn"), every synchronising call
listed with the line of this project that made it. Run on a machine with a GPU (gpu_check.sh)."""
from __future__ import annotations

import collections
import traceback
import warnings

import torch

from regnet_pillars_ros.runtime.bench import make_cloud
from regnet_pillars_ros.runtime.factory import build_detector


def project_line(stack: list[traceback.FrameSummary]) -> str:
    """The innermost frame of this project's code in a stack."""
    ours = [f for f in stack
            if "regnet_pillars_ros" in f.filename and "sync_report" not in f.filename]
    f = ours[-1] if ours else stack[-1]
    return f"{f.filename.split('regnet_pillars_ros/')[-1]}:{f.lineno} {f.name}: {f.line}"


def main() -> None:
    cloud, _ = make_cloud(250_000)
    for graph in (False, True):
        detector = build_detector("nus-regnetx-400mf-fpn", "placeholder", device="cuda",
                                  precision="fp16", cuda_graph=graph)
        for _ in range(2):
            detector(cloud)
        sites: collections.Counter[str] = collections.Counter()

        def record(message, category, filename, lineno, file=None, line=None):
            sites[project_line(traceback.extract_stack()[:-1])] += 1

        with warnings.catch_warnings():  # restores showwarning after
            warnings.simplefilter("always")
            warnings.showwarning = record
            torch.cuda.set_sync_debug_mode("warn")
            try:
                detector(cloud)
            finally:
                torch.cuda.set_sync_debug_mode(0)
        print(f"cuda_graph={graph}: {sum(sites.values())} synchronising calls in one frame")
        for site, count in sites.most_common():
            print(f"  {count:3d}  {site}")


if __name__ == "__main__":
    main()
