#!/usr/bin/env bash
# Proves that the Helm chart's RBAC is sufficient for the operator (DESIGN §5, layer 4).
#
# On a control plane of its own (target/testenv-chart-e2e) it installs the CRDs and the chart
# with its defaults (cluster-wide, release "ccplant" in ccplant-system), then runs the
# AgentSession and GitHubTask controller tests with the operator authenticated as the chart's
# ServiceAccount (a bound token, never a client certificate). Afterwards it fails if the
# apiserver's audit log shows any write by that ServiceAccount refused with 403, and it runs one
# operator with leader election on to prove the chart's Lease Role. The control plane is always
# torn down. Exits non-zero when anything fails.
#
#   bash crates/testenv/scripts/chart-e2e.sh
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)"
cd "$root"

RELEASE=ccplant
NAMESPACE=ccplant-system
SERVICE_ACCOUNT=ccplant # the chart's fullname for release "ccplant"
LEASE=ccplant-operator  # the chart's lease name for release "ccplant"
dir="$root/target/testenv-chart-e2e"
SA_USER="system:serviceaccount:${NAMESPACE}:${SERVICE_ACCOUNT}"

log() { echo "chart-e2e: $*" >&2; }

# Audit lines on stdin → "count verb resource[/subresource] [namespace]" per distinct request.
summarize_audit() {
  sed -E 's/.*"verb":"([^"]*)".*"objectRef":\{([^}]*)\}.*/\1 \2/' |
    sed -E 's/^([a-z]+) .*"resource":"([^"]*)".*"subresource":"([^"]*)".*/\1 \2\/\3/; t
             s/^([a-z]+) .*"resource":"([^"]*)".*/\1 \2/' |
    sort | uniq -c
}

bin="$(bash crates/testenv/scripts/build-binaries.sh)"
kubectl="$bin/kubectl"
helm="$bin/helm"

log "building the operator, the test environment and the controller tests"
cargo build --locked --quiet -p ccplant-testenv --bin ccplant-testenv
cargo build --locked --quiet -p ccplant-operator --bin ccplant-operator
cargo test --locked --quiet -p ccplant-operator --test agent_session --test github_task --no-run
testenv="$root/target/debug/ccplant-testenv"
operator="$root/target/debug/ccplant-operator"

work="$(mktemp -d)"
leader_pid=""
cleanup() {
  local rc=$?
  if [[ -n "$leader_pid" ]]; then kill "$leader_pid" 2>/dev/null || true; fi
  "$testenv" down --dir "$dir" || true
  rm -rf "$work"
  exit "$rc"
}
trap cleanup EXIT

# A control plane left over from an interrupted run is stopped first.
"$testenv" down --dir "$dir" >/dev/null 2>&1 || true
up="$("$testenv" up --dir "$dir")"
admin_kubeconfig="$(sed -n 's/^export KUBECONFIG=//p' <<<"$up")"
[[ -f "$admin_kubeconfig" ]] || { log "ccplant-testenv up printed no kubeconfig: $up"; exit 1; }
export KUBECONFIG="$admin_kubeconfig"
audit_log="$dir/logs/audit.log"

log "installing the CRDs and the chart (defaults: cluster-wide, ${RELEASE} in ${NAMESPACE}; admission policies off)"
"$kubectl" apply -f crds/ >&2
"$kubectl" wait --for=condition=Established --timeout=60s \
  crd/agentsessions.ccplant.io crd/githubtasks.ccplant.io >&2
# Without the chart's admission policies: the controller tests create, on purpose, objects those
# policies refuse (e.g. a GitHubTask naming a credential that does not select its namespace, to
# prove the operator's own NotAllowed check); crates/operator/tests/admission.rs tests them.
"$helm" install "$RELEASE" charts/ccplant -n "$NAMESPACE" --create-namespace --wait=false \
  --set admission.enabled=false >/dev/null
"$kubectl" get serviceaccount "$SERVICE_ACCOUNT" -n "$NAMESPACE" -o name >&2

# A kubeconfig for the ServiceAccount: same server and CA as the admin one, a bound token read
# from a file (so it appears in no command line, environment or log), no client certificate.
server="$("$kubectl" config view --minify -o jsonpath='{.clusters[0].cluster.server}')"
ca_data="$("$kubectl" config view --minify --raw --flatten -o jsonpath='{.clusters[0].cluster.certificate-authority-data}')"
sa_kubeconfig="$work/operator.kubeconfig"
(
  umask 077
  "$kubectl" create token "$SERVICE_ACCOUNT" -n "$NAMESPACE" --duration=2h >"$work/token"
  cat >"$sa_kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: ccplant-testenv
  cluster:
    server: ${server}
    certificate-authority-data: ${ca_data}
users:
- name: ${SERVICE_ACCOUNT}
  user:
    tokenFile: ${work}/token
contexts:
- name: ${SERVICE_ACCOUNT}
  context:
    cluster: ccplant-testenv
    user: ${SERVICE_ACCOUNT}
    namespace: ${NAMESPACE}
current-context: ${SERVICE_ACCOUNT}
EOF
)
whoami="$("$kubectl" --kubeconfig "$sa_kubeconfig" auth whoami -o jsonpath='{.status.userInfo.username}')"
[[ "$whoami" == "$SA_USER" ]] || { log "the token authenticates as '$whoami', not $SA_USER"; exit 1; }
log "the operator runs as $whoami"

# A canary write the chart does not allow: the audit-log check below must see it, which proves
# that check can fail.
if "$kubectl" --kubeconfig "$sa_kubeconfig" create configmap chart-e2e-canary -n "$NAMESPACE" >/dev/null 2>"$work/canary.err"; then
  log "the ServiceAccount may create ConfigMaps: the chart grants more than it should"
  exit 1
fi
grep -qi forbidden "$work/canary.err" || { log "canary: $(cat "$work/canary.err")"; exit 1; }

log "running the controller tests with the operator as the chart's ServiceAccount"
test_log="$work/cargo-test.log"
rc=0
CCPLANT_TEST_KUBECONFIG="$admin_kubeconfig" CCPLANT_TEST_OPERATOR_KUBECONFIG="$sa_kubeconfig" \
  cargo test --locked --no-fail-fast -p ccplant-operator --test agent_session --test github_task 2>&1 |
  tee "$test_log" || rc=$?

# Leader election with the chart's Lease Role: acquire (create), then release (update) on
# SIGTERM, watching the Lease by name.
log "leader election as $SA_USER on lease ${NAMESPACE}/${LEASE}"
POD_NAME=chart-e2e-leader POD_NAMESPACE="$NAMESPACE" KUBECONFIG="$sa_kubeconfig" \
  "$operator" run --leader-elect=true --lease-name="$LEASE" --namespaces="$NAMESPACE" \
  --github-api-url=http://127.0.0.1:9 --metrics-addr=127.0.0.1:0 --log-format=text >"$work/leader.log" 2>&1 &
leader_pid=$!
holder=""
for _ in $(seq 1 120); do
  holder="$("$kubectl" get lease "$LEASE" -n "$NAMESPACE" -o jsonpath='{.spec.holderIdentity}' 2>/dev/null || true)"
  [[ "$holder" == chart-e2e-leader ]] && break
  kill -0 "$leader_pid" 2>/dev/null || break
  sleep 0.5
done
kill -TERM "$leader_pid" 2>/dev/null || true
# A graceful stop takes well under a second; never hang the test run on it.
for _ in $(seq 1 60); do kill -0 "$leader_pid" 2>/dev/null || break; sleep 0.5; done
if kill -0 "$leader_pid" 2>/dev/null; then
  log "the operator did not exit within 30 s of SIGTERM"
  kill -KILL "$leader_pid" 2>/dev/null || true
fi
leader_rc=0
wait "$leader_pid" || leader_rc=$?
leader_pid=""
released="$("$kubectl" get lease "$LEASE" -n "$NAMESPACE" -o jsonpath='{.spec.holderIdentity}' 2>/dev/null || true)"
if [[ "$holder" != chart-e2e-leader || "$leader_rc" -ne 0 || -n "$released" ]]; then
  log "leader election failed: holder '$holder', exit $leader_rc, holder after SIGTERM '$released'; operator log:"
  tail -n 30 "$work/leader.log" >&2
  rc=1
else
  log "leader election: acquired and released the lease"
fi

# Writes refused by RBAC show in the audit log even when a test did not notice (e.g. an Event).
# Only the authorizer's refusals count: admission plugins answer 403 too (a test makes the
# Priority plugin refuse a pod on purpose).
denied="$(grep -F "\"username\":\"${SA_USER}\"" "$audit_log" |
  grep -F '"authorization.k8s.io/decision":"forbid"' || true)"
if ! grep -qF '"resource":"configmaps"' <<<"$denied"; then
  log "the audit log does not show the canary's refused write: the RBAC check below cannot work"
  rc=1
fi
forbidden="$(grep -vF '"resource":"configmaps"' <<<"$denied" || true)"
if [[ -n "$forbidden" ]]; then
  log "writes by $SA_USER refused by RBAC (count, verb, resource):"
  summarize_audit <<<"$forbidden" >&2
  rc=1
fi
log "writes by $SA_USER (count, verb, resource):"
grep -F "\"username\":\"${SA_USER}\"" "$audit_log" | grep -vF '"resource":"configmaps"' |
  summarize_audit >&2 || true
writes="$(grep -cF "\"username\":\"${SA_USER}\"" "$audit_log" || true)"
log "audit log: ${writes} writes by $SA_USER, $(grep -c . <<<"$forbidden" || true) refused by RBAC besides the canary"
if [[ "$writes" -eq 0 ]]; then
  log "no write was made with the ServiceAccount's token: the tests did not use it"
  rc=1
fi

echo "chart-e2e: cargo test summary:"
grep -E '^test result:' "$test_log" || echo "(no test result lines)"
awk '/^test result:/ { p += $4; f += $6 } END { printf "chart-e2e: %d passed, %d failed\n", p, f }' "$test_log"
if [[ "$rc" -ne 0 ]]; then
  # Reads refused by RBAC are not in the audit log; the operator logs them.
  for kept in $(sed -n 's/^operator log kept at //p' "$test_log"); do
    if grep -qi forbidden "$kept" 2>/dev/null; then
      echo "chart-e2e: RBAC refusals in $kept:"
      grep -io 'cannot [a-z]* resource "[^"]*" in API group "[^"]*"' "$kept" | sort | uniq -c
    fi
  done
  echo "chart-e2e: FAILED"
fi
exit "$rc"
