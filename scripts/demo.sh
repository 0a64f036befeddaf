#!/usr/bin/env bash
# `make demo`: the whole loop on loopback, in one command.
#
#   agents (beacon) -> sentinel -> Prometheus (alerts/sentinel.rules.yml)
#     -> Alertmanager (deploy/alertmanager/alertmanager.local.yml) -> sentinel's bridge
#     -> signed webhooks -> a sink that verifies and prints them; the kill switch -> beacon
#
# Sentinel runs with deploy/sentinel.example.yml (demo keys, published: it
# listens on 127.0.0.1 only). Everything lives in a temporary directory that
# is removed at the end; Ctrl-C tears everything down.
#
# Environment:
#   BIN             where sentinel, beacon and sentinel-webhook-sink are (default bin/, `make build`)
#   DEMO_DURATION   stop by itself after this long (e.g. 90s); default: run until Ctrl-C
#   SENTINEL_PORT, PROMETHEUS_PORT, ALERTMANAGER_PORT, SINK_PORT
#                   loopback ports (default 9464, 9090, 9093, 9999)
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
bin=$(cd "${BIN:-$root/bin}" 2>/dev/null && pwd) || { echo "[demo] error: ${BIN:-$root/bin} not found: run \`make build\`" >&2; exit 1; }
sentinel_port=${SENTINEL_PORT:-9464}
prom_port=${PROMETHEUS_PORT:-9090}
am_port=${ALERTMANAGER_PORT:-9093}
sink_port=${SINK_PORT:-9999}
duration=${DEMO_DURATION:-}
duration=${duration%s}

# The published demo keys of deploy/sentinel.example.yml.
api_key=demo-tenant-api-key-CHANGE-ME
admin_token=demo-tenant-admin-token-CHANGE-ME
webhook_secret=whsec_ZGVtby13ZWJob29rLXNlY3JldC1DSEFOR0UtTUU=

say() { printf '[demo] %s %s\n' "$(date +%H:%M:%S)" "$*"; }
die() { printf '[demo] error: %s\n' "$*" >&2; exit 1; }

tool() {
  for name in "$@"; do
    if command -v "$name" >/dev/null 2>&1; then command -v "$name"; return; fi
  done
  die "$1 not found on PATH: run \`make test-deps\` (scripts/install-test-deps.sh)"
}
prometheus=$(tool prometheus)
alertmanager=$(tool prometheus-alertmanager alertmanager)
for b in sentinel beacon sentinel-webhook-sink; do
  [ -x "$bin/$b" ] || die "$bin/$b not found: run \`make build\` (or set BIN)"
done
if [ -n "$duration" ] && ! [[ "$duration" =~ ^[0-9]+$ ]]; then
  die "DEMO_DURATION=$DEMO_DURATION: give seconds, like 90s"
fi
for port in "$sentinel_port" "$prom_port" "$am_port" "$sink_port"; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    die "127.0.0.1:$port is in use: stop what listens there, or set SENTINEL_PORT, PROMETHEUS_PORT, ALERTMANAGER_PORT, SINK_PORT"
  fi
done

dir=$(mktemp -d "${TMPDIR:-/tmp}/sentinel-demo.XXXXXX")
pids=()         # the stack's process groups
agent_pids=()   # the beacons' process groups
tailer=""

# stop_groups PGID...: SIGCONT (a frozen one would never act on SIGTERM) and
# SIGTERM to each process group, SIGKILL to what is left after 10 s.
stop_groups() {
  local g alive=1 tries=0
  for g in "$@"; do
    kill -CONT -- "-$g" 2>/dev/null || true
    kill -TERM -- "-$g" 2>/dev/null || true
  done
  # No return in here: bash leaves the whole EXIT trap at a return when
  # that trap runs because a signal trap called exit.
  while [ $alive = 1 ] && [ $tries -lt 50 ]; do
    alive=0
    for g in "$@"; do kill -0 -- "-$g" 2>/dev/null && alive=1 || true; done
    if [ $alive = 1 ]; then sleep 0.2; fi
    tries=$((tries + 1))
  done
  for g in "$@"; do kill -KILL -- "-$g" 2>/dev/null || true; done
}

# cleanup stops every process group the demo started (each runs in a session
# of its own, so a frozen or orphaned one is reached too): the agents first,
# so that their beacons still tell sentinel goodbye, then the stack. It
# removes dir last.
cleanup() {
  local code=$? f
  trap '' INT TERM # a second Ctrl-C must not leave processes behind
  trap - EXIT
  say "stopping everything"
  [ -n "$tailer" ] && kill "$tailer" 2>/dev/null || true
  local agents=("${agent_pids[@]}")
  for f in "$dir"/*.child.pid; do
    [ -f "$f" ] && agents+=("$(cat "$f")")
  done
  [ ${#agents[@]} -gt 0 ] && stop_groups "${agents[@]}"
  [ ${#pids[@]} -gt 0 ] && stop_groups "${pids[@]}"
  wait 2>/dev/null || true
  rm -rf "$dir"
  say "removed $dir"
  exit "$code"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# start NAME CMD...: runs CMD in a session of its own, output in dir/NAME.log.
start() {
  local name=$1; shift
  setsid "$@" >"$dir/$name.log" 2>&1 </dev/null &
  case $name in
  agent-*) agent_pids+=($!) ;;
  *) pids+=($!) ;;
  esac
  eval "pid_${name//-/_}=$!"
}

wait_ready() {
  local name=$1 url=$2 pid=$3
  for _ in $(seq 150); do
    curl -fsS -o /dev/null "$url" 2>/dev/null && return
    kill -0 "$pid" 2>/dev/null || { tail -n 30 "$dir/$name.log" >&2; die "$name exited at start"; }
    sleep 0.2
  done
  tail -n 30 "$dir/$name.log" >&2
  die "$name is not ready at $url after 30s"
}

# --- configuration

sed -e "s#http://127.0.0.1:9999/#http://127.0.0.1:$sink_port/#" \
  "$root/deploy/sentinel.example.yml" >"$dir/sentinel.yml"
sed -e "s#127.0.0.1:9464#127.0.0.1:$sentinel_port#" -e "s#127.0.0.1:9999#127.0.0.1:$sink_port#" \
  "$root/deploy/alertmanager/alertmanager.local.yml" >"$dir/alertmanager.yml"
# The scrape credential of the example configuration (metrics.bearer_token).
metrics_token=$(awk '/^metrics:/ {m = 1; next} /^[^ #]/ {m = 0} m && $1 == "bearer_token:" {print $2}' "$dir/sentinel.yml")
# Every second: agents beat every second, and each scrape or evaluation adds
# up to its interval to the detection latency.
cat >"$dir/prometheus.yml" <<EOF
global:
  scrape_interval: 1s
  evaluation_interval: 1s
rule_files: ['$root/alerts/sentinel.rules.yml']
alerting:
  alertmanagers:
    - static_configs: [{targets: ['127.0.0.1:$am_port']}]
scrape_configs:
  - job_name: sentinel
    static_configs: [{targets: ['127.0.0.1:$sentinel_port']}]
    authorization: {credentials: '$metrics_token'}
EOF

# --- the stack

SENTINEL_WEBHOOK_SECRET=$webhook_secret start sink "$bin/sentinel-webhook-sink" \
  --web.listen-address="127.0.0.1:$sink_port"
start sentinel "$bin/sentinel" --config.file="$dir/sentinel.yml" \
  --storage.path="$dir/sentinel-data" --web.listen-address="127.0.0.1:$sentinel_port"
start alertmanager "$alertmanager" --config.file="$dir/alertmanager.yml" \
  --storage.path="$dir/alertmanager-data" --web.listen-address="127.0.0.1:$am_port" \
  --cluster.listen-address=
start prometheus "$prometheus" --config.file="$dir/prometheus.yml" \
  --storage.tsdb.path="$dir/prometheus-data" --web.listen-address="127.0.0.1:$prom_port" \
  --rules.alert.resend-delay=1s
wait_ready sink "http://127.0.0.1:$sink_port/-/healthy" "$pid_sink"
wait_ready sentinel "http://127.0.0.1:$sentinel_port/-/ready" "$pid_sentinel"
wait_ready alertmanager "http://127.0.0.1:$am_port/-/ready" "$pid_alertmanager"
wait_ready prometheus "http://127.0.0.1:$prom_port/-/ready" "$pid_prometheus"

s="http://127.0.0.1:$sentinel_port"
cat <<EOF

  Sentinel demo: every program runs on 127.0.0.1, files in $dir.

  Prometheus alerts   http://127.0.0.1:$prom_port/alerts
  Alertmanager        http://127.0.0.1:$am_port/#/alerts
  Installations       curl -H 'Authorization: Bearer $admin_token' $s/api/v1/installations
  Deliveries          curl -H 'Authorization: Bearer $admin_token' $s/api/v1/deliveries
  Logs                $dir/*.log

  Five agents run under beacon, beating every second:
    steady   keeps working: no event, ever
    hangs    hangs and stops beating: SILENT after 5 missed beats, ZOMBIE after 15,
             revoked by the kill switch (AgentZombie); when it wakes up, its next
             heartbeat is answered "revoked" and beacon kills it (exit 3)
    naps     stops beating, then comes back: SILENT, then ACTIVE with the outage
    crashes  exits with code 1: beacon reports it, STOPPED, no liveness alert
    killed   killed with SIGKILL, beacon and all: SILENT, ZOMBIE, revoked

  Each signed webhook the customer endpoint receives is verified (both
  signatures) and printed below as it arrives; "alertmanager" lines are what a
  human would get from Alertmanager. Ctrl-C stops everything.

EOF

# --- the agents

touch "$dir/sink.log"
tail -n +1 -f "$dir/sink.log" | grep --line-buffered -v 'level=' &
tailer=$!

# agent NAME CHILD-SCRIPT: beacon runs CHILD-SCRIPT through /bin/sh -c; the
# child writes its pid (its process group) to dir/NAME.child.pid.
agent() {
  local name=$1 script=$2
  SENTINEL_URL=$s SENTINEL_TOKEN=$api_key start "agent-$name" "$bin/beacon" run \
    --id "$name" --heartbeat-interval 1s --shutdown-timeout 2s \
    --cmd "echo \$\$ > '$dir/$name.child.pid'; $script"
}
work='n=0; while :; do n=$((n+1)); printf "{\"requests_handled\":%d}" $n > "$BEACON_METRICS_FILE.tmp" && mv "$BEACON_METRICS_FILE.tmp" "$BEACON_METRICS_FILE"; sleep 1; done'
agent steady "$work"
agent hangs "$work"
agent naps "$work"
agent crashes 'sleep 8; echo "agent crashed" >&2; exit 1'
agent killed "$work"
started=$(date +%s)
say "agents started: steady, hangs, naps, crashes, killed"

# wait_event PATTERN SECONDS: waits for a line of the sink's output.
wait_event() {
  for _ in $(seq $(($2 * 5))); do
    grep -q -E "$1" "$dir/sink.log" && return 0
    sleep 0.2
  done
  say "no event matching '$1' after $2s (see $dir/sentinel.log)"
  return 1
}

sleep 8
kill -STOP "$pid_agent_hangs"
say "hangs: frozen (SIGSTOP to its beacon): its heartbeats stop"
kill -STOP "$pid_agent_naps"
say "naps: frozen (SIGSTOP to its beacon) until it turns SILENT"
# beacon first: were the agent first, beacon could see it die and report it
# STOPPED before its own SIGKILL landed (seen on a loaded machine).
kill -KILL -- "-$pid_agent_killed" "-$(cat "$dir/killed.child.pid")" 2>/dev/null || true
wait "$pid_agent_killed" 2>/dev/null || true
say "killed: SIGKILL to beacon and agent: no goodbye"

if wait_event 'state_change +tenant=demo agent=naps ACTIVE -> SILENT' 60; then
  kill -CONT "$pid_agent_naps"
  say "naps: woken up (SIGCONT): its next heartbeat ends the outage"
fi
if wait_event 'agent\.revoked +tenant=demo agent=hangs ' 90; then
  kill -CONT "$pid_agent_hangs"
  say "hangs: woken up (SIGCONT) after its revocation"
  code=0
  wait "$pid_agent_hangs" || code=$?
  say "hangs: beacon exited with code $code$([ "$code" = 3 ] && echo ' (revoked: it stopped the agent)')"
fi
# killed's AgentZombie fires with hangs': its revocation is on its way too.
wait_event 'agent\.revoked +tenant=demo agent=killed ' 30 || true
if wait "$pid_agent_crashes"; then code=0; else code=$?; fi
say "crashes: beacon exited with the agent's code $code"

if [ -n "$duration" ]; then
  left=$((started + duration - $(date +%s)))
  if [ "$left" -gt 0 ]; then sleep "$left"; fi
  say "DEMO_DURATION ($DEMO_DURATION) is over"
  exit 0
fi
say "the story is told; the stack keeps running until Ctrl-C"
sleep infinity &
wait $! || true
