# The two commands of the README: `make run` and `make test`.
# Every target installs what it needs first (scripts/install-deps.sh).

CARGO ?= cargo
export CARGO_TARGET_DIR ?= $(HOME)/.cache/cairn-target
BIN := $(CARGO_TARGET_DIR)/debug

.PHONY: run test deps build check fmt clean-data

deps:
	@./scripts/install-deps.sh

build: deps
	$(CARGO) build --workspace --bins --tests

# A single-member server on 127.0.0.1:2379, data in ./default.etcd (as etcd).
run: build
	$(BIN)/cairn $(ARGS)

# The whole suite: unit and property tests, then the end-to-end tests that
# start real cairn and etcd processes and drive them with the real etcdctl.
test: deps
	$(CARGO) build --workspace --bins --tests
	$(CARGO) test --workspace --no-fail-fast

# Formatting and lints, as the project requires them.
check: deps
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

fmt:
	$(CARGO) fmt --all

clean-data:
	rm -rf default.etcd
