#!/usr/bin/env bash
# `make demo`: ccplant on a laptop, no cluster and no GitHub needed. A local control plane (etcd,
# kube-apiserver, controller-manager, scheduler, KWOK nodes), the fake GitHub seeded with
# ccplant-demo/hello-world, the CRDs, the operator, and every example applied.
# `make demo-down` stops all of it.
set -euo pipefail
dir="${1:-target/testenv}"
cd "$(dirname "$0")/../../.."
bin="$(bash crates/testenv/scripts/build-binaries.sh)"
export PATH="$bin:$PATH"
NS=ccplant-demo

step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }

step "Building ccplant"
cargo build --quiet --locked -p ccplant-operator -p ccplant-testenv

step "Starting the local control plane (etcd, kube-apiserver, controller-manager, scheduler, KWOK)"
eval "$(./target/debug/ccplant-testenv up --dir "$dir")"
kubectl get nodes

step "Starting the fake GitHub (repository ccplant-demo/hello-world with two feature branches)"
: >"$dir/demo.pids"
./target/debug/ccplant-fake-github --addr 127.0.0.1:0 --seed demo \
  --token ghp_demo_operator:ccplant-bot --token ghp_demo_reviewer:reviewer >"$dir/logs/fake-github.log" 2>&1 &
echo $! >>"$dir/demo.pids"
for _ in $(seq 100); do grep -q "listening on" "$dir/logs/fake-github.log" && break; sleep 0.1; done
github_url="$(sed -n 's/.*listening on \(http[^ ]*\).*/\1/p' "$dir/logs/fake-github.log" | head -1)"
echo "fake GitHub at $github_url"

step "Installing the CRDs (client-side apply, as on a real cluster)"
kubectl apply -f crds/
kubectl wait --for=condition=Established --timeout=60s crd/agentsessions.ccplant.io crd/githubtasks.ccplant.io >/dev/null

step "Namespace $NS with the GitHub token Secrets the examples reference"
kubectl create namespace "$NS" --dry-run=client -o yaml | kubectl apply -f - >/dev/null
kubectl -n "$NS" create secret generic github-token --from-literal=token=ghp_demo_operator --dry-run=client -o yaml | kubectl apply -f -
kubectl -n "$NS" create secret generic github-reviewer-token --from-literal=token=ghp_demo_reviewer --dry-run=client -o yaml | kubectl apply -f -

step "Starting the operator (logs: $dir/logs/operator.log)"
./target/debug/ccplant-operator run --namespaces "$NS" --github-api-url "$github_url" \
  --operator-namespace "$NS" --log-format text >"$dir/logs/operator.log" 2>&1 &
echo $! >>"$dir/demo.pids"

step "Applying every example"
for f in examples/*.yaml; do kubectl apply -n "$NS" -f "$f"; done

show() { sleep "$1"; kubectl get ccplant -n "$NS"; }
step "After a few seconds"
show 5

step "The agent of session 'healthz' finishes (KWOK runs no process: an annotation makes its pod exit 0)"
kubectl -n "$NS" annotate pod healthz ccplant.io/test-exit-code=0 --overwrite >/dev/null
kubectl -n "$NS" wait --for=jsonpath='{.status.phase}'=Succeeded agentsession/healthz --timeout=30s >/dev/null || true
kubectl -n "$NS" wait --for=condition=Ready githubtask/healthz-merge --timeout=30s >/dev/null || true
show 1

cat <<TXT

What happened: tasks made their GitHub calls against the fake exactly once; the chain
issue -> session -> pull request (from the session's work branch) -> approve + merge ran in order.
Tasks pointing at things the seed lacks (issue #7, pull request #42) failed with GitHub's message;
the session using a GitHub App waits for its 'github-app' Secret (SecretNotFound).

Explore:
  export KUBECONFIG=$PWD/$dir/kubeconfig PATH=$bin:\$PATH
  kubectl get ccplant -n $NS
  kubectl describe githubtask -n $NS healthz-merge
  kubectl get events -n $NS
  make demo-down        # stops the operator, the fake GitHub and the control plane
TXT
