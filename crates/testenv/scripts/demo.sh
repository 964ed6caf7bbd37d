#!/usr/bin/env bash
# `make demo`: what ccplant can show today without any cluster — a local control plane with the
# ccplant CRDs installed, every example applied, and admission refusing an invalid object.
# The controllers are not built yet (see README), so objects get no status.
set -euo pipefail
dir="${1:-target/testenv}"
cd "$(dirname "$0")/../../.."
bin="$(bash crates/testenv/scripts/build-binaries.sh)"
export PATH="$bin:$PATH"

step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }

step "Starting the local control plane (etcd, kube-apiserver, controller-manager, scheduler, KWOK)"
eval "$(cargo run --quiet --locked -p ccplant-testenv -- up --dir "$dir")"
kubectl get nodes

step "Installing the CRDs (client-side apply, as on a real cluster)"
kubectl apply -f crds/
kubectl wait --for=condition=Established --timeout=60s crd/agentsessions.ccplant.io crd/githubtasks.ccplant.io

step "Applying every example into namespace ccplant-demo"
kubectl create namespace ccplant-demo --dry-run=client -o yaml | kubectl apply -f - >/dev/null
for f in examples/*.yaml; do kubectl apply -n ccplant-demo -f "$f"; done

step "kubectl get ccplant -n ccplant-demo"
kubectl get ccplant -n ccplant-demo

step "Admission refuses an invalid GitHubTask (two actions at once)"
cat <<'YAML' | kubectl apply -n ccplant-demo -f - || true
apiVersion: ccplant.io/v1alpha1
kind: GitHubTask
metadata:
  name: invalid
spec:
  repository: ccplant-demo/hello-world
  comment: { issue: 1, body: "hi" }
  createIssue: { title: "both" }
YAML

step "Explore"
cat <<TXT
  export KUBECONFIG=$PWD/$dir/kubeconfig PATH=$bin:\$PATH
  kubectl get ccplant -A
  kubectl explain agentsession.spec
  make demo-down        # stops everything the demo started
Not built yet: the controllers (sessions do not get pods, tasks make no GitHub calls). See README.
TXT
