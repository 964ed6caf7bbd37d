# ccplant — entry points. `make test` is what CI runs (.ci/run).
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
CARGO ?= cargo
TESTENV_DIR ?= target/testenv
TESTENV = $(CARGO) run --quiet --locked -p ccplant-testenv --

.PHONY: help test lint crds run testenv-bins testenv-up testenv-down demo demo-down prerequisites

help:
	@echo "make test          all tests (builds the local control plane on first use)"
	@echo "make lint          cargo fmt --check and clippy -D warnings"
	@echo "make crds          regenerate crds/ and charts/ccplant/crds/"
	@echo "make run           the operator against the current KUBECONFIG (ARGS='--namespaces x')"
	@echo "make testenv-up    start the local control plane, print 'export KUBECONFIG=…'"
	@echo "make testenv-down  stop it"
	@echo "make demo          local control plane + CRDs + examples (no cluster needed)"

prerequisites:
	@command -v go >/dev/null || { echo "Go >= 1.25 is required to build the control plane (https://go.dev/dl)"; exit 1; }
	@command -v $(CARGO) >/dev/null || { echo "Rust (cargo) is required (https://rustup.rs)"; exit 1; }

# Builds etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kubectl, kwok and helm
# from Go modules into ~/.cache/ccplant-testenv/<versions>/ (once; later runs take a second).
testenv-bins: prerequisites
	@bash crates/testenv/scripts/build-binaries.sh >/dev/null

# The last line sums every test binary's result ("N passed, N failed").
test: testenv-bins
	$(CARGO) build --locked --workspace --all-targets
	@mkdir -p target; rc=0; \
	$(CARGO) test --locked --workspace --all-targets --no-fail-fast 2>&1 | tee target/test-output.log || rc=$$?; \
	awk '/^test result:/ { p += $$4; f += $$6 } END { printf "%d passed, %d failed\n", p, f }' target/test-output.log; \
	exit $$rc

lint: prerequisites
	rustup component add rustfmt clippy >/dev/null 2>&1 || true
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --locked --workspace --all-targets -- -D warnings

crds:
	$(CARGO) run --quiet --locked -p ccplant-operator -- crd --output-dir crds
	cp crds/*.yaml charts/ccplant/crds/

# The operator against the cluster of the current KUBECONFIG; extra flags in ARGS.
run:
	$(CARGO) run --locked -p ccplant-operator -- run $(ARGS)

testenv-up: testenv-bins
	@$(TESTENV) up --dir $(TESTENV_DIR)

testenv-down:
	@$(TESTENV) down --dir $(TESTENV_DIR)

demo: testenv-bins
	@bash crates/testenv/scripts/demo.sh "$(TESTENV_DIR)"

demo-down:
	@if [ -f $(TESTENV_DIR)/demo.pids ]; then kill $$(cat $(TESTENV_DIR)/demo.pids) 2>/dev/null || true; fi
	@$(MAKE) --no-print-directory testenv-down
