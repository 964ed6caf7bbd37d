#!/usr/bin/env bash
# `make demo`: ccplant on a laptop, no cluster and no GitHub needed. A local control plane (etcd,
# kube-apiserver, controller-manager, scheduler, KWOK nodes), the fake GitHub seeded with
# ccplant-demo/hello-world, the CRDs, two operator replicas electing a leader on a Lease, and
# every example applied; the objects are watched live until each one reached the phase it should
# end in, then a summary.
#
#   demo.sh up    [DIR]   start it and leave it running (`make demo`; DEMO_CHECK=1 means check)
#   demo.sh check [DIR]   the same, then stop everything; exit 1 when an example missed its phase
#                         (`make demo-check`, run by `make test`)
#   demo.sh down  [DIR]   stop the replicas, the fake GitHub and the control plane (`make demo-down`)
#
# DIR (default target/testenv) holds the control plane's state and every log.
# DEMO_TIMEOUT (seconds, default 90) bounds the wait for the expected phases.
set -euo pipefail
cmd="${1:-up}"
dir="${2:-target/testenv}"
if [[ "${DEMO_CHECK:-0}" == 1 && "$cmd" == up ]]; then cmd=check; fi
cd "$(dirname "$0")/../../.."
NS=ccplant-demo
LEASE=ccplant-operator
TIMEOUT="${DEMO_TIMEOUT:-90}"
pids_file="$dir/demo.pids"
down_hint="make demo-down"
[[ "$dir" == target/testenv ]] || down_hint="bash crates/testenv/scripts/demo.sh down $dir"

# Where every object of examples/ must end up here. An object in examples/ without a line here
# fails the check: a new example needs its expectation. "tools" is what kstatus (Flux, kpt,
# kubectl wait) and Argo CD (examples/argocd/argocd-cm-health.yaml) make of the end state, each
# computed by its own code (ccplant-statuscheck).
#   example file                          object                                phase[/Ready reason]    tools                status fields
EXPECTED="
agentsession-bare.yaml                 agentsession/hello-agent              Running                 Current/Healthy      agent.state=Idle,agent.deliveredMessages=1
agentsession-github-app.yaml           agentsession/hello-world-readme       Pending/SecretNotFound  InProgress/Progressing
agentsession-suspended-workspace.yaml  agentsession/long-refactor            Suspended               Current/Suspended
chain-issue-session-pr-merge.yaml      githubtask/healthz-issue              Succeeded               Current/Healthy      result.issueNumber
chain-issue-session-pr-merge.yaml      agentsession/healthz                  Succeeded               Current/Healthy
chain-issue-session-pr-merge.yaml      githubtask/healthz-pr                 Succeeded               Current/Healthy      result.headBranch=ccplant/healthz
chain-issue-session-pr-merge.yaml      githubtask/healthz-merge              Succeeded               Current/Healthy      result.merged=true
githubtask-approve-and-merge.yaml      githubtask/merge-pr-42                Failed/NotFound         Failed/Degraded
githubtask-comment.yaml                githubtask/comment-on-issue-7         Failed/NotFound         Failed/Degraded
githubtask-create-issue.yaml           githubtask/add-health-endpoint-issue  Succeeded               Current/Healthy      result.commentID
githubtask-create-pull-request.yaml    githubtask/open-latest-branch-pr      Succeeded               Current/Healthy      result.headBranch=feature/farewell
"

bold() { if [[ -t 1 ]]; then printf '\033[1m%s\033[0m\n' "$*"; else printf '%s\n' "$*"; fi; }
step() { printf '\n'; bold "==> $*"; }
die() { echo "demo: $*" >&2; exit 1; }

# A pid from demo.pids that is still one of our processes (not a recycled pid).
is_ours() { [[ -r /proc/$1/cmdline ]] && tr '\0' ' ' <"/proc/$1/cmdline" | grep -q ccplant-; }
our_pids() {
  [[ -f "$pids_file" ]] || return 0
  local name p
  while read -r name p; do if is_ours "${p:-$name}"; then echo "${p:-$name}"; fi; done <"$pids_file"
}

testenv() {
  if [[ -x target/debug/ccplant-testenv ]]; then ./target/debug/ccplant-testenv "$@"
  else cargo run --quiet --locked -p ccplant-testenv -- "$@"; fi
}

down() {
  local pids
  pids="$(our_pids)"
  if [[ -n "$pids" ]]; then
    # SIGTERM: the leader drains and releases the Lease; then the fake GitHub stops.
    # shellcheck disable=SC2086
    kill -TERM $pids 2>/dev/null || true
    for _ in $(seq 100); do
      [[ -z "$(our_pids)" ]] && break
      sleep 0.1
    done
    pids="$(our_pids)"
    # shellcheck disable=SC2086
    if [[ -n "$pids" ]]; then kill -KILL $pids 2>/dev/null || true; fi
  fi
  rm -f "$pids_file"
  testenv down --dir "$dir"
}

if [[ "$cmd" == down ]]; then down; exit 0; fi
[[ "$cmd" == up || "$cmd" == check ]] || die "usage: demo.sh up|check|down [DIR]"

if [[ -n "$(our_pids)" ]]; then
  die "a demo is already running (KUBECONFIG=$(realpath -m "$dir/kubeconfig")); stop it first: $down_hint"
fi
if [[ -f "$pids_file" ]]; then
  echo "demo: the previous demo in $dir is no longer running; cleaning it up"
  down
fi

start_time=$SECONDS
# On a failure half-way, stop what was started; in check mode always stop at the end.
cleanup() {
  local rc=$?
  if [[ "$cmd" == check || $rc -ne 0 ]]; then
    # `down` removes DIR: keep the logs next to it.
    rm -rf "$dir.logs"
    if [[ -d "$dir/logs" ]]; then cp -r "$dir/logs" "$dir.logs"; fi
    if [[ "$cmd" == check ]]; then step "Stopping everything (check mode; logs kept in $dir.logs/)"
    else echo "demo: failed; stopping what was started (logs kept in $dir.logs/)" >&2; fi
    down || rc=1
  fi
  exit "$rc"
}
trap cleanup EXIT

bin="$(bash crates/testenv/scripts/build-binaries.sh)"
export PATH="$bin:$PATH"

step "Building ccplant"
cargo build --quiet --locked -p ccplant-operator -p ccplant-testenv

step "Starting the local control plane (etcd, kube-apiserver, controller-manager, scheduler, KWOK; pod IPs on loopback)"
eval "$(./target/debug/ccplant-testenv up --dir "$dir" --loopback-pods)"
kubectl get nodes
mkdir -p "$dir/logs"
: >"$pids_file"
if kubectl get namespace "$NS" >/dev/null 2>&1; then
  echo "namespace $NS is left from an earlier run on this control plane; deleting it"
  kubectl delete namespace "$NS" --wait=true --timeout=60s >/dev/null
fi

# Starts a process in its own session (Ctrl-C on the terminal does not reach it) and records it.
spawn() {
  local name="$1" log="$2"
  shift 2
  NO_COLOR=1 setsid "$@" </dev/null >"$log" 2>&1 &
  echo "$name $!" >>"$pids_file"
}
# Waits until LOG has a line matching the sed expression EXPR (which prints the capture).
wait_log() {
  local log="$1" expr="$2" name="$3" pid="$4" value=""
  for _ in $(seq 300); do
    value="$(sed 's/\x1b\[[0-9;]*m//g' "$log" | sed -n "$expr" | head -1)"
    [[ -n "$value" ]] && break
    if ! kill -0 "$pid" 2>/dev/null; then
      tail -n 20 "$log" >&2
      die "$name exited (log: $log)"
    fi
    sleep 0.1
  done
  [[ -n "$value" ]] || { tail -n 20 "$log" >&2; die "$name did not start within 30 s (log: $log)"; }
  echo "$value"
}

step "Starting the fake GitHub (repository ccplant-demo/hello-world with three branches)"
spawn fake-github "$dir/logs/fake-github.log" ./target/debug/ccplant-fake-github --addr 127.0.0.1:0 \
  --seed demo --token ghp_demo_operator:ccplant-bot --token ghp_demo_reviewer:reviewer
github_url="$(wait_log "$dir/logs/fake-github.log" 's/.*listening on \(http[^ ]*\).*/\1/p' "the fake GitHub" "$(awk 'END{print $2}' "$pids_file")")"
echo "fake GitHub at $github_url"

step "Installing the CRDs (client-side apply, as on a real cluster)"
kubectl apply -f crds/
kubectl wait --for=condition=Established --timeout=60s crd/agentsessions.ccplant.io crd/githubtasks.ccplant.io >/dev/null

step "Namespace $NS with the Secrets the examples reference (all but 'github-app')"
kubectl create namespace "$NS" --dry-run=client -o yaml | kubectl apply -f - >/dev/null
kubectl -n "$NS" create secret generic github-token --from-literal=token=ghp_demo_operator
kubectl -n "$NS" create secret generic github-reviewer-token --from-literal=token=ghp_demo_reviewer
kubectl -n "$NS" create secret generic anthropic-api-key --from-literal=ANTHROPIC_API_KEY=sk-ant-demo-placeholder

step "Starting the agents: a fake agentapi at each session pod's IP (KWOK runs no containers)"
spawn fake-agents "$dir/logs/fake-agents.log" ./target/debug/ccplant-testenv agents \
  --kubeconfig "$KUBECONFIG" --namespace "$NS" --work 2
wait_log "$dir/logs/fake-agents.log" 's/.*\(fake agents serve\).*/\1/p' "the fake agents" "$(awk 'END{print $2}' "$pids_file")" >/dev/null

step "Starting two operator replicas; they elect a leader on the Lease $NS/$LEASE"
replicas=(a b)
declare -A metrics_url
for r in "${replicas[@]}"; do
  spawn "operator-$r" "$dir/logs/operator-$r.log" ./target/debug/ccplant-operator run \
    --namespaces "$NS" --operator-namespace "$NS" --github-api-url "$github_url" \
    --leader-elect=true --lease-namespace "$NS" --lease-name "$LEASE" --identity "demo-operator-$r" \
    --metrics-addr 127.0.0.1:0 --log-format text
done
for r in "${replicas[@]}"; do
  pid="$(awk -v n="operator-$r" '$1 == n {print $2}' "$pids_file")"
  addr="$(wait_log "$dir/logs/operator-$r.log" 's/.*serving \/metrics.*addr=\([0-9.:]*\).*/\1/p' "replica demo-operator-$r" "$pid")"
  metrics_url[$r]="http://$addr/metrics"
  echo "demo-operator-$r: pid $pid, ${metrics_url[$r]}, log $dir/logs/operator-$r.log"
done

http_get() { curl -fsS --max-time 2 "$1" 2>/dev/null; }
lease_holder() { kubectl -n "$NS" get lease "$LEASE" -o jsonpath='{.spec.holderIdentity}' 2>/dev/null || true; }
# "demo-operator-a=1 demo-operator-b=0": each replica's ccplant_leader gauge ("?" if unreadable).
leader_gauges() {
  local r v out=()
  for r in "${replicas[@]}"; do
    v="$(http_get "${metrics_url[$r]}" | awk '$1 == "ccplant_leader" {print $2}' | head -1)"
    out+=("demo-operator-$r=${v:-?}")
  done
  echo "${out[*]}"
}
leader=""
for _ in $(seq 300); do
  leader="$(lease_holder)"
  [[ -n "$leader" ]] && break
  sleep 0.1
done
[[ -n "$leader" ]] || die "no replica acquired the Lease $NS/$LEASE within 30 s (logs: $dir/logs/operator-*.log)"
echo "leader: $leader (Lease $NS/$LEASE); ccplant_leader: $(leader_gauges)"

step "Applying every example"
applied="$(kubectl apply -n "$NS" -f examples/ -o name | sed 's/\.ccplant\.io//' | sort)"
expected_objects="$(awk 'NF {print $2}' <<<"$EXPECTED" | sort)"
missing="$(comm -23 <(echo "$applied") <(echo "$expected_objects"))"
[[ -z "$missing" ]] || die "examples/ created objects without an expected phase in demo.sh: $missing"
sed 's/^/  /' <<<"$applied"

# `kubectl get ccplant`: both kinds in one table, with the phase and the Ready condition's reason.
snapshot() {
  kubectl get ccplant -n "$NS" -o custom-columns='KIND:.kind,NAME:.metadata.name,PHASE:.status.phase,REASON:.status.conditions[?(@.type=="Ready")].reason,AGENT:.status.agent.state,DELIVERED:.status.agent.deliveredMessages,MESSAGE:.status.message' 2>/dev/null || true
}
# "object phase reason" lines ("-" for unset) from a snapshot.
state_of() {
  awk 'NR > 1 { print tolower($1) "/" $2, ($3 == "<none>" ? "-" : $3), ($4 == "<none>" ? "-" : $4) }' <<<"$1"
}
# The observed "phase" or "phase/reason" of OBJECT, shaped like its expectation WANT.
actual_of() {
  local object="$1" want="$2" state="$3"
  awk -v o="$object" -v r="$([[ "$want" == */* ]] && echo 1)" '$1 == o { print (r ? $2 "/" $3 : $2); found = 1 } END { if (!found) print "absent" }' <<<"$state"
}
# The objects whose phase (and reason) are as expected, and whose status fields too (an agent's
# state may settle after the phase).
reached_objects() {
  local state="$1" file object want tools fields
  while read -r file object want tools fields; do
    [[ -n "$file" && "$(actual_of "$object" "$want" "$state")" == "$want" ]] || continue
    if [[ -z "${fields:-}" ]] || check_fields "$object" "$fields" >/dev/null; then echo "$object"; fi
  done <<<"$EXPECTED"
}
# Prints "path=actual" for each of FIELDS ("path=value": must equal; "path": must be set) of
# OBJECT's .status, comma-separated; fails when one differs.
check_fields() {
  local object="$1" fields="$2" f path got out=() rc=0
  for f in ${fields//,/ }; do
    path="${f%%=*}"
    got="$(kubectl get -n "$NS" "$object" -o jsonpath="{.status.$path}" </dev/null 2>/dev/null || true)"
    out+=("$path=${got:-<unset>}")
    if [[ "$f" == *=* ]]; then [[ "$got" == "${f#*=}" ]] || rc=1
    else [[ -n "$got" ]] || rc=1; fi
  done
  (IFS=,; echo "${out[*]}")
  return "$rc"
}
total="$(awk 'NF' <<<"$EXPECTED" | wc -l)"

tty=0
[[ -t 1 ]] && tty=1
stop_watching=0
trap 'stop_watching=1' INT
step "Watching kubectl get ccplant -n $NS (until every object reached its expected phase, at most ${TIMEOUT}s)"
[[ $tty == 1 ]] && echo "(Ctrl-C stops watching; the demo keeps running)"
notes=""
agent_done=0
last_state=""
frame_lines=0
watch_start=$SECONDS
while :; do
  table="$(snapshot)"
  state="$(state_of "$table")"
  # KWOK runs no process, so no agent ever finishes by itself: once the 'healthz' session runs,
  # an annotation makes its pod exit 0, as an agent that pushed its work branch would.
  if ((agent_done == 0)) && grep -q '^agentsession/healthz Running' <<<"$state"; then
    if kubectl -n "$NS" annotate pod healthz ccplant.io/test-exit-code=0 --overwrite >/dev/null 2>&1; then
      agent_done=1
      notes+="[+$((SECONDS - watch_start))s] the agent of session 'healthz' finished (its pod exits 0; KWOK runs no process)"$'\n'
    fi
  fi
  reached_list="$(reached_objects "$state")"
  reached="$(grep -c . <<<"$reached_list" || true)"
  elapsed=$((SECONDS - watch_start))
  if [[ $tty == 1 || "$state" != "$last_state" ]]; then
    # ✓ marks an object that is where it should end up.
    marked="$(awk -v done="$reached_list" 'BEGIN { n = split(done, d, "\n"); for (i = 1; i <= n; i++) ok[d[i]] = 1 }
      NR == 1 { print "  " $0; next } { print (ok[tolower($1) "/" $2] ? "✓ " : "  ") $0 }' <<<"$table")"
    frame="$(printf '[+%ss] leader: %s   %s/%s objects at their expected phase\n%s\n%s' \
      "$elapsed" "$(lease_holder)" "$reached" "$total" "$marked" "${notes%$'\n'}")"
    if [[ $tty == 1 ]]; then
      cols="$(tput cols 2>/dev/null || echo 200)"
      ((frame_lines > 0)) && printf '\033[%dA\033[J' "$frame_lines"
      frame="$(cut -c "1-$cols" <<<"$frame")"
      printf '%s\n' "$frame"
      frame_lines="$(wc -l <<<"$frame")"
    else
      printf '\n%s\n' "$frame"
    fi
    last_state="$state"
  fi
  ((reached == total || elapsed >= TIMEOUT || stop_watching == 1)) && break
  sleep 1 || true
done
trap - INT
watch_secs=$((SECONDS - watch_start))

step "Summary"
state="$(state_of "$(snapshot)")"
# "object kstatus/argocd" lines: what kstatus and Argo CD's health checks say of each object.
objects_json="$(kubectl get agentsessions,githubtasks -n "$NS" -o json)"
tools_state="$(LC_ALL=C join \
  <(ccplant-statuscheck kstatus <<<"$objects_json" | awk '{print tolower($1), $2}' | LC_ALL=C sort) \
  <(ccplant-statuscheck argocd-health examples/argocd/argocd-cm-health.yaml <<<"$objects_json" |
    awk '{print tolower($1), $2}' | LC_ALL=C sort) |
  awk '{print $1, $2 "/" $3}')"
passed=0
rows=("EXAMPLE	OBJECT	EXPECTED	ACTUAL	")
while read -r file object want tools fields; do
  [[ -n "$file" ]] || continue
  actual="$(actual_of "$object" "$want" "$state")"
  ok=1
  [[ "$actual" == "$want" ]] || ok=0
  got_tools="$(awk -v o="$object" '$1 == o {print $2}' <<<"$tools_state")"
  [[ "$got_tools" == "$tools" ]] || ok=0
  want+=" $tools"
  actual+=" ${got_tools:-none}"
  if [[ -n "${fields:-}" ]]; then
    got="$(check_fields "$object" "$fields")" || ok=0
    want+=" $fields"
    actual+=" $got"
  fi
  if ((ok)); then mark="✓"; passed=$((passed + 1)); else mark="✗"; fi
  short="${object/agentsession\//ags/}"
  rows+=("$file	${short/githubtask\//ght/}	$want	$actual	$mark")
done <<<"$EXPECTED"
# Leader election: the Lease holder is the one replica whose ccplant_leader is 1; the standby has
# reconciled nothing.
leader="$(lease_holder)"
leaders=()
gauges=""
counts=""
idle_standby=1
all_metrics=""
for r in "${replicas[@]}"; do
  m="$(http_get "${metrics_url[$r]}" || true)"
  all_metrics+="$m"$'\n'
  g="$(awk '$1 == "ccplant_leader" {print $2}' <<<"$m" | head -1)"
  n="$(awk '$1 ~ /^ccplant_reconcile_total/ {n += $2} END {print n + 0}' <<<"$m")"
  gauges+=" $r=${g:-?}"
  counts+=" $r=$n"
  if [[ "$g" == 1 ]]; then leaders+=("demo-operator-$r"); elif [[ "$n" != 0 ]]; then idle_standby=0; fi
done
total=$((total + 1))
if [[ ${#leaders[@]} == 1 && "${leaders[0]}" == "$leader" && $idle_standby == 1 ]]; then
  mark="✓"
  passed=$((passed + 1))
else
  mark="✗"
fi
rows+=("(2 replicas)	lease/$LEASE	the holder alone leads and reconciles	holder ${leader:-none}; ccplant_leader$gauges; reconciles$counts	$mark")
# Exactly once: the successful GitHub writes of both replicas (ccplant_github_requests_total with a
# 2xx status), by the endpoint's last path segment. Two issues (one trigger comment), two pull
# requests, one review and one merge; the 404s of the failing tasks are not writes.
want_writes="comments=1 issues=2 merge=1 pulls=2 reviews=1"
writes="$(awk -F'"' '$1 == "ccplant_github_requests_total{endpoint=" && $2 ~ /^(POST|PUT|PATCH|DELETE) / && $4 ~ /^2/ {
    n = split($2, p, "/"); k = split($5, v, " "); w[p[n]] += v[k] }
  END { for (e in w) print e "=" w[e] }' <<<"$all_metrics" | sort | tr '\n' ' ')"
writes="${writes% }"
total=$((total + 1))
if [[ "$writes" == "$want_writes" ]]; then
  mark="✓"
  passed=$((passed + 1))
else
  mark="✗"
fi
rows+=("(fake GitHub)	writes	$want_writes	${writes:-none}	$mark")
echo "Phases, then what kstatus (Flux, kpt, kubectl wait) and Argo CD (examples/argocd/) say of each object:"
printf '%s\n' "${rows[@]}" | column -t -s $'\t'
failed=$((total - passed))
echo
echo "$passed of $total checks passed after ${watch_secs}s of watching ($((SECONDS - start_time))s in all)."
echo "Metrics: $(for r in "${replicas[@]}"; do printf '%s (demo-operator-%s)  ' "${metrics_url[$r]}" "$r"; done)"
echo
if ((failed == 0)); then
  cat <<TXT
What happened: the leader did all the work, the standby only watched the Lease. GitHub got each
write once (2 issues, 1 trigger comment, 2 pull requests, 1 review, 1 merge). The chain issue ->
session -> pull request (from the session's work branch ccplant/healthz) -> approve + squash
merge ran in order; open-latest-branch-pr picked the branch with the newest commit
(feature/farewell). Tasks pointing at things the seed lacks (pull request #42, issue #7) failed
with GitHub's 404 and are not retried; the session using a GitHub App waits for its 'github-app'
Secret (SecretNotFound); long-refactor was created suspended (its PVC and Service exist, no pod).
TXT
else
  echo "$failed check(s) failed (✗ above); logs: $([[ "$cmd" == check ]] && echo "$dir.logs/" || echo "$dir/logs/")"
fi

if [[ "$cmd" == check ]]; then
  # Summed by `make test` with the cargo test results.
  if ((failed == 0)); then verdict=ok; else verdict=FAILED; fi
  echo
  echo "test result: $verdict. $passed passed; $failed failed; 0 ignored; 0 measured; 0 filtered out; finished in ${watch_secs}s (make demo-check)"
  ((failed == 0)) || exit 1
  exit 0
fi

hints=(
  "export KUBECONFIG=$(realpath "$dir/kubeconfig") PATH=$bin:\$PATH"
  "kubectl get ccplant -n $NS"
  "kubectl describe githubtask -n $NS healthz-merge"
  "kubectl get lease -n $NS $LEASE        # spec.holderIdentity: the leader"
  "kubectl get events -n $NS"
)
for r in "${replicas[@]}"; do
  hints+=("curl -s ${metrics_url[$r]} | grep '^ccplant_'   # demo-operator-$r")
done
leader_pid="$(awk -v n="operator-${leader#demo-operator-}" '$1 == n {print $2}' "$pids_file")"
if [[ -n "$leader" && -n "$leader_pid" ]]; then
  hints+=("kill $leader_pid   # SIGTERM the leader ($leader): it releases the Lease, the standby takes over")
fi
hints+=(
  "less $dir/logs/operator-a.log   # also operator-b.log, fake-github.log and the control plane's logs"
  "make demo-down   # stops both replicas, the fake GitHub and the control plane"
)
echo
echo "Explore:"
printf '  %s\n' "${hints[@]}"
