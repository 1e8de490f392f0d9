"""The README's shell commands as a user pastes them.

- Every ```bash block parses (`bash -n`).
- Every `ros2` and `detector_node` line, expanded by bash itself (without running it), carries
  no home folder: an unquoted `~/input/pointcloud:=...` remap is expanded by the shell, and the
  node then silently keeps its default topic.
- Every `.venv/bin/detector_node` line is run as bash makes it, and the node answers a cloud on
  the topic the line remaps its input to (or on its default topic).
"""
from __future__ import annotations

import re
import shutil
import subprocess

import pytest
from conftest import REPO

README = REPO / "README.md"
HOME = "/home-folder-of-the-readme-test"  # what an unquoted ~ would become
BASH = shutil.which("bash")
INPUT = "~/input/pointcloud"


def bash_blocks() -> list[str]:
    return re.findall(r"^```bash\n(.*?)^```", README.read_text(), re.MULTILINE | re.DOTALL)


def command_lines() -> list[str]:
    """Commands of all bash blocks, continuation lines joined, comment lines left out."""
    lines = []
    for block in bash_blocks():
        for line in block.replace("\\\n", " ").splitlines():
            if line.strip() and not line.lstrip().startswith("#"):
                lines.append(line.strip())
    return lines


def node_lines() -> list[str]:
    return [line for line in command_lines()
            if line.split()[0] == "ros2" or line.split()[0].endswith("detector_node")]


def shell_words(line: str) -> list[str]:
    """The words bash makes of ``line`` (comment dropped, quotes removed, ~ expanded); a shell
    function prints them instead of running the command."""
    result = subprocess.run([BASH, "-c", f'words() {{ printf "%s\\0" "$@"; }}; words {line}'],
                            env={"HOME": HOME, "PATH": ""}, capture_output=True, text=True,
                            timeout=30)
    assert result.returncode == 0, result.stderr
    return result.stdout.split("\0")[:-1]


def input_topic(words: list[str]) -> str:
    """The topic a detector_node command line remaps its cloud input to."""
    remaps = [words[i + 1] for i, w in enumerate(words[:-1]) if w in ("-r", "--remap")]
    targets = [to for name, _, to in (r.partition(":=") for r in remaps) if name == INPUT]
    return targets[-1] if targets else "/detector_node/input/pointcloud"


def test_every_bash_block_parses():
    blocks = bash_blocks()
    assert len(blocks) >= 3
    for block in blocks:
        result = subprocess.run(["bash", "-n"], input=block, capture_output=True, text=True,
                                timeout=30)
        assert result.returncode == 0, f"{result.stderr}\n{block}"


def test_node_command_lines_reach_ros_as_written():
    lines = node_lines()
    assert any(f"'{INPUT}:=" in line for line in lines), "the README shows a quoted remap"
    for line in lines:
        words = shell_words(line)
        assert not any(HOME in word for word in words), f"bash expands a ~ in: {line}"
        for i, word in enumerate(words[:-1]):
            if word in ("-r", "--remap"):
                assert re.fullmatch(r"[~/\w][\w/~]*:=/?[\w/~]+", words[i + 1]), line


VENV_LINES = [line for line in node_lines() if line.startswith(".venv/bin/detector_node")]


@pytest.mark.parametrize("line", VENV_LINES)
def test_venv_node_lines_answer_on_the_topic_they_name(line, tmp_path):
    pytest.importorskip("vision_msgs.msg", reason="vision_msgs not generated (setup_env.sh)")
    from node_probe import NodeProcess, cloud_msg, probe_of, scene, transform
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import PointCloud2
    from tf2_msgs.msg import TFMessage

    words = shell_words(line)
    script = REPO / words[0]
    if not script.is_file():
        pytest.skip(f"{words[0]}: the tests do not run in the project's .venv")
    topic = input_topic(words)
    node = NodeProcess([str(script), *words[1:]], tmp_path / "node.log")
    with probe_of(node) as probe:
        publisher = probe.node.create_publisher(PointCloud2, topic, qos_profile_sensor_data)
        stamp = 3000 * 1_000_000_000
        cloud = cloud_msg(scene(), stamp)
        probe.wait(lambda: publisher.get_subscription_count(), f"the node subscribing to {topic}")
        probe.tf_pub.publish(TFMessage(transforms=[transform("odom", "base_link", stamp)]))
        answer = probe.resend_until_answered(lambda: publisher.publish(cloud), stamp)
        assert answer.header == cloud.header
