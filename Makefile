# ccplant — entry points. `make test` is what CI runs (.ci/run).
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
CARGO ?= cargo
TESTENV_DIR ?= target/testenv
DEMO_CHECK_DIR ?= target/demo-check
TESTENV = $(CARGO) run --quiet --locked -p ccplant-testenv --

.PHONY: help test lint crds run testenv-bins testenv-up testenv-down demo demo-check demo-down bench drills prerequisites

help:
	@echo "make test          all tests (builds the local control plane on first use)"
	@echo "make lint          cargo fmt --check and clippy -D warnings"
	@echo "make crds          regenerate crds/ and charts/ccplant/crds/"
	@echo "make run           the operator against the current KUBECONFIG (ARGS='--namespaces x')"
	@echo "make testenv-up    start the local control plane, print 'export KUBECONFIG=…'"
	@echo "make testenv-down  stop it"
	@echo "make demo          local control plane, fake GitHub, two operator replicas, every example, live"
	@echo "make demo-check    make demo, asserting every example's end phase, then stop it (part of make test)"
	@echo "make demo-down     stop make demo"
	@echo "make bench         benchmarks on a local control plane, JSON in target/bench/ (BENCH_SESSIONS=N)"
	@echo "make drills        failure drills (hand-over, apiserver restart, crash injection), target/bench/drills.json"

prerequisites:
	@command -v go >/dev/null || { echo "Go >= 1.25 is required to build the control plane (https://go.dev/dl)"; exit 1; }
	@command -v $(CARGO) >/dev/null || { echo "Rust (cargo) is required (https://rustup.rs)"; exit 1; }

# Builds etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kubectl, kwok and helm
# from Go modules into ~/.cache/ccplant-testenv/<versions>/ (once; later runs take a second).
testenv-bins: prerequisites
	@bash crates/testenv/scripts/build-binaries.sh >/dev/null

# Every step runs even when an earlier one failed: the workspace tests, the end-to-end tests with
# the Helm chart's ServiceAccount token, and `make demo` in check mode. Everything is also in
# target/test-output.log; the last line sums every `test result:` line ("N passed, N failed";
# chart-e2e.sh's closing summary repeats its lines and is skipped), where a step that failed
# without reporting a failed test counts as one failure.
test: testenv-bins
	@mkdir -p target; rc=0; log=target/test-output.log; : >$$log; \
	step() { \
	  local before s; before=$$(wc -l <$$log); \
	  "$$@" 2>&1 | tee -a $$log && s=0 || s=$$?; \
	  if [ $$s -ne 0 ]; then \
	    rc=1; \
	    tail -n +$$((before + 1)) $$log | grep -q '^test result: FAILED' || \
	      echo "test result: FAILED. 0 passed; 1 failed; ('$$*' exited with status $$s)" | tee -a $$log; \
	  fi; \
	}; \
	step $(CARGO) build --locked --workspace --all-targets; \
	step $(CARGO) test --locked --workspace --all-targets --no-fail-fast; \
	step bash crates/testenv/scripts/chart-e2e.sh; \
	step $(MAKE) --no-print-directory demo-check; \
	awk '/^chart-e2e: cargo test summary:/ { repeat = 1; next } /^chart-e2e: [0-9]+ passed/ { repeat = 0; next } \
	  !repeat && /^test result:/ { p += $$4; f += $$6 } END { printf "%d passed, %d failed\n", p, f }' $$log; \
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

# Local control plane + fake GitHub + two operator replicas + every example, watched live
# (crates/testenv/scripts/demo.sh). DEMO_CHECK=1 make demo checks and stops like make demo-check.
demo: testenv-bins
	@bash crates/testenv/scripts/demo.sh up "$(TESTENV_DIR)"

# make demo, then stop everything; fails when an example misses its expected phase. Runs in its own
# directory, so a running `make demo` is left alone.
demo-check: testenv-bins
	@bash crates/testenv/scripts/demo.sh check "$(DEMO_CHECK_DIR)"

demo-down:
	@bash crates/testenv/scripts/demo.sh down "$(TESTENV_DIR)"

# Benchmarks (release build: the figures describe the shipped binary): a burst of
# BENCH_SESSIONS (default 1000) AgentSessions against the same client creating bare pods, a steady
# 50/s, idle writes, and GitHubTask throughput and pacing against the fake GitHub.
bench: testenv-bins
	$(CARGO) run --release --locked -p ccplant-bench -- sessions
	$(CARGO) run --release --locked -p ccplant-bench -- github

# Failure drills (release build, like make bench): leader hand-over (SIGTERM and SIGKILL, 10
# trials each), a kube-apiserver restart in the middle of a burst, and 100 SIGKILLs of the
# operator while it works on GitHubTasks and AgentSessions; fails on a duplicate GitHub effect
# or pod, or anything that does not converge.
drills: testenv-bins
	$(CARGO) run --release --locked -p ccplant-bench -- drills
