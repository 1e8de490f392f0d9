"""Fixtures shared by the tests that use ROS 2 (real rclpy over Fast DDS).

At import, before any test module can import rclpy, this sets for the session and its children:
- ROS_DOMAIN_ID: a random id in 100..200, so concurrent test runs on one host stay apart;
- ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST: discovery never leaves the host;
- FASTDDS_DEFAULT_PROFILES_FILE: config/fastdds_profile.xml (32 MB shared-memory segments).
Fixtures: `ros_context` (an initialised rclpy Context for in-process nodes) and `python_process`
(start more Python processes of this venv that inherit this environment; always cleaned up).
Killed ROS processes may leave /dev/shm/fastdds_* files behind; they are harmless and left alone,
since other runs on the host may own them.

Tests that need ../shared (the mmdet3d fixtures, spec key lists, real point files) skip without
it, with a reason that names the missing path; the summary counts them in one line. With
REQUIRE_SHARED=1 (set by .ci/run) those skips are failures instead, so CI never passes without
the fixtures.
"""
import os
import queue
import random
import subprocess
import sys
import tempfile
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from shared_data import SHARED

REPO = Path(__file__).resolve().parents[1]
FASTDDS_PROFILE = REPO / "config" / "fastdds_profile.xml"
# How skip reasons spell it: some tests build the path from their own location, unresolved.
SHARED_SPELLINGS = (str(SHARED), str(REPO / ".." / "shared"))

os.environ["ROS_DOMAIN_ID"] = str(random.SystemRandom().randint(100, 200))
os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
os.environ["FASTDDS_DEFAULT_PROFILES_FILE"] = str(FASTDDS_PROFILE)


class PythonProcess:
    """A child `python ARGS...` of this venv; its stdout lines arrive on a queue, stderr in a
    file."""

    def __init__(self, *args: str, cwd: Path = REPO) -> None:
        self._stderr = tempfile.TemporaryFile(mode="w+")
        # The child inherits os.environ, including the ROS wheels' bootstrap variables
        # (_ROS_WHEELS_BOOTSTRAP_COMPLETE, LD_LIBRARY_PATH): keep them together.
        self.proc = subprocess.Popen([sys.executable, *args], cwd=cwd, text=True,
                                     stdout=subprocess.PIPE, stderr=self._stderr)
        self._lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        for line in self.proc.stdout:
            self._lines.put(line.rstrip("\n"))
        self._lines.put(None)

    def readline(self, timeout: float) -> str | None:
        """Next stdout line, or None if none came within `timeout` s (or the child has ended)."""
        try:
            line = self._lines.get(timeout=timeout)
        except queue.Empty:
            return None
        if line is None:  # end of output: keep the marker for later calls
            self._lines.put(None)
        return line

    def report(self) -> str:
        """Exit code and stderr, for assertion messages."""
        return f"child exit code {self.proc.poll()}, stderr:\n{self.stderr()}"

    def stderr(self) -> str:
        """What the child wrote to stderr so far (last 4000 characters)."""
        self._stderr.seek(0)
        return self._stderr.read()[-4000:]

    def stop(self, timeout: float = 5.0) -> None:
        """Terminate (then kill) the child if it still runs, and release its files."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc.stdout.close()
        self._stderr.close()


@pytest.fixture
def python_process() -> Iterator[Callable[..., PythonProcess]]:
    """Factory `python_process(*args, cwd=REPO)`; every child is stopped at teardown."""
    children: list[PythonProcess] = []

    def start(*args: str, cwd: Path = REPO) -> PythonProcess:
        children.append(PythonProcess(*args, cwd=cwd))
        return children[-1]

    yield start
    for child in children:
        child.stop()


@pytest.fixture
def ros_context():
    """An initialised `rclpy.Context` of its own, shut down after the test."""
    import rclpy  # here, not at module level: tests without ROS keep rclpy unimported

    context = rclpy.Context()
    rclpy.init(context=context)
    yield context
    context.try_shutdown()


# -- ../shared: skipped (or, with REQUIRE_SHARED=1, failed) tests, counted in the summary --------

_lacking_shared: list[str] = []


def _skip_reason(report: pytest.TestReport) -> str:
    longrepr = report.longrepr
    reason = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
    return reason.removeprefix("Skipped: ")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    if not report.skipped or not any(path in _skip_reason(report) for path in SHARED_SPELLINGS):
        return
    _lacking_shared.append(item.nodeid)
    if os.environ.get("REQUIRE_SHARED") == "1":
        report.outcome = "failed"
        report.longrepr = f"REQUIRE_SHARED=1, but this test needs ../shared: {_skip_reason(report)}"


def pytest_terminal_summary(terminalreporter) -> None:
    if not _lacking_shared:
        return
    files = Counter(nodeid.split("::")[0].removeprefix("test/") for nodeid in _lacking_shared)
    verdict = "failed (REQUIRE_SHARED=1)" if os.environ.get("REQUIRE_SHARED") == "1" else "skipped"
    terminalreporter.write_line(
        f"{len(_lacking_shared)} tests {verdict} for lack of {SHARED} "
        "(mmdet3d fixtures, spec, real data): "
        + ", ".join(f"{name} {n}" for name, n in files.items()),
        yellow=True, bold=True)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "kernels: the numbers depend on the CPU's float kernels "
                            "(oneDNN, ATen vector code); make test runs these again on AVX2")


def pytest_report_header() -> str:
    """Which CPU kernels run (the Makefile's second pass restricts them to AVX2)."""
    import torch

    onednn = os.environ.get("ONEDNN_MAX_CPU_ISA", "the CPU's best")
    return f"CPU kernels: ATen {torch.backends.cpu.get_cpu_capability()}, oneDNN up to {onednn}"
