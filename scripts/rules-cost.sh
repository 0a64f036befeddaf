#!/usr/bin/env bash
# Measures what the sentinel-agents rule group costs a real Prometheus at a
# given fleet size: a synthetic sentinel exposition of N agents (99% beating,
# 1% silent), scraped as REPLICAS sentinel replicas every 15s, the rules
# evaluated every 15s; prints the group's and each rule's evaluation time as
# Prometheus reports them, averaged over the run's last minutes.
#
#   scripts/rules-cost.sh [RULE_FILE] [AGENTS] [SECONDS] [REPLICAS]
#
# Compare two rule files by running it once for each, e.g. the current one
# and `git show main:alerts/sentinel.rules.yml > /tmp/old.rules.yml`.
set -euo pipefail

rules=$(realpath "${1:-alerts/sentinel.rules.yml}")
agents=${2:-100000}
seconds=${3:-240}
replicas=${4:-1}
dir=$(mktemp -d)
# Prometheus may take long to stop in the middle of a slow evaluation.
trap 'kill -KILL $(jobs -p) 2>/dev/null; wait 2>/dev/null; rm -rf "$dir"' EXIT

python3 - "$agents" >"$dir/metrics" <<'PY'
import sys, time
n = int(sys.argv[1]); now = int(time.time())
labels = lambda i: f'agent_id="agent-{i:06d}",tenant="tenant-{i % 4}"'
for name in ["last_heartbeat_timestamp_seconds", "heartbeat_interval_seconds",
             "lease_expiry_timestamp_seconds", "zombie_deadline_timestamp_seconds",
             "stopped", "revoked"]:
    print(f"# TYPE sentinel_agent_{name} gauge")
    for i in range(n):
        # 1% silent since an hour ago; the rest beat "just now", far ahead.
        last = now - 3600 if i % 100 == 0 else now + 10**7
        v = {"last_heartbeat_timestamp_seconds": last, "heartbeat_interval_seconds": 60,
             "lease_expiry_timestamp_seconds": last + 300,
             "zombie_deadline_timestamp_seconds": last + 900}.get(name, 0)
        print(f"sentinel_agent_{name}{{{labels(i)}}} {v}")
PY

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
pport=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
(cd "$dir" && exec python3 -m http.server "$port" --bind 127.0.0.1 >/dev/null 2>&1) &
targets="\"127.0.0.1:$port\""
[ "$replicas" -ge 2 ] && targets="$targets, \"localhost:$port\""
cat >"$dir/prometheus.yml" <<YML
global: {scrape_interval: 15s, evaluation_interval: 15s, scrape_timeout: 14s}
rule_files: ["$rules"]
scrape_configs:
  - job_name: sentinel
    metrics_path: /metrics
    static_configs: [{targets: [$targets]}]
  - job_name: prometheus
    static_configs: [{targets: ["127.0.0.1:$pport"]}]
YML
prometheus --config.file="$dir/prometheus.yml" --storage.tsdb.path="$dir/data" \
  --web.listen-address="127.0.0.1:$pport" --log.level=warn >"$dir/prometheus.log" 2>&1 &
sleep "$seconds"
q() { curl -fsS "http://127.0.0.1:$pport/api/v1/query" --data-urlencode "query=$1" |
  python3 -c 'import json,sys; r=json.load(sys.stdin)["data"]["result"]; print("%.3f" % float(r[0]["value"][1]) if r else "n/a")'; }
group='rule_group=~".*;sentinel-agents"'
echo "rules=$rules agents=$agents replicas=$replicas load=$(cut -d' ' -f1-3 /proc/loadavg)"
echo "samples scraped per replica: $(q 'max(scrape_samples_scraped{job="sentinel"})')"
echo "sentinel-agents group evaluation (s), mean of the last 2m: $(q "avg_over_time(prometheus_rule_group_last_duration_seconds{$group}[2m])")"
echo "sentinel-agents group evaluation (s), max of the last 2m:  $(q "max_over_time(prometheus_rule_group_last_duration_seconds{$group}[2m])")"
echo "missed group evaluations over the run: $(q "sum(prometheus_rule_group_iterations_missed_total{$group})")"
echo "Prometheus resident memory (MB): $(q 'process_resident_memory_bytes{job="prometheus"} / 1e6')"
echo "per rule, seconds at the last evaluation:"
curl -fsS "http://127.0.0.1:$pport/api/v1/rules" | python3 -c '
import json, sys
for g in json.load(sys.stdin)["data"]["groups"]:
    if g["name"] == "sentinel-agents":
        print("  %-55s %.3f" % ("(group)", g["evaluationTime"]))
        for r in g["rules"]:
            print("  %-55s %.3f" % (r["name"], r["evaluationTime"]))'
