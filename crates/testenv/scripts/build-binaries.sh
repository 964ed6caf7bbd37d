#!/usr/bin/env bash
# Builds the local control plane (kube-apiserver, kube-controller-manager, kube-scheduler,
# kubectl, etcd, kwok, helm), agentapi (the agent HTTP API the operator talks to, for the
# conversation tests) and ccplant-statuscheck (kstatus and Argo CD's health checks, computed by
# their own code, from crates/testenv/statuscheck) from Go modules served by the module proxy,
# once per version set, into a cache directory outside the repository. Prints the bin directory
# on stdout.
#
# No Docker, no binary downloads: everything comes from Go modules.
set -euo pipefail

K8S_VERSION="${CCPLANT_K8S_VERSION:-v1.35.4}"
ETCD_VERSION="${CCPLANT_ETCD_VERSION:-v3.6.16}"
KWOK_VERSION="${CCPLANT_KWOK_VERSION:-v0.8.0}"
HELM_VERSION="${CCPLANT_HELM_VERSION:-v3.22.0}"
# The newest agentapi release the module proxy serves here (v0.11 and v0.12 are refused).
AGENTAPI_VERSION="${CCPLANT_AGENTAPI_VERSION:-v0.10.0}"
# kstatus as Flux and kpt use it, and the Lua interpreter Argo CD runs health checks with.
CLI_UTILS_VERSION="${CCPLANT_CLI_UTILS_VERSION:-v0.37.2}"
GOPHER_LUA_VERSION="${CCPLANT_GOPHER_LUA_VERSION:-v1.1.2}"
STATUSCHECK_SRC="$(cd "$(dirname "$0")/../statuscheck" && pwd)/main.go"

CACHE_ROOT="${CCPLANT_TESTENV_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/ccplant-testenv}"
KEY="k8s-${K8S_VERSION}_etcd-${ETCD_VERSION}_kwok-${KWOK_VERSION}_helm-${HELM_VERSION}"
BIN="$CACHE_ROOT/$KEY/bin"
STAMP="$CACHE_ROOT/$KEY/.complete"

log() { echo "testenv-build: $*" >&2; }

# The status checker is rebuilt whenever its source or versions change.
statuscheck_key="$(cat "$STATUSCHECK_SRC" | sha256sum | cut -c1-16)-${CLI_UTILS_VERSION}-${GOPHER_LUA_VERSION}"
statuscheck_current() { [[ -x "$BIN/ccplant-statuscheck" && "$(cat "$BIN/.statuscheck-key" 2>/dev/null)" == "$statuscheck_key" ]]; }

if [[ -f "$STAMP" && -x "$BIN/agentapi" ]] && statuscheck_current; then
  echo "$BIN"
  exit 0
fi

command -v go >/dev/null || { log "Go is required (https://go.dev/doc/install); none found on PATH"; exit 1; }
if ! command -v openssl >/dev/null; then
  log "installing openssl (needed for test certificates)"
  if [[ $(id -u) -eq 0 ]]; then apt-get update -qq >&2 && apt-get install -y -qq openssl >&2
  else sudo apt-get update -qq >&2 && sudo apt-get install -y -qq openssl >&2; fi
fi

mkdir -p "$BIN"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
export CGO_ENABLED=0 GOFLAGS=-buildvcs=false GOTOOLCHAIN=local

minor="${K8S_VERSION#v1.}"; minor="${minor%%.*}"
staging="v0.${K8S_VERSION#v1.}"

build_kubernetes() {
  local mod="$WORK/kubernetes"
  mkdir -p "$mod"
  local upstream
  upstream="$(cd "$mod" && go mod download -json "k8s.io/kubernetes@${K8S_VERSION}" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",$/\1/p')"
  {
    echo "module ccplant.local/kubebins"
    echo
    echo "go 1.25.0"
    echo
    echo "require k8s.io/kubernetes ${K8S_VERSION}"
    echo
    # Every k8s.io/<staging> module upstream points at ./staging must come from the proxy.
    grep -E '^[[:space:]]*k8s\.io/[^ ]+ => \./staging/' "$upstream" |
      awk -v v="$staging" '{print "replace " $1 " => " $1 " " v}'
  } >"$mod/go.mod"
  cat >"$mod/tools.go" <<'GO'
//go:build tools

package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubectl"
)
GO
  (cd "$mod" && go mod tidy -e >&2 2>"$WORK/tidy.log" || { cat "$WORK/tidy.log" >&2; exit 1; })
  local ld="-s -w"
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ld="$ld -X $pkg.gitVersion=${K8S_VERSION} -X $pkg.gitMajor=1 -X $pkg.gitMinor=${minor} -X $pkg.gitTreeState=clean"
  done
  log "building kube-apiserver, kube-controller-manager, kube-scheduler, kubectl ${K8S_VERSION}"
  (cd "$mod" && go build -trimpath -ldflags "$ld" -o "$BIN/" \
    k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager \
    k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kubectl >&2)
}

build_etcd() {
  local mod="$WORK/etcd"
  mkdir -p "$mod"
  cat >"$mod/main.go" <<'GO'
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
GO
  printf 'module ccplant.local/etcd\n\ngo 1.25.0\n\nrequire go.etcd.io/etcd/server/v3 %s\n' "$ETCD_VERSION" >"$mod/go.mod"
  (cd "$mod" && go mod tidy >&2)
  log "building etcd ${ETCD_VERSION}"
  (cd "$mod" && go build -trimpath -ldflags "-s -w" -o "$BIN/etcd" . >&2)
}

build_kwok() {
  log "building kwok ${KWOK_VERSION}"
  GOBIN="$BIN" go install -trimpath -ldflags "-s -w" "sigs.k8s.io/kwok/cmd/kwok@${KWOK_VERSION}" >&2
  # The upstream stage definitions ship inside the module; keep a copy beside the binary.
  local dir
  dir="$(cd "$WORK" && GOFLAGS=-mod=mod go mod download -json "sigs.k8s.io/kwok@${KWOK_VERSION}" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')"
  rm -rf "$CACHE_ROOT/$KEY/kwok-stages"
  mkdir -p "$CACHE_ROOT/$KEY/kwok-stages"
  cp -r "$dir/kustomize/stage/." "$CACHE_ROOT/$KEY/kwok-stages/"
  chmod -R u+w "$CACHE_ROOT/$KEY/kwok-stages"
}

build_helm() {
  log "building helm ${HELM_VERSION}"
  GOBIN="$BIN" go install -trimpath \
    -ldflags "-s -w -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=${minor}" \
    "helm.sh/helm/v3/cmd/helm@${HELM_VERSION}" >&2
}

build_agentapi() {
  local mod="$WORK/agentapi"
  mkdir -p "$mod"
  # `go install …@version` asks the proxy for the version list (refused for this module), so
  # build it from a small main module that requires it.
  printf '//go:build tools\n\npackage tools\n\nimport _ "github.com/coder/agentapi"\n' >"$mod/tools.go"
  printf 'module ccplant.local/agentapi\n\ngo 1.25.0\n\nrequire github.com/coder/agentapi %s\n' "$AGENTAPI_VERSION" >"$mod/go.mod"
  (cd "$mod" && go mod tidy >&2)
  log "building agentapi ${AGENTAPI_VERSION}"
  (cd "$mod" && go build -trimpath -ldflags "-s -w" -o "$BIN/agentapi" github.com/coder/agentapi >&2)
}

build_statuscheck() {
  local mod="$WORK/statuscheck"
  mkdir -p "$mod"
  cp "$STATUSCHECK_SRC" "$mod/main.go"
  printf 'module ccplant.local/statuscheck\n\ngo 1.25.0\n\nrequire (\n\tgithub.com/yuin/gopher-lua %s\n\tsigs.k8s.io/cli-utils %s\n)\n' \
    "$GOPHER_LUA_VERSION" "$CLI_UTILS_VERSION" >"$mod/go.mod"
  (cd "$mod" && go mod tidy >&2)
  log "building ccplant-statuscheck (kstatus ${CLI_UTILS_VERSION}, gopher-lua ${GOPHER_LUA_VERSION})"
  (cd "$mod" && go build -trimpath -ldflags "-s -w" -o "$BIN/ccplant-statuscheck" . >&2)
  echo "$statuscheck_key" >"$BIN/.statuscheck-key"
}

start=$(date +%s)
[[ -x "$BIN/etcd" ]] || build_etcd
[[ -x "$BIN/kwok" && -d "$CACHE_ROOT/$KEY/kwok-stages" ]] || build_kwok
[[ -x "$BIN/helm" ]] || build_helm
[[ -x "$BIN/agentapi" ]] || build_agentapi
statuscheck_current || build_statuscheck
[[ -x "$BIN/kube-apiserver" && -x "$BIN/kubectl" && -x "$BIN/kube-scheduler" && -x "$BIN/kube-controller-manager" ]] || build_kubernetes
touch "$STAMP"
log "done in $(( $(date +%s) - start ))s: $BIN"
echo "$BIN"
