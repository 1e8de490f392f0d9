"""Print constraints.txt for the running venv: every wheel-installed distribution, pinned.

Run after changing requirements.txt:
`.venv/bin/python scripts/freeze_constraints.py > constraints.txt`.
Skipped: torch (a CUDA build in the venv is kept), this project, and the `*.egg-info` records
that the ROS wheels and the message build leave next to their modules (not PyPI projects).
"""
from importlib.metadata import distributions

HEADER = """\
# Transitive pins for requirements.txt, written by scripts/freeze_constraints.py from a venv that
# scripts/setup_env.sh set up. Regenerate after changing requirements.txt."""
SKIP = {"pip", "torch", "regnet-pillars-ros", "regnet_pillars_ros"}


def pins() -> list[str]:
    """`name==version` of every dist-info distribution, sorted case-insensitively."""
    found = {
        dist.metadata["Name"]: dist.version
        for dist in distributions()
        if str(getattr(dist, "_path", "")).endswith(".dist-info")
        and dist.metadata["Name"] not in SKIP
    }
    return [f"{name}=={version}"
            for name, version in sorted(found.items(), key=lambda kv: kv[0].lower())]


if __name__ == "__main__":
    print(HEADER)
    print("\n".join(pins()))
