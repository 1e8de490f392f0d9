"""`regnet-pillars bag-from-dataset`: real devkit tables (the synthetic dataset) to real rosbag2
files and back, checked against the devkit's own records and math."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("rclpy", reason="rclpy not installed (scripts/setup_env.sh)")
pytest.importorskip("vision_msgs.msg", reason="vision_msgs not generated")

from eval_helpers import LYFT_NAMES, rename_to_lyft_classes  # noqa: E402
from nuscenes import NuScenes  # noqa: E402
from nuscenes.utils.geometry_utils import transform_matrix  # noqa: E402
from pyquaternion import Quaternion  # noqa: E402
from rclpy.serialization import deserialize_message  # noqa: E402
from ros_peer import message_class  # noqa: E402
from rosbags.rosbag2 import Reader  # noqa: E402

from regnet_pillars_ros.eval import bag_from_dataset as bfd  # noqa: E402
from regnet_pillars_ros.eval import bag_topics as topics  # noqa: E402
from regnet_pillars_ros.eval import synthetic_nuscenes as synthetic  # noqa: E402
from regnet_pillars_ros.eval.nuscenes_frames import annotations_in_sensor_frame  # noqa: E402
from regnet_pillars_ros.messages.cloud import read_points  # noqa: E402
from regnet_pillars_ros.pipeline.transforms import Transform  # noqa: E402

SEED, SCENES, KEY_FRAMES = 3, 2, 2
SWEEPS_PER_SCENE = synthetic.SWEEPS_PER_KEY_FRAME * KEY_FRAMES + 1  # 10 before the first key
DETECTION3D_ARRAY_RIHS01 = "793f5eab9595ac1c0da07873cc859db42eae51f0ee76056db8562515d830e018"


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> synthetic.SyntheticDataset:
    return synthetic.write_dataset(tmp_path_factory.mktemp("nuscenes"), seed=SEED,
                                   num_scenes=SCENES, num_key_frames=KEY_FRAMES)


@pytest.fixture(scope="module")
def nusc(data) -> NuScenes:
    return NuScenes(data.version, str(data.dataroot), verbose=False)


@pytest.fixture(scope="module")
def bags(data, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("bags") / "out"
    assert bfd.main(["--dataroot", str(data.dataroot), "--version", data.version,
                     "-o", str(out), "--no-progress"]) == 0
    return out


def convert(data, out: Path, *extra: str) -> int:
    return bfd.main(["--dataroot", str(data.dataroot), "--version", data.version, "-o", str(out),
                     "--no-progress", *extra])


def read_bag(path: Path) -> dict[str, list[tuple[int, object]]]:
    """topic -> [(bag stamp, rclpy message)] in bag order."""
    out: dict[str, list[tuple[int, object]]] = {}
    with Reader(path) as reader:
        for conn, stamp, raw in reader.messages():
            msg = deserialize_message(bytes(raw), message_class(conn.msgtype))
            out.setdefault(conn.topic, []).append((stamp, msg))
    return out


def stamp_ns(header) -> int:
    return header.stamp.sec * 1_000_000_000 + header.stamp.nanosec


def as_transform(msg) -> Transform:
    t, q = msg.transform.translation, msg.transform.rotation
    return Transform.from_xyz_quat((t.x, t.y, t.z), (q.x, q.y, q.z, q.w))


def scene_chain(nusc: NuScenes, scene: dict) -> list[dict]:
    """The scene's LIDAR_TOP sample_data in order, from the devkit tables directly."""
    records = [r for r in nusc.sample_data if r["channel"] == "LIDAR_TOP"
               and nusc.get("sample", r["sample_token"])["scene_token"] == scene["token"]]
    return sorted(records, key=lambda r: r["timestamp"])


def assert_same_boxes(msg, boxes: np.ndarray) -> None:
    """The Detection3DArray's boxes (volume centre, l, w, h, yaw) are ``boxes`` [M, 7+]
    (x, y, z_bottom, l, w, h, yaw...)."""
    got = np.array([[d.bbox.center.position.x, d.bbox.center.position.y,
                     d.bbox.center.position.z - d.bbox.size.z / 2, d.bbox.size.x, d.bbox.size.y,
                     d.bbox.size.z,
                     2 * np.arctan2(d.bbox.center.orientation.z, d.bbox.center.orientation.w)]
                    for d in msg.detections]).reshape(-1, 7)
    np.testing.assert_allclose(got[:, :6], boxes[:, :6], atol=1e-9)
    np.testing.assert_allclose(np.angle(np.exp(1j * (got[:, 6] - boxes[:, 6]))), 0, atol=1e-9)


@pytest.mark.parametrize("index", range(SCENES))
def test_every_sweep_returns_the_devkit_points_bit_for_bit(nusc, bags, index):
    scene = nusc.scene[index]
    bag = read_bag(bags / scene["name"])
    chain = scene_chain(nusc, scene)
    clouds = bag[topics.POINTS]
    assert [stamp for stamp, _ in clouds] == [r["timestamp"] * 1000 for r in chain]
    for (stamp, cloud), record in zip(clouds, chain):
        source = np.fromfile(Path(nusc.dataroot) / record["filename"], np.float32).reshape(-1, 5)
        assert cloud.header.frame_id == topics.LIDAR_FRAME and stamp_ns(cloud.header) == stamp
        assert [f.name for f in cloud.fields] == list(topics.POINT_FIELDS)
        points = read_points(cloud, topics.POINT_FIELDS)
        np.testing.assert_array_equal(points[:, :4].view(np.uint32), source[:, :4].view(np.uint32))
        assert not points[:, 4].any()
    assert [s for s, _ in bag[topics.CLOCK]] == [s for s, _ in clouds]
    assert bfd.read_scene_metadata(bags / scene["name"]) == {
        "dataset": "nuscenes", "version": "v1.0-mini", "scene_name": scene["name"],
        "scene_token": scene["token"], "sweeps": str(len(chain)),
        "key_frames": str(KEY_FRAMES)}


def test_tf_composes_to_the_devkit_ego_pose_times_the_calibrated_sensor(nusc, bags):
    scene = nusc.scene[0]
    bag = read_bag(bags / scene["name"])
    ((_, static),) = bag[topics.TF_STATIC]
    (base_lidar,) = static.transforms
    assert (base_lidar.header.frame_id, base_lidar.child_frame_id) == (topics.BASE_FRAME,
                                                                       topics.LIDAR_FRAME)
    for (stamp, tf), record in zip(bag[topics.TF], scene_chain(nusc, scene), strict=True):
        map_odom, odom_base = tf.transforms
        assert [(t.header.frame_id, t.child_frame_id) for t in tf.transforms] == [
            (topics.MAP_FRAME, topics.ODOM_FRAME), (topics.ODOM_FRAME, topics.BASE_FRAME)]
        assert stamp_ns(map_odom.header) == stamp_ns(odom_base.header) == stamp
        ego = nusc.get("ego_pose", record["ego_pose_token"])
        calib = nusc.get("calibrated_sensor", record["calibrated_sensor_token"])
        expected = (transform_matrix(ego["translation"], Quaternion(ego["rotation"]))
                    @ transform_matrix(calib["translation"], Quaternion(calib["rotation"])))
        composed = as_transform(map_odom) @ as_transform(odom_base) @ as_transform(base_lidar)
        np.testing.assert_allclose(composed.matrix(), expected, atol=1e-9)


def test_ground_truth_and_sample_tokens_at_every_key_frame(nusc, bags):
    for scene in nusc.scene:
        bag = read_bag(bags / scene["name"])
        samples, token = [], scene["first_sample_token"]
        while token:
            samples.append(nusc.get("sample", token))
            token = samples[-1]["next"]
        key_stamps = [nusc.get("sample_data", s["data"]["LIDAR_TOP"])["timestamp"] * 1000
                      for s in samples]
        assert [(t, m.data) for t, m in bag[topics.SAMPLE_TOKEN]] == [
            (t, s["token"]) for t, s in zip(key_stamps, samples)]
        assert [t for t, _ in bag[topics.GROUND_TRUTH]] == key_stamps
        for (stamp, msg), sample in zip(bag[topics.GROUND_TRUTH], samples):
            assert msg.header.frame_id == topics.LIDAR_FRAME and stamp_ns(msg.header) == stamp
            expected = annotations_in_sensor_frame(nusc, sample["token"])
            assert len(msg.detections) == len(expected.names) > 0
            assert_same_boxes(msg, expected.boxes)
            assert [d.results[0].hypothesis.class_id for d in msg.detections] == expected.names
            assert [d.id for d in msg.detections] == [
                nusc.get("sample_annotation", t)["instance_token"] for t in expected.tokens]


def test_topic_types_and_hashes_are_the_upstream_ones_and_tf_static_is_latched(nusc, bags):
    from rosbags.interfaces import QosDurability

    with Reader(bags / nusc.scene[0]["name"]) as reader:
        types = {c.topic: (c.msgtype, c.digest) for c in reader.connections}
        qos = {c.topic: c.ext.offered_qos_profiles for c in reader.connections}
    assert {t: m for t, (m, _) in types.items()} == {
        topics.POINTS: "sensor_msgs/msg/PointCloud2", topics.TF: "tf2_msgs/msg/TFMessage",
        topics.TF_STATIC: "tf2_msgs/msg/TFMessage", topics.CLOCK: "rosgraph_msgs/msg/Clock",
        topics.GROUND_TRUTH: "vision_msgs/msg/Detection3DArray",
        topics.SAMPLE_TOKEN: "std_msgs/msg/String"}
    assert types[topics.GROUND_TRUTH][1] == "RIHS01_" + DETECTION3D_ARRAY_RIHS01
    assert [q.durability for q in qos[topics.TF_STATIC]] == [QosDurability.TRANSIENT_LOCAL]
    assert qos[topics.TF] == []


def test_sqlite3_storage_holds_the_same_messages(data, nusc, bags, tmp_path):
    name = nusc.scene[1]["name"]
    assert convert(data, tmp_path, "--storage", "sqlite3", "--scenes", name) == 0
    assert [p.name for p in (tmp_path / name).iterdir() if p.suffix == ".db3"] == [f"{name}.db3"]
    # Compared as messages: rclpy's CDR leaves alignment padding bytes unset.
    assert read_bag(tmp_path / name) == read_bag(bags / name)


def test_resume_skips_finished_scenes_and_redoes_an_interrupted_one(data, nusc, tmp_path, capsys):
    first, second = (s["name"] for s in nusc.scene)
    assert convert(data, tmp_path, "--scenes", first) == 0
    finished = (tmp_path / first / f"{first}.mcap").stat().st_mtime_ns
    (tmp_path / bfd.PARTIAL / second).mkdir(parents=True)
    (tmp_path / bfd.PARTIAL / second / "junk.mcap").write_bytes(b"interrupted")
    assert bfd.scene_bags(tmp_path) == [tmp_path / first]
    capsys.readouterr()
    assert convert(data, tmp_path) == 0
    out = capsys.readouterr().out
    assert f"{first}: already in" in out and f"{second}: {SWEEPS_PER_SCENE} sweeps" in out
    assert (tmp_path / first / f"{first}.mcap").stat().st_mtime_ns == finished
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([first, second])
    assert bfd.scene_bags(tmp_path) == sorted([tmp_path / first, tmp_path / second])
    assert bfd.scene_bags(tmp_path / second) == [tmp_path / second]
    assert len(read_bag(tmp_path / second)[topics.SAMPLE_TOKEN]) == KEY_FRAMES


def error_of(capsys, argv: list[str]) -> str:
    from regnet_pillars_ros.cli import main as cli_main

    capsys.readouterr()
    assert cli_main(["bag-from-dataset", *argv, "--no-progress"]) == 1
    return capsys.readouterr().err


def test_clear_errors_for_dataroot_version_tables_scenes_files_output(data, nusc, tmp_path,
                                                                      capsys):
    root, version = str(data.dataroot), data.version
    assert "is not a folder" in error_of(capsys, ["--dataroot", str(tmp_path / "nope"),
                                                  "--version", version, "-o", str(tmp_path / "o")])
    err = error_of(capsys, ["--dataroot", root, "--version", "v1.0-trainval", "-o", "x"])
    assert "unknown version 'v1.0-trainval'" in err and "table folders in" in err and version in err
    assert "add --lyft" in error_of(capsys, ["--dataroot", root, "--version", "v1.01-train",
                                             "-o", "x"])
    (tmp_path / "bare" / version).mkdir(parents=True)
    shutil.copy(Path(root) / version / "scene.json", tmp_path / "bare" / version)
    err = error_of(capsys, ["--dataroot", str(tmp_path / "bare"), "--version", version, "-o", "x"])
    assert "sample_data.json" in err and "scene.json" not in err.split("lacks")[1]
    err = error_of(capsys, ["--dataroot", root, "--version", version, "--scenes", "scene-0061",
                            "-o", str(tmp_path / "o")])
    assert "unknown scene(s) scene-0061" in err and all(s["name"] in err for s in nusc.scene)
    dataset = bfd.Dataset(nusc, tmp_path, version, "nuscenes")  # no point files there
    sweeps = SWEEPS_PER_SCENE
    with pytest.raises(bfd.DatasetError, match=f"{sweeps} of {sweeps} LIDAR_TOP point files are"):
        bfd.check_files(dataset, nusc.scene[0], bfd.scene_sweeps(dataset, nusc.scene[0]))
    (tmp_path / "file").write_text("")
    assert "is a file" in error_of(capsys, ["--dataroot", root, "--version", version,
                                            "-o", str(tmp_path / "file")])


def test_lyft_tables_convert_with_the_category_names_as_classes(tmp_path):
    pytest.importorskip("lyft_dataset_sdk", reason="lyft-dataset-sdk not installed")
    data = synthetic.write_dataset(tmp_path / "lyft", seed=SEED, num_scenes=1, num_key_frames=1,
                                   version="v1.01-train")
    nusc = NuScenes(data.version, str(data.dataroot), verbose=False)
    sample = nusc.sample[0]
    expected = annotations_in_sensor_frame(nusc, sample["token"])
    rename_to_lyft_classes(data)
    assert convert(data, tmp_path / "out", "--lyft") == 0
    bag = read_bag(tmp_path / "out" / nusc.scene[0]["name"])
    ((_, token),), ((_, gt),) = bag[topics.SAMPLE_TOKEN], bag[topics.GROUND_TRUTH]
    assert token.data == sample["token"]
    records = [nusc.get("sample_annotation", t) for t in expected.tokens]
    assert [d.id for d in gt.detections] == [r["instance_token"] for r in records]
    assert [d.results[0].hypothesis.class_id for d in gt.detections] == [
        LYFT_NAMES[r["category_name"]] for r in records]
    assert_same_boxes(gt, expected.boxes)
    assert len(bag[topics.POINTS]) == synthetic.SWEEPS_PER_KEY_FRAME + 1
