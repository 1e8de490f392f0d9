# Two commands on a fresh machine: `make demo` and `make test`. Both set up .venv first
# (scripts/setup_env.sh: pinned packages, generated messages; a no-op when nothing changed).
VENV := .venv
PYTEST_ARGS ?=
# Shared-memory transport large enough for point clouds (see README, "Fast DDS profile").
export FASTDDS_DEFAULT_PROFILES_FILE := $(CURDIR)/config/fastdds_profile.xml

# `make test` runs ruff (ruff.toml), the suite, then the tests marked `kernels` (their numbers
# depend on the CPU's float kernels: row projection, mmdet3d parity, the fixed-size frame, rotated
# IoU, one detector input check) a second time on the AVX2 kernels of oneDNN and ATen, whatever
# the CPU offers, so that a tolerance which holds for one CPU's kernels only fails on any machine.
# PYTEST_ARGS go to both passes; a pass they leave empty (pytest's exit code 5) is no error.
KERNEL_TESTS := test/test_model_components.py test/test_model_parity.py test/test_runtime_backends.py \
	test/test_rotated_nms.py test/test_detector_input.py
AVX2_KERNELS := ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2
AVX2_PASS = $(AVX2_KERNELS) $(VENV)/bin/python -m pytest $(KERNEL_TESTS) -m kernels $(PYTEST_ARGS) \
	|| [ $$? -eq 5 ]

.PHONY: setup lint test test-avx2 demo clean

setup:
	bash scripts/setup_env.sh

test: lint
	$(VENV)/bin/python -m pytest test $(PYTEST_ARGS)
	$(AVX2_PASS)

lint: setup
	$(VENV)/bin/ruff check .

test-avx2: setup
	$(AVX2_PASS)

demo: setup
	$(VENV)/bin/regnet-pillars demo

clean:
	rm -rf $(VENV) build install log .pytest_cache *.egg-info
