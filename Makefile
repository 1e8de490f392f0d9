# Two commands on a fresh machine: `make demo` and `make test`. Both set up .venv first
# (scripts/setup_env.sh: pinned packages, generated messages; a no-op when nothing changed).
VENV := .venv
PYTEST_ARGS ?=
# Shared-memory transport large enough for point clouds (see README, "Fast DDS profile").
export FASTDDS_DEFAULT_PROFILES_FILE := $(CURDIR)/config/fastdds_profile.xml

.PHONY: setup test demo clean

setup:
	bash scripts/setup_env.sh

test: setup
	$(VENV)/bin/python -m pytest test $(PYTEST_ARGS)

demo: setup
	$(VENV)/bin/regnet-pillars demo

clean:
	rm -rf $(VENV) build install log .pytest_cache *.egg-info
