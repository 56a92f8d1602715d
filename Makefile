# The two commands of the README: `make run` and `make test`.
# Every target installs what it needs first (scripts/install-deps.sh).

CARGO ?= cargo
export CARGO_TARGET_DIR ?= $(HOME)/.cache/cairn-target
BIN := $(CARGO_TARGET_DIR)/debug
# The end-to-end tests kill members at named crash points (host/server/src/failpoint.rs).
TEST_FEATURES := --features cairn/failpoints

.PHONY: run test deps build check fmt clean-data bench bench-large plugins plugin-tests

deps:
	@./scripts/install-deps.sh

build: deps
	$(CARGO) build --workspace --bins --tests

# A single-member server on 127.0.0.1:2379, data in ./default.etcd (as etcd).
run: build
	$(BIN)/cairn $(ARGS)

# The whole suite: unit and property tests, then the end-to-end tests that
# start real cairn and etcd processes and drive them with the real etcdctl.
test: deps plugins plugin-tests
	$(CARGO) build --workspace --bins --tests $(TEST_FEATURES)
	$(CARGO) test --workspace --no-fail-fast $(TEST_FEATURES)

# Formatting and lints, as the project requires them. The root workspace runs
# clippy through cargo build (clippy-driver as the workspace wrapper): plain
# `cargo clippy` does not reuse the test build and recompiles RocksDB (20 min).
check: deps
	$(CARGO) fmt --all -- --check
	RUSTC_WORKSPACE_WRAPPER=$$(dirname $$(rustup which cargo))/clippy-driver \
	CLIPPY_ARGS=-D__CLIPPY_HACKERY__warnings__CLIPPY_HACKERY__ \
	$(CARGO) build --workspace --all-targets $(TEST_FEATURES)
	cd guest-sdk && $(CARGO) fmt -- --check && $(CARGO) clippy --all-targets -- -D warnings
	cd plugins && $(CARGO) fmt --all -- --check && $(CARGO) clippy --workspace --all-targets -- -D warnings

fmt:
	$(CARGO) fmt --all
	cd guest-sdk && $(CARGO) fmt
	cd plugins && $(CARGO) fmt --all

clean-data:
	rm -rf default.etcd

# etcd and cairn side by side through cairn-bench (docs/benchmarks.md).
# BENCH_ARGS="--quick" for a short run, "--members 3" for 3-member clusters.
bench: deps
	./scripts/bench-compare.sh $(BENCH_ARGS)

# More data than memory, each member in a memory cgroup (root; writes
# gigabytes, docs/benchmarks.md). BENCH_ARGS="--quick" for 2 GiB under 256 MiB.
bench-large: deps
	./scripts/bench-large.sh $(BENCH_ARGS)

# Every plugin of plugins/ (reference plugins and the host tests' fixtures)
# as a component at $(PLUGIN_DIR)/<name>.wasm (docs/plugins.md). Plugins are
# core modules for wasm32-unknown-unknown, which imports nothing from the
# outside world, turned into components by plugins/componentize.
PLUGIN_DIR := $(CARGO_TARGET_DIR)/plugins
WASM_OUT := $(CARGO_TARGET_DIR)/wasm32-unknown-unknown/release
# Every crate directory of plugins/ but the tool itself.
PLUGINS := $(filter-out componentize,$(patsubst plugins/%/Cargo.toml,%,$(wildcard plugins/*/Cargo.toml)))

plugins: deps
	cd plugins && $(CARGO) build --release --target wasm32-unknown-unknown --workspace --exclude componentize
	cd plugins && $(CARGO) run -q -p componentize -- --wit ../wit --out-dir $(PLUGIN_DIR) \
		$(foreach p,$(PLUGINS),$(WASM_OUT)/$(subst -,_,$(p)).wasm)

# The plugins' decision logic and the SDK's helpers, natively.
plugin-tests: deps
	cd plugins && $(CARGO) test --workspace --no-fail-fast
	cd guest-sdk && $(CARGO) test --no-fail-fast
