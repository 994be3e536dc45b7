# One command each on a fresh machine: `make demo`, `make test` (both run `setup` when needed).
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.edgekit-installed

.PHONY: setup demo test test-fast lint bench ship-config clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "edgekit needs Python 3.11 ($(PYTHON) not found)"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip wheel
	$(PY) -m pip install -e '.[all]'
	# onnx2tf (and tf2onnx, used by a test to make a TFLite-origin ONNX) pin old numpy/onnx/tensorflow: no deps
	$(PY) -m pip install --no-deps onnx2tf==1.29.24 simple_onnx_processing_tools==1.1.32 tf2onnx==1.17.0
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		(dpkg -s mesa-vulkan-drivers >/dev/null 2>&1 && dpkg -s libvulkan1 >/dev/null 2>&1 && \
		 dpkg -s opencv-doc >/dev/null 2>&1 && dpkg -s openssh-server >/dev/null 2>&1) || \
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mesa-vulkan-drivers \
		  libvulkan1 opencv-doc openssh-server; }; \
	else echo "not root: install mesa-vulkan-drivers (software Vulkan GPU), opencv-doc (photos) and openssh-server" \
		"(ssh reach tests) yourself"; fi
	# MediaPipe's models (from the mediapipe wheel) and the evaluation photos (face_recognition sdist), from PyPI
	$(VENV)/bin/edgekit models fetch mediapipe
	$(VENV)/bin/edgekit models fetch photos
	touch $(STAMP)

demo: setup
	$(VENV)/bin/edgekit demo

test: setup
	$(PY) -m pytest -q --durations=15

# the inner loop (under 3 minutes on 2 cores): every test not marked slow (see the Tests section of README.md)
test-fast: setup
	$(PY) -m pytest -q -m "not slow" --durations=15

lint: setup
	$(VENV)/bin/ruff check edgekit tests benchmarks models

bench: setup
	for b in benchmarks/bench_*.py; do $(PY) $$b || exit 1; done

# re-make the shipped profiles/configs/local-cpu.json on this machine (a sweep under load, then sustained runs)
ship-config: setup
	$(VENV)/bin/edgekit profile --device profiles/sweeps/local-cpu-mediapipe.yaml --thorough --sustained 20 --out out/ship

clean:
	rm -rf out .pytest_cache
