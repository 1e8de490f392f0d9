"""``regnet-pillars bag-from-dataset``: a nuScenes or Lyft dataset (devkit layout) as rosbag2.

Writes one bag per scene, ``OUT/<scene name>/`` (a rosbag2 folder: ``metadata.yaml`` and one
``.mcap`` or ``.db3`` file), with the topics of `bag_topics`: every LIDAR_TOP sweep as
PointCloud2 (x, y, z, intensity exactly as in the devkit file, time = 0), /tf, /tf_static,
/clock, and /ground_truth and /sample_token at the key frames. Stamps are the sample_data
timestamps (microseconds) in nanoseconds; /tf_static is recorded as transient local. The
custom_data of each bag's metadata.yaml records the dataset, version, scene name and token and
the numbers of sweeps and key frames (keys ``regnet_pillars.*``).

Resuming: a scene is written into ``OUT/.partial/<scene name>/`` and moved to
``OUT/<scene name>/`` once complete, so a rerun skips the scenes already there and rewrites an
interrupted one (rosbags cannot append to a bag, hence one bag per scene).

Lyft (``--lyft``): the same tables, read with lyft-dataset-sdk (``--dataroot`` is the folder
holding ``lidar/``, ``maps/`` and the table folder ``--version``, e.g. ``v1.01-train``); point
files are float32 x, y, z, intensity, ring like nuScenes'; ground-truth classes are the
category names, which are Lyft's detection classes.
"""
from __future__ import annotations

import argparse
import shutil
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..messages.bag_writer import STORAGES
from ..pipeline.transforms import Transform
from . import bag_topics as topics
from .nuscenes_frames import (
    GlobalBoxes,
    annotations_in_sensor_frame,
    devkit_transform,
    from_global,
    key_lidar_poses,
)

PROG = "regnet-pillars bag-from-dataset"
CHANNEL = "LIDAR_TOP"
POINT_COLUMNS = 5  # x, y, z, intensity, ring (nuScenes .pcd.bin and Lyft .bin)
PARTIAL = ".partial"
TABLES = ("category", "attribute", "visibility", "instance", "sensor", "calibrated_sensor",
          "ego_pose", "log", "scene", "sample", "sample_data", "sample_annotation", "map")
OPTIONAL_TABLES = {"nuscenes": (), "lyft": ("instance", "sample_annotation")}  # Lyft test split
KNOWN_VERSIONS = {"nuscenes": ("v1.0-mini", "v1.0-trainval", "v1.0-test"),
                  "lyft": ("v1.01-train", "v1.01-test")}
SCENE_METADATA = ("dataset", "version", "scene_name", "scene_token", "sweeps", "key_frames")
"""Custom metadata keys of every bag, each prefixed with `METADATA_PREFIX`."""
METADATA_PREFIX = "regnet_pillars."
POINT_DTYPE = np.dtype([(name, "<f4") for name in topics.POINT_FIELDS])


class DatasetError(ValueError):
    """A dataset that cannot be converted: its message says what is missing or wrong."""


@dataclass(frozen=True)
class Dataset:
    """An opened devkit database (NuScenes or LyftDataset) and where it came from."""

    db: Any
    dataroot: Path
    version: str
    kind: str  # "nuscenes" or "lyft"


def check_layout(dataroot: Path, version: str, kind: str) -> None:
    """Raise DatasetError unless ``dataroot/version`` holds the devkit tables."""
    if not dataroot.is_dir():
        raise DatasetError(f"--dataroot {dataroot} is not a folder")
    table_dir = dataroot / version
    if not table_dir.is_dir():
        found = sorted(p.name for p in dataroot.iterdir() if (p / "scene.json").is_file())
        other = next((k for k, names in KNOWN_VERSIONS.items() if version in names), kind)
        hint = {("lyft", "nuscenes"): " (a Lyft version: add --lyft)",
                ("nuscenes", "lyft"): " (a nuScenes version: drop --lyft)"}.get((other, kind), "")
        raise DatasetError(
            f"unknown version '{version}'{hint}: {table_dir} does not exist; table folders in "
            f"{dataroot}: {', '.join(found) or 'none'} (the {kind} versions are "
            f"{', '.join(KNOWN_VERSIONS[kind])})")
    missing = [f"{name}.json" for name in TABLES
               if name not in OPTIONAL_TABLES[kind] and not (table_dir / f"{name}.json").is_file()]
    if missing:
        raise DatasetError(f"{table_dir} lacks the table(s) {', '.join(missing)}: is --dataroot "
                           f"the folder that holds the '{version}' table folder?")


def open_dataset(dataroot: Path, version: str, lyft: bool = False) -> Dataset:
    """Check the layout, then load the tables with the dataset's own devkit."""
    kind = "lyft" if lyft else "nuscenes"
    dataroot = Path(dataroot)
    check_layout(dataroot, version, kind)
    if lyft:
        try:
            from lyft_dataset_sdk.lyftdataset import LyftDataset
        except ImportError as exc:
            raise DatasetError(f"--lyft needs lyft-dataset-sdk ({exc})") from exc
        db = LyftDataset(data_path=str(dataroot), json_path=str(dataroot / version),
                         verbose=False)
    else:
        from nuscenes import NuScenes
        db = NuScenes(version=version, dataroot=str(dataroot), verbose=False)
    return Dataset(db, dataroot, version, kind)


def select_scenes(dataset: Dataset, names: list[str] | None) -> list[dict]:
    """The scene records named (all scenes when ``names`` is empty), in the order given."""
    by_name = {scene["name"]: scene for scene in dataset.db.scene}
    unknown = [name for name in names or () if name not in by_name]
    if unknown:
        raise DatasetError(f"unknown scene(s) {', '.join(unknown)}; {dataset.version} has: "
                           f"{', '.join(sorted(by_name))}")
    return [by_name[name] for name in names] if names else list(dataset.db.scene)


def scene_sweeps(dataset: Dataset, scene: dict) -> list[dict]:
    """The scene's LIDAR_TOP sample_data records in time order: the chain through its first
    key frame, as far as the records belong to samples of this scene."""
    db = dataset.db

    def in_scene(token: str) -> bool:
        if not token:
            return False
        sample = db.get("sample", db.get("sample_data", token)["sample_token"])
        return sample["scene_token"] == scene["token"]

    data = db.get("sample", scene["first_sample_token"])["data"]
    if CHANNEL not in data:
        raise DatasetError(f"scene {scene['name']} has no {CHANNEL} data (its channels: "
                           f"{', '.join(sorted(data))})")
    first = data[CHANNEL]
    chain = [db.get("sample_data", first)]
    while in_scene(chain[0]["prev"]):
        chain.insert(0, db.get("sample_data", chain[0]["prev"]))
    while in_scene(chain[-1]["next"]):
        chain.append(db.get("sample_data", chain[-1]["next"]))
    return chain


def read_sweep(dataset: Dataset, record: dict) -> np.ndarray:
    """float32 [N, 5] of a sweep's point file, exactly as stored."""
    path = dataset.dataroot / record["filename"]
    raw = np.fromfile(path, np.float32)
    if raw.size % POINT_COLUMNS:
        fix = (" (a known damaged Lyft file: mmdetection3d's tools/data_converter/"
               "lyft_data_fixer.py repairs it)" if dataset.kind == "lyft" else "")
        raise DatasetError(f"{path} holds {raw.size} float32 values, not rows of "
                           f"{POINT_COLUMNS}{fix}")
    return raw.reshape(-1, POINT_COLUMNS)


def cloud_points(points: np.ndarray) -> np.ndarray:
    """Structured x, y, z, intensity, time (0) points of a devkit [N, 5] sweep."""
    out = np.zeros(len(points), POINT_DTYPE)
    for i, name in enumerate(topics.POINT_FIELDS[:4]):
        out[name] = points[:, i]
    return out


def ground_truth(dataset: Dataset, sample_token: str) -> tuple[np.ndarray, list[str], list[str]]:
    """A key frame's boxes [M, 7+] (x, y, z_bottom, l, w, h, yaw...) in its LiDAR frame, class
    names and instance tokens: nuScenes' detection classes as `DetectionEval` loads them; Lyft's
    category names (its detection classes) for every annotation."""
    db = dataset.db
    if dataset.kind == "nuscenes":
        ann = annotations_in_sensor_frame(db, sample_token)
        return ann.boxes, ann.names, [db.get("sample_annotation", t)["instance_token"]
                                      for t in ann.tokens]
    records = [db.get("sample_annotation", t) for t in db.get("sample", sample_token)["anns"]]
    boxes = GlobalBoxes(*(np.array([r[key] for r in records], np.float64).reshape(-1, width)
                          for key, width in (("translation", 3), ("size", 3), ("rotation", 4))),
                        velocity=np.zeros((len(records), 2)))
    global_ego, ego_sensor = key_lidar_poses(db, sample_token, CHANNEL)
    return (from_global(boxes, global_ego @ ego_sensor), [r["category_name"] for r in records],
            [r["instance_token"] for r in records])


def ground_truth_msg(boxes: np.ndarray, names: list[str], instance_tokens: list[str], header):
    """vision_msgs/Detection3DArray of the ground truth, built like the node's output (score 1,
    class name as class_id) with the instance token as each Detection3D's id."""
    from ..messages.detections import detection_array
    from ..model.detections import Detections

    class_names = tuple(sorted(set(names)))
    dets = Detections(boxes=boxes, scores=np.ones(len(boxes), np.float32),
                      labels=np.array([class_names.index(n) for n in names], np.int64),
                      class_names=class_names)
    msg = detection_array(dets, header)
    for detection, instance in zip(msg.detections, instance_tokens):
        detection.id = instance
    return msg


def scene_messages(dataset: Dataset, sweeps: list[dict]) -> Iterator[tuple[str, int, Any]]:
    """(topic, stamp_ns, message) of a scene's sweeps in time order; per sweep: /clock,
    /tf_static (first sweep, and whenever the calibration changes), /tf, the cloud, then
    /ground_truth and /sample_token at key frames."""
    from rosgraph_msgs.msg import Clock
    from std_msgs.msg import String
    from tf2_msgs.msg import TFMessage

    from ..messages.bag_writer import header, transform_msg
    from ..messages.cloud import to_msg

    db, calibration = dataset.db, None
    for record in sweeps:
        stamp = int(record["timestamp"]) * 1000
        clock = Clock()
        clock.clock = header("", stamp).stamp
        yield topics.CLOCK, stamp, clock
        if record["calibrated_sensor_token"] != calibration:
            calibration = record["calibrated_sensor_token"]
            extrinsics = devkit_transform(db.get("calibrated_sensor", calibration))
            yield topics.TF_STATIC, stamp, TFMessage(transforms=[transform_msg(
                topics.BASE_FRAME, topics.LIDAR_FRAME, stamp, extrinsics)])
        ego = devkit_transform(db.get("ego_pose", record["ego_pose_token"]))
        yield topics.TF, stamp, TFMessage(transforms=[
            transform_msg(topics.MAP_FRAME, topics.ODOM_FRAME, stamp, Transform.identity()),
            transform_msg(topics.ODOM_FRAME, topics.BASE_FRAME, stamp, ego)])
        cloud_header = header(topics.LIDAR_FRAME, stamp)
        yield topics.POINTS, stamp, to_msg(cloud_header, cloud_points(read_sweep(dataset, record)))
        if record["is_key_frame"]:
            yield topics.GROUND_TRUTH, stamp, ground_truth_msg(
                *ground_truth(dataset, record["sample_token"]), cloud_header)
            yield topics.SAMPLE_TOKEN, stamp, String(data=record["sample_token"])


def check_files(dataset: Dataset, scene: dict, sweeps: list[dict]) -> None:
    missing = [r["filename"] for r in sweeps if not (dataset.dataroot / r["filename"]).is_file()]
    if missing:
        raise DatasetError(f"scene {scene['name']}: {len(missing)} of {len(sweeps)} {CHANNEL} "
                           f"point files are missing under {dataset.dataroot}, e.g. {missing[0]}")


def _no_bars(progress: bool | None) -> bool | None:
    """tqdm's ``disable``: None shows the bars on a terminal only, False always, True never."""
    return None if progress is None else not progress


def write_scene(dataset: Dataset, scene: dict, path: Path, storage: str = "mcap",
                progress: bool | None = None) -> tuple[int, int]:
    """Write one scene's bag at ``path`` (which must not exist); returns (sweeps, key frames)."""
    from tqdm import tqdm

    from ..messages.bag_writer import BagWriter

    sweeps = scene_sweeps(dataset, scene)
    check_files(dataset, scene, sweeps)
    counts = (len(sweeps), sum(bool(r["is_key_frame"]) for r in sweeps))
    values = (dataset.kind, dataset.version, scene["name"], scene["token"], *map(str, counts))
    metadata = {METADATA_PREFIX + k: str(v) for k, v in zip(SCENE_METADATA, values)}
    with BagWriter(path, storage, metadata, latched=(topics.TF_STATIC,)) as bag, tqdm(
            total=len(sweeps), desc=scene["name"], unit="sweep", leave=False,
            disable=_no_bars(progress)) as bar:
        for topic, stamp, msg in scene_messages(dataset, sweeps):
            bag.write(topic, stamp, msg)
            bar.update(topic == topics.POINTS)
    return counts


def convert(dataset: Dataset, scenes: list[dict], out: Path, storage: str = "mcap",
            progress: bool | None = None) -> dict[str, str]:
    """Write every scene not yet in ``out``; returns scene name -> 'written' or 'skipped'."""
    from tqdm import tqdm

    if out.exists() and not out.is_dir():
        raise DatasetError(f"-o {out} is a file; it must be a folder (one bag per scene)")
    status = {}
    for scene in tqdm(scenes, desc="scenes", unit="scene", disable=_no_bars(progress)):
        final, partial = out / scene["name"], out / PARTIAL / scene["name"]
        if (final / "metadata.yaml").is_file():
            status[scene["name"]] = "skipped"
            print(f"{scene['name']}: already in {final}, skipped")
            continue
        if partial.exists():
            shutil.rmtree(partial)  # an interrupted earlier run
        partial.parent.mkdir(parents=True, exist_ok=True)
        try:
            sweeps, keys = write_scene(dataset, scene, partial, storage, progress)
        except BaseException:
            shutil.rmtree(partial, ignore_errors=True)
            raise
        partial.rename(final)
        status[scene["name"]] = "written"
        print(f"{scene['name']}: {sweeps} sweeps, {keys} key frames -> {final}")
    if (out / PARTIAL).is_dir() and not any((out / PARTIAL).iterdir()):
        (out / PARTIAL).rmdir()
    return status


def scene_bags(path: Path) -> list[Path]:
    """The bags under ``path``: ``[path]`` for one bag, else its scene bags (``OUT`` of this
    tool) sorted by name; unfinished scenes are left out."""
    path = Path(path)
    if (path / "metadata.yaml").is_file():
        return [path]
    return sorted(p for p in path.iterdir() if (p / "metadata.yaml").is_file())


def read_scene_metadata(bag: Path) -> dict[str, str]:
    """The `SCENE_METADATA` of a bag this tool wrote (keys without the prefix)."""
    import yaml

    info = yaml.safe_load((Path(bag) / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
    custom = info.get("custom_data") or {}
    return {key: str(custom[METADATA_PREFIX + key]) for key in SCENE_METADATA
            if METADATA_PREFIX + key in custom}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=f"examples:\n  {PROG} --dataroot data/nuscenes --version v1.0-mini -o bags/\n"
        f"  {PROG} --dataroot data/lyft/v1.01-train --version v1.01-train --lyft "
        "--scenes NAME -o lyft_bags/ --storage sqlite3")
    parser.add_argument("--dataroot", required=True, type=Path,
                        help="dataset folder holding the version's table folder, samples/ and "
                        "sweeps/ (Lyft: lidar/)")
    parser.add_argument("--version", required=True, help="table folder: v1.0-mini, v1.0-trainval, "
                        "v1.0-test; Lyft v1.01-train, v1.01-test")
    parser.add_argument("--lyft", action="store_true", help="a Lyft dataset (lyft-dataset-sdk)")
    parser.add_argument("--scenes", nargs="+", metavar="NAME", help="scene names (default: all)")
    parser.add_argument("-o", "--output", required=True, type=Path,
                        help="output folder: one bag per scene, OUT/<scene name>/")
    parser.add_argument("--storage", default="mcap", choices=STORAGES,
                        help="rosbag2 storage (default mcap)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        dataset = open_dataset(args.dataroot, args.version, args.lyft)
        convert(dataset, select_scenes(dataset, args.scenes), args.output, args.storage,
                progress=False if args.no_progress else None)
    except DatasetError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # the unfinished scene was removed; a rerun resumes
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
