# SemiBlind — `make demo` (install + deconvolve a bundled sample) and `make test` (install + full test suite).
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# torch is pinned: the local CPU wheel; an unpinned torch pulls GBs of CUDA wheels
TORCH := torch==2.13.0

.PHONY: install system-deps test demo bench clean

# Debian packages for the ImageJ tests: a JDK (javac builds the shim), ImageJ 1, a virtual display,
# xdotool to drive it and ImageMagick for screenshots, the X11/GL libraries Qt needs for the napari plugin's
# tests (under Xvfb); installed only when missing.
system-deps:
	@missing=""; \
	command -v javac >/dev/null || missing="$$missing default-jdk-headless"; \
	[ -f /usr/share/java/ij.jar ] || missing="$$missing libij-java"; \
	command -v Xvfb >/dev/null || missing="$$missing xvfb"; \
	command -v xdotool >/dev/null || missing="$$missing xdotool"; \
	command -v import >/dev/null || missing="$$missing imagemagick"; \
	[ -f /usr/lib/x86_64-linux-gnu/libxcb-icccm.so.4 ] || missing="$$missing libxcb-icccm4 libxcb-image0 libxcb-keysyms1 libxcb-randr0 libxcb-render-util0 libxcb-xinerama0 libxcb-xkb1 libxcb-shape0 libxcb-xfixes0 libxkbcommon-x11-0 libegl1 libgl1 libfontconfig1 libdbus-1-3"; \
	if [ -n "$$missing" ]; then \
	  echo "installing system packages:$$missing"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -q && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q $$missing; \
	fi

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q "$(TORCH)"
	$(BIN)/pip install -q -e ".[test,imagej,dask,training,napari]"
	touch $(STAMP)

install: system-deps $(STAMP)
	@if [ -f plugins/java/build.sh ]; then bash plugins/java/build.sh; fi

test: install
	$(BIN)/ruff check fiji_bridge tests benchmarks training examples
	$(BIN)/mypy
	$(BIN)/python -m pytest -q

demo: install
	$(BIN)/python -m fiji_bridge.demo demo_out

bench: install
	$(BIN)/python benchmarks/bench_rl.py

clean:
	rm -rf $(VENV) demo_out .pytest_cache
