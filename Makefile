# Quick start: `make demo` runs the main job, `make test` runs every test suite.
# Both set up what they need on a fresh machine: a project-local Python venv holding
# PyPI's torch 2.13.0, whose libtorch the `tch` feature builds against (tch 0.26).

SHELL := /bin/bash
TORCH_VERSION := 2.13.0
VENV := $(CURDIR)/.venv
TORCH_STAMP := $(VENV)/.torch-$(TORCH_VERSION)
PYTHON ?= python3

# torch-sys finds libtorch through this Python; build.rs adds an rpath to it.
export LIBTORCH_USE_PYTORCH := 1
export PATH := $(VENV)/bin:$(PATH)
# libgomp's spin-waiting makes libtorch crawl when threads outnumber free cores (parallel
# tests, a busy machine): passive waiting costs nothing when the machine is idle.
export OMP_WAIT_POLICY ?= PASSIVE
# One-shot builds (CI, a first `make test`) gain nothing from incremental caches, which
# take gigabytes next to the libtorch bindings.
export CARGO_INCREMENTAL ?= 0

CARGO ?= cargo

.PHONY: test lint test-core test-tch downstream package-size demo bench doc fixtures clean-venv libtorch

libtorch: $(TORCH_STAMP)

$(TORCH_STAMP):
	@command -v $(CARGO) >/dev/null || { echo "cargo not found: install Rust from rustup.rs"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check --no-cache-dir torch==$(TORCH_VERSION)
	# Triton only serves torch.compile in Python; libtorch never loads it (700 MB).
	$(VENV)/bin/pip uninstall --quiet --yes triton
	touch $@

## Every test suite: the lints, the pure-Rust core without libtorch, then everything with
## it, a downstream crate built on the package, and the published package's size.
test: lint test-core test-tch downstream package-size

## Formatting, clippy and the docs of both feature sets, warnings denied.
lint: $(TORCH_STAMP)
	$(CARGO) fmt --check
	$(CARGO) clippy --no-default-features --lib -- -D warnings
	$(CARGO) clippy --no-default-features --features cli --all-targets -- -D warnings
	$(CARGO) clippy --all-targets -- -D warnings
	RUSTDOCFLAGS="-D warnings" $(CARGO) doc --no-default-features --no-deps --quiet
	RUSTDOCFLAGS="-D warnings" $(CARGO) doc --no-deps --quiet

## The pure-Rust core (and the command-line tool built without libtorch).
test-core:
	$(CARGO) test --no-default-features --features cli

test-tch: $(TORCH_STAMP)
	$(CARGO) test

## A new crate depending on this one (path dependency, the newest ndarray/rand beside it)
## compiles every README example and runs the first without LD_LIBRARY_PATH.
downstream: $(TORCH_STAMP)
	bash tools/downstream.sh

## crates.io refuses packages over 10 MB; the embedded default model and the test
## fixtures must fit.
package-size:
	$(CARGO) package --no-verify --allow-dirty --quiet
	@size=$$(stat -c %s target/package/boomerang-diffusion-$$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1).crate); \
	echo "package: $$size bytes (crates.io limit 10485760)"; \
	test $$size -lt 10485760
	rm -rf target/package

## The main job: Boomerang with the embedded default model, written to out/demo.png.
demo: $(TORCH_STAMP)
	$(CARGO) run --release --example demo

bench: $(TORCH_STAMP)
	$(CARGO) bench

## The docs of both feature sets (the tch models included).
doc: $(TORCH_STAMP)
	$(CARGO) doc --no-default-features --no-deps
	$(CARGO) doc --no-deps

## Regenerate the committed reference fixtures (dev only: needs numpy, diffusers).
fixtures: $(TORCH_STAMP)
	$(VENV)/bin/pip install --quiet numpy diffusers transformers safetensors
	$(VENV)/bin/python tools/make_checkpoint_fixtures.py
	$(VENV)/bin/python tools/make_fastdpm_fixtures.py
	$(VENV)/bin/python tools/make_ddpm_fixtures.py
	$(VENV)/bin/python tools/make_sd_fixtures.py
	$(VENV)/bin/python tools/make_img2img_fixture.py
	@echo "tools/make_lpips_fixtures.py needs lpips, torchvision and scikit-image: see its header"

clean-venv:
	rm -rf $(VENV)
